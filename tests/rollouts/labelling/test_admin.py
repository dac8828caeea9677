"""Staff manage schemes in the admin: the version must name a page, the creator is recorded, the list links to the
scheme's pages; drafts are visible but not editable; stored rollouts and labels are read-only, label codes are shown
as words; every change to a scheme, a gold item or an adjudication keeps its history (who, when, before and after)."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.urls import reverse
from django.utils import timezone

from rollouts.labelling import step_codes
from rollouts.labelling.rules import RATING_NEUTRAL, RATING_RIGHT, RATING_WRONG
from rollouts.models import (
    Adjudication,
    GoldItem,
    LabelDraft,
    LabellingScheme,
    ProcessRewardLabel,
    RolloutCheckout,
)
from tests.factories import make_forest, make_label, make_rollout
from tests.rollouts.labelling.conftest import make_labeller, make_scheme

pytestmark = pytest.mark.django_db


def add(client, prm_version: str):
    return client.post(
        reverse("admin:rollouts_labellingscheme_add"),
        {
            "prm_version": prm_version,
            "title": "People",
            "instructions": "",
            "labels_per_rollout": 2,
            "reference_prm_version": "",
            "is_open": "on",
            "scope_models": "",
            "scope_outcome": "",
            "gold_rate": "0",
        },
    )


def test_staff_create_a_scheme_whose_version_names_its_pages(staff_client, staff_user):
    response = add(staff_client, "human-v2")
    assert response.status_code == 302
    scheme = LabellingScheme.objects.get(prm_version="human-v2")
    assert (scheme.labels_per_rollout, scheme.created_by) == (2, staff_user)
    listing = staff_client.get(reverse("admin:rollouts_labellingscheme_changelist")).content.decode()
    assert reverse("labelling:stats", kwargs={"prm_version": "human-v2"}) in listing


@pytest.mark.parametrize("name", ["human/v2", "human v2", "login", "-x"])
def test_a_version_that_cannot_name_a_page_is_refused(staff_client, name):
    response = add(staff_client, name)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not LabellingScheme.objects.exists()


def test_drafts_are_listed_for_staff_but_not_editable(staff_client):
    make_scheme()
    LabelDraft.objects.create(user=make_labeller("ann"), prm_version="human-v1", rollout=make_rollout(), ratings=[1])
    draft = LabelDraft.objects.get()
    assert staff_client.get(reverse("admin:rollouts_labeldraft_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:rollouts_labeldraft_add")).status_code == 403
    change = staff_client.post(reverse("admin:rollouts_labeldraft_change", args=[draft.pk]), {"ratings": "[-1]"})
    assert change.status_code == 403
    assert LabelDraft.objects.get().ratings == [1]


# --- Stored rollouts and labels are read-only; label codes are shown in words ------------------------------------


def test_rollouts_are_read_only_in_the_admin(staff_client):
    rollout = make_rollout(reasoning=["Step one", "Step two"], prediction=1, ground_truth=1)
    change_url = reverse("admin:rollouts_rollout_change", args=[rollout.pk])
    page = staff_client.get(change_url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # a view page: nothing to submit
    posted = staff_client.post(
        change_url,
        {
            "model": "m",
            "example": "x",
            "reasoning": '["edited"]',
            "prediction": "0",
            "ground_truth": "0",
            "worker": "w",
        },
    )
    assert posted.status_code == 403
    assert staff_client.get(reverse("admin:rollouts_rollout_add")).status_code == 403
    rollout.refresh_from_db()
    assert (rollout.reasoning, rollout.prediction, rollout.ground_truth) == (["Step one", "Step two"], 1, 1)


def test_labels_are_read_only_in_the_admin_and_deleting_one_still_works(staff_client):
    rollout = make_rollout(reasoning=["a", "b"])
    label = make_label(rollout, prm_version="human-v1", prm_output=[1, 0], attributes={"rated_steps": 2})
    change_url = reverse("admin:rollouts_processrewardlabel_change", args=[label.pk])
    assert staff_client.get(change_url).status_code == 200
    posted = staff_client.post(
        change_url, {"rollout": rollout.pk, "prm_version": "human-v1", "prm_output": "[0, 0]", "worker": "w"}
    )
    assert posted.status_code == 403
    assert staff_client.get(reverse("admin:rollouts_processrewardlabel_add")).status_code == 403
    # No inline on the rollout's page edits it either.
    rollout_page = staff_client.get(reverse("admin:rollouts_rollout_change", args=[rollout.pk])).content.decode()
    assert 'name="labels-0-prm_output"' not in rollout_page
    label.refresh_from_db()
    assert label.prm_output == [1, 0]
    deleted = staff_client.post(
        reverse("admin:rollouts_processrewardlabel_changelist"),
        {"action": "delete_selected", helpers.ACTION_CHECKBOX_NAME: [label.pk], "post": "yes"},
    )
    assert deleted.status_code == 302
    assert not ProcessRewardLabel.objects.exists()


def test_leases_are_read_only_and_deleting_one_releases_its_rollout(staff_client):
    rollout = make_rollout()
    expires = timezone.now() + timedelta(minutes=5)
    lease = RolloutCheckout.objects.create(
        rollout=rollout, prm_version="human-v1", claimed_by="ann", expires_at=expires
    )
    change_url = reverse("admin:rollouts_rolloutcheckout_change", args=[lease.pk])
    posted = staff_client.post(
        change_url, {"rollout": rollout.pk, "prm_version": "human-v1", "slot": "0", "claimed_by": "bob"}
    )
    assert posted.status_code == 403
    assert staff_client.get(reverse("admin:rollouts_rolloutcheckout_add")).status_code == 403
    assert RolloutCheckout.objects.get().claimed_by == "ann"
    deleted = staff_client.post(reverse("admin:rollouts_rolloutcheckout_delete", args=[lease.pk]), {"post": "yes"})
    assert deleted.status_code == 302
    assert not RolloutCheckout.objects.exists()


def test_label_codes_are_shown_as_words(staff_client):
    rollout = make_rollout(reasoning=["a", "b", "c", "d"])
    person = make_label(
        rollout, prm_version="human-v1", worker="ann", prm_output=[1, 0, 2, 2], attributes={"rated_steps": 3}
    )
    make_label(rollout, prm_version="judge-v1", worker="judge", prm_output=[1, 2, 0, 1])
    make_label(rollout, prm_version="prm-v1", worker="prm", prm_output=[0.25, 0.5, 1.0, 0.75])
    listing = staff_client.get(reverse("admin:rollouts_processrewardlabel_changelist")).content.decode()
    right, wrong, neutral = (step_codes.RATING_WORDS[r] for r in (RATING_RIGHT, RATING_WRONG, RATING_NEUTRAL))
    assert ", ".join([right, wrong, neutral, step_codes.UNRATED]) in listing
    assert ", ".join([right, step_codes.NEUTRAL_OR_UNRATED, wrong, right]) in listing
    assert ", ".join(step_codes.REWARD.format(value=v) for v in (0.25, 0.5, 1.0, 0.75)) in listing
    detail = staff_client.get(reverse("admin:rollouts_processrewardlabel_change", args=[person.pk])).content.decode()
    assert f"<li>{wrong}</li>" in detail and f"<li>{step_codes.UNRATED}</li>" in detail


def test_step_words_and_the_check_of_typed_codes():
    assert step_codes.step_words([1, 0, 2], 2) == ["right (+1)", "wrong (-1)", "unrated"]
    assert step_codes.step_words([True, 1]) == ["True", "reward 1"]
    assert step_codes.step_words("x") == [step_codes.NOT_A_LIST]
    assert step_codes.step_words_summary([1] * 10, limit=2) == "right (+1), right (+1), … (10 steps)"
    assert step_codes.step_codes_problem([1, 0], 2, 2) is None
    assert step_codes.step_codes_problem([1, 2], 1, 2, ["", "why"]) is None
    assert step_codes.step_codes_problem([1], 1, 2) == step_codes.CODES_LENGTH.format(codes=1, steps=2)
    assert step_codes.step_codes_problem([1, 3], 2, 2) == step_codes.CODE_INVALID.format(step=2, value=3)
    assert step_codes.step_codes_problem([1, 1], 3, 2) == step_codes.RATED_STEPS_RANGE.format(steps=2)
    assert step_codes.step_codes_problem([1, 1], 1, 2) == step_codes.UNRATED_NOT_NEUTRAL.format(step=2)
    assert step_codes.step_codes_problem([1, 1], 2, 2, ["a"]) == step_codes.NOTES_INVALID.format(steps=2)


# --- Schemes, gold items and adjudications keep their history --------------------------------------------------


def scheme_change(client, scheme, **changes):
    data = {
        "title": scheme.title,
        "instructions": scheme.instructions,
        "labels_per_rollout": scheme.labels_per_rollout,
        "reference_prm_version": scheme.reference_prm_version,
        "is_open": "on",
        "scope_models": "",
        "scope_outcome": "",
        "gold_rate": "0",
    }
    data.update(changes)
    return client.post(reverse("admin:rollouts_labellingscheme_change", args=[scheme.pk]), data)


def latest_change(history):
    record = history.order_by("-history_date", "-history_id").first()
    return record, record.diff_against(record.prev_record)


def test_a_scheme_change_keeps_who_when_before_and_after(staff_client, staff_user):
    scheme = make_scheme()
    forest = make_forest("scope-forest")
    response = scheme_change(
        staff_client,
        scheme,
        title="Human step labels, round 2",
        gold_rate="0.1",
        scope_models="qwen-7b\n\nqwen-7b\nllama-8b\n",
        scope_outcome="wrong",
        forests=[forest.pk],
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    scheme.refresh_from_db()
    assert scheme.scope_models == ["qwen-7b", "llama-8b"]
    assert list(scheme.forests.all()) == [forest]
    # One save is one history row for the fields and, when the forests change, one more for them.
    records = list(scheme.history.order_by("history_date", "history_id"))
    assert [r.history_type for r in records] == ["+", "~", "~"]
    assert {r.history_user for r in records[1:]} == {staff_user}
    changes = {
        change.field: (change.old, change.new)
        for record in records[1:]
        for change in record.diff_against(record.prev_record).changes
    }
    assert changes["title"] == ("Human step labels", "Human step labels, round 2")
    assert changes["gold_rate"] == (0.0, 0.1)
    assert changes["scope_outcome"] == ("", "wrong")
    assert changes["scope_models"] == ([], ["qwen-7b", "llama-8b"])
    assert changes["forests"] == ([], [{"labellingscheme": scheme.pk, "forest": forest.pk}])
    history_page = staff_client.get(reverse("admin:rollouts_labellingscheme_history", args=[scheme.pk]))
    text = history_page.content.decode()
    assert "Human step labels, round 2" in text and staff_user.username in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("gold_rate", "0.9"), ("gold_rate", "nan"), ("scope_models", "x" * 301), ("scope_outcome", "?")],
)
def test_a_scheme_change_that_cannot_be_stored_is_refused(staff_client, field, value):
    scheme = make_scheme()
    response = scheme_change(staff_client, scheme, title="changed", **{field: value})
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert LabellingScheme.objects.get().title == scheme.title
    assert scheme.history.count() == 1  # its creation only


def test_the_history_cannot_revert_a_scheme(staff_client):
    scheme = make_scheme()
    scheme_change(staff_client, scheme, title="changed")
    first = scheme.history.order_by("history_date").first()
    url = reverse("admin:rollouts_labellingscheme_simple_history", args=[scheme.pk, first.history_id])
    assert staff_client.get(url).status_code == 200
    assert staff_client.post(url, {"title": "reverted"}).status_code == 403
    assert LabellingScheme.objects.get().title == "changed"


# The page's (read-only) list of who answered the gold item: its management form, as a browser posts it.
GOLD_ANSWERS_SHOWN = {"answers-TOTAL_FORMS": "0", "answers-INITIAL_FORMS": "0"}


def test_gold_items_keep_their_history_and_their_codes_are_checked(staff_client, staff_user):
    scheme = make_scheme()
    rollout = make_rollout(reasoning=["a", "b", "c"])
    add_url = reverse("admin:rollouts_golditem_add")
    fields = {"scheme": scheme.pk, "rollout": rollout.pk, "source": "staff"}
    refused = staff_client.post(add_url, {**fields, "prm_output": "[1, 0]", "rated_steps": "2"})
    assert refused.status_code == 200
    assert html.escape(step_codes.CODES_LENGTH.format(codes=2, steps=3)) in refused.content.decode()
    assert not GoldItem.objects.exists()
    added = staff_client.post(add_url, {**fields, "prm_output": "[1, 0, 2]", "rated_steps": "2"})
    assert added.status_code == 302
    gold = GoldItem.objects.get()
    assert gold.created_by == staff_user
    changed = staff_client.post(
        reverse("admin:rollouts_golditem_change", args=[gold.pk]),
        {"prm_output": "[1, 1, 0]", "rated_steps": "3", "source": "staff", **GOLD_ANSWERS_SHOWN},
    )
    assert changed.status_code == 302
    record, delta = latest_change(gold.history)
    assert record.history_user == staff_user
    changes = {change.field: (change.old, change.new) for change in delta.changes}
    assert changes["prm_output"] == ([1, 0, 2], [1, 1, 0])
    assert changes["rated_steps"] == (2, 3)
    page = staff_client.get(reverse("admin:rollouts_golditem_history", args=[gold.pk])).content.decode()
    assert "rated_steps" in page or "rated steps" in page.lower()


def test_adjudications_keep_their_history(staff_client, staff_user, django_user_model):
    scheme = make_scheme()
    rollout = make_rollout(reasoning=["a", "b"])
    lead = django_user_model.objects.create_user("lead", is_staff=True)
    adjudication = Adjudication.objects.create(
        scheme=scheme,
        rollout=rollout,
        prm_output=[1, 0],
        rated_steps=2,
        reason="step 2 is wrong",
        decided_by=lead,
        decided_at=timezone.now(),
    )
    url = reverse("admin:rollouts_adjudication_change", args=[adjudication.pk])
    refused = staff_client.post(url, {"prm_output": "[1, 0]", "rated_steps": "2", "explanations": "", "reason": ""})
    assert refused.status_code == 200
    changed = staff_client.post(
        url, {"prm_output": "[1, 1]", "rated_steps": "2", "explanations": '["", "fine"]', "reason": "step 2 is right"}
    )
    assert changed.status_code == 302
    adjudication.refresh_from_db()
    assert adjudication.decided_by == staff_user
    assert adjudication.history.count() == 2
    record, delta = latest_change(adjudication.history)
    assert record.history_user == staff_user
    changes = {change.field: (change.old, change.new) for change in delta.changes}
    assert changes["reason"] == ("step 2 is wrong", "step 2 is right")
    assert changes["prm_output"] == ([1, 0], [1, 1])
    assert changes["decided_by"] == (lead.pk, staff_user.pk)
    page = staff_client.get(reverse("admin:rollouts_adjudication_history", args=[adjudication.pk])).content.decode()
    assert "step 2 is wrong" in page and "step 2 is right" in page
