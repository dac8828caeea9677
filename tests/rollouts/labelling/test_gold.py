"""Gold checks: staff mark gold items (from ratings, from an adjudication, imported), the queue mixes them in at the
scheme's rate unmarked, answers go to GoldAnswer (never a label), the staff page shows each labeller's accuracy
against the gold, and the consensus export can leave out labellers below a gold accuracy."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rollouts.labelling import gold, rules
from rollouts.labelling.exports import GOLD_ACCURACY_RANGE, ConsensusOptions, consensus_records
from rollouts.labelling.services import (
    LabelInput,
    NotHandedOut,
    draft_save,
    label_skip,
    label_submit,
    labelling_next,
)
from rollouts.labelling.stats import scheme_progress
from rollouts.labelling.views import LABEL_STORED
from rollouts.models import (
    GOLD_FROM_ADJUDICATION,
    GOLD_FROM_IMPORT,
    GOLD_FROM_STAFF,
    Adjudication,
    GoldAnswer,
    GoldItem,
    LabelDraft,
    LabelSkip,
    ProcessRewardLabel,
    RolloutCheckout,
)
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import (
    claim_next,
    form_data,
    human_label,
    make_labeller,
    make_scheme,
    rollout_url,
    submit,
)

pytestmark = pytest.mark.django_db

STEPS = ["Step 1: 2 + 2 is 4.", "Step 2: so 4.", "Step 3: the answer is 4."]


def work(*ratings) -> LabelInput:
    return LabelInput(ratings=list(ratings), notes=[""] * len(ratings))


def data_label(rollout, who, ratings, version="human-v1"):
    return human_label(rollout, who, ratings, version=version)


def gold_rollouts(scheme, count):
    """Gold rollouts, made after the others (so a queue that does not know gold would reach them last), each
    labelled once by zed before it was marked (as an adjudicated rollout would be): the queue of a K=1 scheme has
    nothing of them to hand out, with or without the scope's gold rule."""
    items = []
    for _ in range(count):
        rollout = make_rollout(reasoning=STEPS)
        items.append(gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 1, -1]))
        data_label(rollout, "zed", [1, 1, 1])
    return items


# --- marking gold -------------------------------------------------------------------------------------------------


def test_staff_mark_gold_from_ratings_and_the_rules_refuse_bad_ones(staff_user):
    scheme = make_scheme()
    rollout = make_rollout(reasoning=STEPS)
    with pytest.raises(gold.GoldError, match="Step 2 is not rated but step 3 is"):
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, None, 1])
    with pytest.raises(gold.GoldError) as too_many:
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 1, 1, 1])
    assert too_many.value.message == gold.TOO_MANY_RATINGS.format(given=4, steps=3, rollout_id=rollout.pk)
    with pytest.raises(gold.GoldError, match="Rate every step"):  # every-step mode: a -1 needs the rest rated
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, -1])
    with pytest.raises(gold.GoldError) as missing:
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk + 100, ratings=[1])
    assert missing.value.message == gold.NO_ROLLOUT.format(rollout_id=rollout.pk + 100)
    assert not GoldItem.objects.exists()

    item = gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 0, -1], user=staff_user)
    assert (item.prm_output, item.rated_steps, item.source, item.created_by) == (
        [1, 2, 0],
        3,
        GOLD_FROM_STAFF,
        staff_user,
    )
    with pytest.raises(gold.GoldError) as twice:
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 1, 1])
    assert twice.value.message == gold.ALREADY_GOLD.format(rollout_id=rollout.pk, prm_version="human-v1")
    assert item.history.count() == 1


def test_gold_in_stop_at_first_error_mode_ends_at_the_first_wrong_step():
    scheme = make_scheme(stop_at_first_error=True)
    rollout = make_rollout(reasoning=STEPS)
    item = gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=gold.ratings_parse("+1, -1"))
    assert (item.prm_output, item.rated_steps) == ([1, 0, 2], 2)


def test_a_rollout_outside_the_scope_cannot_be_gold():
    scheme = make_scheme(scope_models=["big-model"])
    rollout = make_rollout(reasoning=STEPS, model="tiny-model")
    with pytest.raises(gold.GoldError) as refused:
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 1, 1])
    assert refused.value.message == gold.NOT_IN_SCOPE.format(rollout_id=rollout.pk, prm_version="human-v1")
    assert not GoldItem.objects.exists()


def test_ratings_text_reads_signs_and_refuses_anything_else():
    assert gold.ratings_parse(" +1 0,-1  1 _") == [1, 0, -1, 1, None]
    with pytest.raises(gold.GoldError, match="'2'"):
        gold.ratings_parse("1 2")


def test_gold_from_an_adjudicated_label(staff_user):
    scheme = make_scheme(labels_per_rollout=2)
    rollout = make_rollout(reasoning=STEPS)
    data_label(rollout, "ann", [1, 1, 1])
    data_label(rollout, "bob", [1, -1, 1])
    with pytest.raises(gold.GoldError) as none:
        gold.gold_from_adjudication(scheme=scheme, rollout_id=rollout.pk)
    assert none.value.message == gold.NO_ADJUDICATION.format(rollout_id=rollout.pk, prm_version="human-v1")
    Adjudication.objects.create(
        scheme=scheme,
        rollout=rollout,
        prm_output=[1, 0, 2],
        rated_steps=2,
        reason="Step 2 divides by zero.",
        decided_by=staff_user,
        decided_at=timezone.now(),
    )
    assert [a.rollout_id for a in gold.adjudications_not_gold(scheme=scheme)] == [rollout.pk]
    item = gold.gold_from_adjudication(scheme=scheme, rollout_id=rollout.pk, user=staff_user)
    assert (item.prm_output, item.rated_steps, item.source) == ([1, 0, 2], 2, GOLD_FROM_ADJUDICATION)
    assert gold.adjudications_not_gold(scheme=scheme) == []
    # Its labels stay data labels; it takes no more.
    assert ProcessRewardLabel.objects.filter(rollout=rollout).count() == 2


def test_the_gold_page_is_staff_only_and_marks_gold(staff_client, staff_user):
    scheme = make_scheme()
    rollout = make_rollout(reasoning=STEPS)
    url = reverse("labelling:gold", kwargs={"prm_version": scheme.prm_version})
    client = Client()
    assert client.get(url).status_code == 302  # to the login
    assert client.post(url, {"rollout_id": rollout.pk, "ratings": "1 1 1"}).status_code == 302
    labeller = make_labeller("ann")
    client.force_login(labeller)
    assert client.get(url).status_code == 403
    assert client.post(url, {"rollout_id": rollout.pk, "ratings": "1 1 1"}).status_code == 403
    assert not GoldItem.objects.exists()

    assert staff_client.get(url).status_code == 200
    bad = staff_client.post(url, {"action": "add", "rollout_id": rollout.pk, "ratings": "1 <b>x</b>"})
    assert bad.status_code == 400
    assert "<b>x</b>" not in bad.content.decode()  # the input is shown escaped
    assert "&#x27;&lt;b&gt;x&lt;/b&gt;&#x27;" in bad.content.decode()
    gap = staff_client.post(url, {"action": "add", "rollout_id": rollout.pk, "ratings": "1 _ 1"})
    assert gap.status_code == 400
    assert "Step 2 is not rated but step 3 is" in gap.content.decode()
    assert not GoldItem.objects.exists()
    added = staff_client.post(url, {"action": "add", "rollout_id": rollout.pk, "ratings": "+1 +1 -1"})
    assert added.status_code == 302
    item = GoldItem.objects.get()
    assert (item.prm_output, item.created_by, item.source) == ([1, 1, 0], staff_user, GOLD_FROM_STAFF)
    page = staff_client.get(url).content.decode()
    assert f"#{rollout.pk}" in page and "3 of 3" in page


def test_the_gold_page_makes_an_adjudicated_rollout_gold(staff_client, staff_user):
    scheme = make_scheme()
    rollout = make_rollout(reasoning=STEPS)
    Adjudication.objects.create(
        scheme=scheme, rollout=rollout, prm_output=[1, 1, 1], rated_steps=3, reason="ok", decided_at=timezone.now()
    )
    url = reverse("labelling:gold", kwargs={"prm_version": scheme.prm_version})
    assert "Make gold" in staff_client.get(url).content.decode()
    assert staff_client.post(url, {"action": "adjudication", "rollout_id": "x"}).status_code == 400
    assert staff_client.post(url, {"action": "adjudication", "rollout_id": str(rollout.pk)}).status_code == 302
    assert GoldItem.objects.get().source == GOLD_FROM_ADJUDICATION


# --- the mix ------------------------------------------------------------------------------------------------------


def test_the_queue_mixes_gold_in_at_the_rate_once_per_person_and_answers_are_no_labels():
    scheme = make_scheme(gold_rate=0.25)
    ann = make_labeller("ann")
    normal = [make_rollout(reasoning=STEPS) for _ in range(9)]
    items = gold_rollouts(scheme, 3)
    gold_ids = {item.rollout_id for item in items}
    now = timezone.now()
    handed = []
    for _ in range(12):
        rollout_id = labelling_next(scheme=scheme, username="ann", now=now)
        assert labelling_next(scheme=scheme, username="ann", now=now) == rollout_id  # held until answered
        handed.append(rollout_id)
        rollout = next(r for r in [*normal, *(i.rollout for i in items)] if r.pk == rollout_id)
        label_submit(user=ann, scheme=scheme, rollout=rollout, data=work(1, 1, 1), visit_started=None, now=now)
    positions = [n for n, rollout_id in enumerate(handed, start=1) if rollout_id in gold_ids]
    assert positions == [4, 8, 12]
    assert [handed[p - 1] for p in positions] == [item.rollout_id for item in items]  # the first not had, each once
    assert set(handed) - gold_ids == {r.pk for r in normal}
    answers = GoldAnswer.objects.filter(user=ann)
    assert answers.count() == 3
    assert all(a.answered_at is not None and a.prm_output == [1, 1, 1] for a in answers)
    assert answers.first().attributes["rated_steps"] == 3
    assert not ProcessRewardLabel.objects.filter(labelled_by="ann", rollout_id__in=gold_ids).exists()
    assert ProcessRewardLabel.objects.filter(labelled_by="ann").count() == 9
    assert not RolloutCheckout.objects.filter(claimed_by="ann").exists()  # each answer ended its lease


def test_no_gold_at_rate_zero_and_none_twice_to_one_person():
    scheme = make_scheme(gold_rate=0.0)
    make_labeller("ann")
    first = make_rollout(reasoning=STEPS)
    gold_rollouts(scheme, 1)
    assert labelling_next(scheme=scheme, username="ann", now=timezone.now()) == first.pk
    assert not GoldAnswer.objects.exists()

    scheme.gold_rate = 0.5
    scheme.save()
    bob = make_labeller("bob")
    normal = [make_rollout(reasoning=STEPS) for _ in range(3)]
    (item,) = GoldItem.objects.all()
    now = timezone.now()
    handed = []
    for _ in range(4):
        rollout_id = labelling_next(scheme=scheme, username="bob", now=now)
        handed.append(rollout_id)
        rollout = item.rollout if rollout_id == item.rollout_id else next(r for r in normal if r.pk == rollout_id)
        label_submit(user=bob, scheme=scheme, rollout=rollout, data=work(1, 1, 1), visit_started=None, now=now)
    # Gold second; at the fourth gold is due again but bob had the only one, so the queue goes on.
    assert handed[1] == item.rollout_id
    assert handed.count(item.rollout_id) == 1
    assert GoldAnswer.objects.filter(user=bob).count() == 1


def test_a_gold_item_handed_out_comes_first_until_answered_even_after_its_lease_or_in_a_closed_scheme():
    scheme = make_scheme(gold_rate=0.5)
    ann = make_labeller("ann")
    first = make_rollout(reasoning=STEPS)
    make_rollout(reasoning=STEPS)
    (item,) = gold_rollouts(scheme, 1)
    now = timezone.now()
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk
    label_submit(user=ann, scheme=scheme, rollout=first, data=work(1, 1, 1), visit_started=None, now=now)
    assert labelling_next(scheme=scheme, username="ann", now=now) == item.rollout_id
    later = now + timedelta(days=1)  # the lease has expired
    scheme.is_open = False
    scheme.save()
    assert labelling_next(scheme=scheme, username="ann", now=later) == item.rollout_id
    assert RolloutCheckout.objects.get(claimed_by="ann").expires_at > later
    label_submit(user=ann, scheme=scheme, rollout=item.rollout, data=work(1, 1, -1), visit_started=None, now=later)
    assert GoldAnswer.objects.get().prm_output == [1, 1, 0]


def test_a_skipped_gold_item_is_closed_unanswered_and_never_comes_back():
    scheme = make_scheme(gold_rate=0.5)
    ann = make_labeller("ann")
    first = make_rollout(reasoning=STEPS)
    second = make_rollout(reasoning=STEPS)
    (item,) = gold_rollouts(scheme, 1)
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    label_submit(user=ann, scheme=scheme, rollout=first, data=work(1, 1, 1), visit_started=None, now=now)
    assert labelling_next(scheme=scheme, username="ann", now=now) == item.rollout_id
    LabelDraft.objects.create(user=ann, prm_version=scheme.prm_version, rollout=item.rollout, ratings=[1, None, None])
    assert label_skip(user=ann, scheme=scheme, rollout_id=item.rollout_id, now=now) == second.pk
    answer = GoldAnswer.objects.get()
    assert answer.answered_at is not None and answer.prm_output is None and answer.attributes == {gold.SKIPPED: True}
    assert not LabelDraft.objects.filter(rollout=item.rollout).exists()
    assert not LabelSkip.objects.exists()  # it never comes back, so no skip is recorded
    summary = gold.gold_summary(scheme=scheme)
    assert (summary.served, summary.answered, summary.skipped, summary.open) == (1, 0, 1, 0)


def test_the_gold_page_looks_like_any_other_and_its_answer_is_not_a_label(client):
    scheme = make_scheme(gold_rate=0.5)
    ann = make_labeller("ann")
    first = make_rollout(reasoning=STEPS)
    make_rollout(reasoning=STEPS)
    (item,) = gold_rollouts(scheme, 1)
    client.force_login(ann)
    assert claim_next(client, scheme) == first.pk
    normal_page = client.get(rollout_url(scheme, first.pk))
    assert submit(client, scheme, first.pk, [1, 1, 1]).status_code == 302
    assert claim_next(client, scheme) == item.rollout_id
    gold_page = client.get(rollout_url(scheme, item.rollout_id))
    assert gold_page.status_code == 200
    assert [t.name for t in gold_page.templates] == [t.name for t in normal_page.templates]
    assert "gold" not in gold_page.content.decode().lower()
    assert "Checked out to you until" in gold_page.content.decode()
    response = submit(client, scheme, item.rollout_id, [1, -1, 1], notes=["", "wrong sum", ""])
    assert response.status_code == 302
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert LABEL_STORED.format(rollout_id=item.rollout_id, rated=3, steps=3, finish_reason="found_error") in shown
    answer = GoldAnswer.objects.get(user=ann)
    assert (answer.prm_output, answer.explanations[1], answer.attributes["finish_reason"]) == (
        [1, 0, 1],
        "wrong sum",
        rules.FINISH_FOUND_ERROR,
    )
    assert not ProcessRewardLabel.objects.filter(rollout=item.rollout, labelled_by="ann").exists()
    labelled = client.get(rollout_url(scheme, item.rollout_id))
    assert labelled.status_code == 200
    assert "You labelled this rollout" in labelled.content.decode()
    assert "gold" not in labelled.content.decode().lower()
    # A second submit changes nothing and writes no label.
    assert client.post(rollout_url(scheme, item.rollout_id), form_data([1, 1, 1])).status_code == 302
    assert GoldAnswer.objects.get(user=ann).prm_output == [1, 0, 1]
    assert not ProcessRewardLabel.objects.filter(rollout=item.rollout, labelled_by="ann").exists()


def test_a_gold_item_not_handed_to_a_person_is_refused_to_them(client):
    scheme = make_scheme(gold_rate=0.5)
    bob = make_labeller("bob")
    (item,) = gold_rollouts(scheme, 1)
    with pytest.raises(NotHandedOut):
        label_submit(
            user=bob, scheme=scheme, rollout=item.rollout, data=work(1, 1, 1), visit_started=None, now=timezone.now()
        )
    client.force_login(bob)
    assert client.get(rollout_url(scheme, item.rollout_id)).status_code == 302  # not checked out: to the scheme
    assert client.post(rollout_url(scheme, item.rollout_id), {"rating_0": "1"}).status_code == 403
    assert not GoldAnswer.objects.exists()
    assert not ProcessRewardLabel.objects.filter(rollout=item.rollout, labelled_by="bob").exists()


# --- figures ------------------------------------------------------------------------------------------------------


def answer(item, user, ratings, *, when=None):
    label = rules.label_from_ratings(
        ratings,
        [""] * len(ratings),
        finish_reason=None if None not in ratings else rules.FINISH_GIVE_UP,
        stop_at_first_error=False,
    )
    when = when or timezone.now()
    return GoldAnswer.objects.create(
        gold=item,
        user=user,
        served_at=when,
        answered_at=when,
        prm_output=label.prm_output,
        explanations=label.explanations,
        attributes={"rated_steps": label.rated_steps, "finish_reason": label.finish_reason},
    )


@pytest.fixture
def checked():
    """Gold g1 = [+1, +1, -1], g2 = [+1, -1, (unrated)] (stop-at-first-error adjudication), g3 = [+1, +1, +1].
    ann answers g1 [+1, 0, -1] (2/3 steps, first error agrees), g2 [+1, +1, -1] (1/2 steps, first error 2 vs 3),
    g3 [+1, +1, +1] (3/3, agrees): 6 of 8 steps, 2 of 3 first errors.
    bob answers g1 [-1, -1, -1] (1/3, first error 1 vs 3), g2 [+1, (gave up)] (1/1; no first error):
    2 of 4 steps, 0 of 1 first errors. cat has g3 open (handed out, not answered)."""
    scheme = make_scheme(labels_per_rollout=2)
    rollouts = [make_rollout(reasoning=STEPS) for _ in range(3)]
    g1 = gold.gold_mark(scheme=scheme, rollout_id=rollouts[0].pk, ratings=[1, 1, -1])
    g2 = GoldItem.objects.create(
        scheme=scheme, rollout=rollouts[1], prm_output=[1, 0, 2], rated_steps=2, source=GOLD_FROM_ADJUDICATION
    )
    g3 = gold.gold_mark(scheme=scheme, rollout_id=rollouts[2].pk, ratings=[1, 1, 1])
    ann, bob, cat = make_labeller("ann"), make_labeller("bob"), make_labeller("cat")
    answer(g1, ann, [1, 0, -1])
    answer(g2, ann, [1, 1, -1])
    answer(g3, ann, [1, 1, 1])
    answer(g1, bob, [-1, -1, -1])
    answer(g2, bob, [1, None, None])
    GoldAnswer.objects.create(gold=g3, user=cat, served_at=timezone.now())
    return scheme


def test_gold_accuracy_figures_by_hand(checked):
    summary = gold.gold_summary(scheme=checked)
    assert (summary.items, summary.served, summary.answered, summary.skipped, summary.open) == (3, 6, 5, 0, 1)
    scores = {score.labeller: score for score in summary.scores}
    ann, bob, cat = scores["ann"], scores["bob"], scores["cat"]
    assert (ann.answers, ann.steps_agreeing, ann.steps, ann.first_errors_agreeing, ann.first_errors) == (3, 6, 8, 2, 3)
    assert ann.step_accuracy == pytest.approx(0.75)
    assert ann.first_error_accuracy == pytest.approx(2 / 3)
    assert (bob.answers, bob.steps_agreeing, bob.steps, bob.first_errors_agreeing, bob.first_errors) == (2, 2, 4, 0, 1)
    assert (bob.step_accuracy, bob.first_error_accuracy) == (0.5, 0.0)
    assert (cat.answers, cat.step_accuracy) == (0, None)
    assert [(score.labeller, skipped, held) for score, skipped, held in summary.rows] == [
        ("ann", 0, 0),
        ("bob", 0, 0),
        ("cat", 0, 1),
    ]


def test_the_staff_page_shows_gold_accuracy(staff_client, checked):
    url = reverse("labelling:stats", kwargs={"prm_version": checked.prm_version})
    page = staff_client.get(url).content.decode()
    table = page[page.index('id="gold"') :]
    table = table[: table.index("</table>")]
    assert "75.0%" in table and "6/8" in table and "66.7%" in table and "2/3" in table
    assert "50.0%" in table and "2/4" in table and "0.0%" in table and "0/1" in table
    assert "3 gold items" in page and "6 handed out, 5 answered, 0 skipped, 1 open" in page
    client = Client()
    client.force_login(make_labeller("dan"))
    assert client.get(url).status_code == 403


def test_the_export_leaves_out_labellers_below_the_gold_accuracy(checked, staff_client, tmp_path, capsys):
    r1, r2 = make_rollout(reasoning=STEPS), make_rollout(reasoning=STEPS)
    for rollout in (r1, r2):
        data_label(rollout, "ann", [1, 1, 1])
        data_label(rollout, "bob", [1, 1, 1])
    everyone, tally = consensus_records(scheme=checked, options=ConsensusOptions(min_labels=1))
    assert [record["labellers"] for record in everyone] == [["ann", "bob"], ["ann", "bob"]]
    assert tally.labellers_left_out == []
    # bob: 50% over 2 answers; ann 75% over 3.
    kept, tally = consensus_records(
        scheme=checked, options=ConsensusOptions(min_labels=1, gold_min_accuracy=0.6, gold_min_answers=2)
    )
    assert [record["labellers"] for record in kept] == [["ann"], ["ann"]]
    assert (tally.labellers_left_out, tally.labels_left_out) == (["bob"], 2)
    both, _ = consensus_records(
        scheme=checked, options=ConsensusOptions(min_labels=1, gold_min_accuracy=0.8, gold_min_answers=2)
    )
    assert both == []
    few, _ = consensus_records(  # bob has 2 gold answers, fewer than 3: kept
        scheme=checked, options=ConsensusOptions(min_labels=1, gold_min_accuracy=0.6, gold_min_answers=3)
    )
    assert [record["labellers"] for record in few] == [["ann", "bob"], ["ann", "bob"]]
    with pytest.raises(ValueError, match=GOLD_ACCURACY_RANGE):
        ConsensusOptions(gold_min_accuracy=1.5)

    url = reverse("labelling:export", kwargs={"prm_version": checked.prm_version})
    preview = staff_client.get(url, {"min_labels": 1, "gold_min_accuracy": "0.6", "gold_min_answers": "2"})
    assert preview.status_code == 200
    assert "below the gold accuracy: bob" in preview.content.decode()
    assert staff_client.get(url, {"gold_min_accuracy": "2"}).status_code == 400

    output = tmp_path / "consensus.jsonl"
    call_command(
        "export_consensus",
        "--prm_version",
        checked.prm_version,
        "--output",
        str(output),
        "--min_labels",
        "1",
        "--gold_min_accuracy",
        "0.6",
        "--gold_min_answers",
        "2",
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["labellers"] for record in records] == [["ann"], ["ann"]]
    assert "left out below the gold accuracy: bob (2 labels)" in capsys.readouterr().out
    with pytest.raises(CommandError, match=GOLD_ACCURACY_RANGE):
        call_command(
            "export_consensus",
            "--prm_version",
            checked.prm_version,
            "--output",
            str(output),
            "--gold_min_accuracy",
            "-1",
        )


# --- import -------------------------------------------------------------------------------------------------------


def test_import_gold_all_or_nothing(tmp_path, capsys):
    make_scheme()
    rollouts = [make_rollout(reasoning=STEPS) for _ in range(3)]
    good = tmp_path / "gold.jsonl"
    good.write_text(
        "\n".join(
            [
                json.dumps({"rollout_id": rollouts[0].pk, "ratings": [1, 1, -1]}),
                "",
                json.dumps({"rollout_id": rollouts[1].pk, "prm_output": [1, 2, 1]}),
            ]
        )
    )
    bad_lines = {
        "not json": ("{oops", gold.IMPORT_NOT_JSON),
        "no ratings": (json.dumps({"rollout_id": rollouts[2].pk}), gold.IMPORT_FIELDS),
        "bad rating": (json.dumps({"rollout_id": rollouts[2].pk, "ratings": [1, 2, 1]}), "are -1, 0, +1"),
        "bad code": (json.dumps({"rollout_id": rollouts[2].pk, "prm_output": [1, 0.5, 1]}), "0.5"),
        "twice": (json.dumps({"rollout_id": rollouts[0].pk, "ratings": [1, 1, 1]}), "is on line 1 already"),
        "no rollout": (json.dumps({"rollout_id": 10**9, "ratings": [1]}), gold.NO_ROLLOUT.format(rollout_id=10**9)),
    }
    for name, (line, reason) in bad_lines.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_text(json.dumps({"rollout_id": rollouts[0].pk, "ratings": [1, 1, -1]}) + "\n" + line + "\n")
        with pytest.raises(CommandError) as refused:
            call_command("import_gold", "--labelling_scheme_version", "human-v1", "--input", str(bad))
        assert str(refused.value).startswith("Line 2: "), name
        assert reason in str(refused.value), name
        assert not GoldItem.objects.exists(), name
    with pytest.raises(CommandError, match="No labelling scheme"):
        call_command("import_gold", "--labelling_scheme_version", "nope", "--input", str(good))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_gold", "--labelling_scheme_version", "human-v1", "--input", str(tmp_path / "none"))

    call_command("import_gold", "--labelling_scheme_version", "human-v1", "--input", str(good))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"prm_version": "human-v1", "gold_items": 2, "from_ratings": 1, "from_codes": 1}
    items = {item.rollout_id: item for item in GoldItem.objects.all()}
    assert items[rollouts[0].pk].prm_output == [1, 1, 0]
    assert items[rollouts[1].pk].prm_output == [1, 2, 1]
    assert {item.source for item in items.values()} == {GOLD_FROM_IMPORT}


def test_gold_leases_take_their_own_slots_stay_out_of_the_progress_and_drafts_work():
    scheme = make_scheme(gold_rate=0.5)
    ann, bob = make_labeller("ann"), make_labeller("bob")
    normal = [make_rollout(reasoning=STEPS) for _ in range(2)]
    (item,) = gold_rollouts(scheme, 1)
    now = timezone.now()
    for person, rollout in ((ann, normal[0]), (bob, normal[1])):
        labelling_next(scheme=scheme, username=person.username, now=now)
        label_submit(user=person, scheme=scheme, rollout=rollout, data=work(1, 1, 1), visit_started=None, now=now)
    assert labelling_next(scheme=scheme, username="ann", now=now) == item.rollout_id
    assert labelling_next(scheme=scheme, username="bob", now=now) == item.rollout_id
    leases = RolloutCheckout.objects.filter(rollout=item.rollout).order_by("slot")
    assert [(lease.claimed_by, lease.slot) for lease in leases] == [("ann", 0), ("bob", 1)]
    progress = scheme_progress(scheme=scheme, now=now)
    assert (progress.in_progress, progress.leases) == (0, 0)
    # The page's draft saves work on a gold item (and renew its lease) until it is answered; none is kept after.
    saved = draft_save(
        user=ann, scheme=scheme, rollout=item.rollout, data=work(1, None, None), visit_started=now, now=now
    )
    assert saved.draft is not None and saved.lease_expires_at is not None
    label_submit(user=ann, scheme=scheme, rollout=item.rollout, data=work(1, 1, 1), visit_started=now, now=now)
    assert not LabelDraft.objects.filter(user=ann).exists()
    after = draft_save(user=ann, scheme=scheme, rollout=item.rollout, data=work(1, 1, 1), visit_started=now, now=now)
    assert after.draft is None and not LabelDraft.objects.filter(user=ann).exists()
    assert [lease.claimed_by for lease in RolloutCheckout.objects.filter(rollout=item.rollout)] == ["bob"]


def test_a_person_who_labelled_a_rollout_before_it_was_gold_never_gets_it_as_gold():
    scheme = make_scheme(gold_rate=0.5)
    zed = make_labeller("zed")
    normal = [make_rollout(reasoning=STEPS) for _ in range(3)]
    gold_rollouts(scheme, 1)  # zed labelled it before it was marked
    now = timezone.now()
    handed = []
    for _ in range(3):
        rollout_id = labelling_next(scheme=scheme, username="zed", now=now)
        handed.append(rollout_id)
        rollout = next(r for r in normal if r.pk == rollout_id)
        label_submit(user=zed, scheme=scheme, rollout=rollout, data=work(1, 1, 1), visit_started=None, now=now)
    assert handed == [r.pk for r in normal]
    assert not GoldAnswer.objects.exists()
