"""The labeller's flow without traps (issue 20, part 4): keys whose symbols say the rating, a skip that keeps the draft
and sends the rollout behind the rest of the person's queue, and revisions of one's own label while the scheme is open
(history kept, time adding up; first-label-wins between people unchanged). Time is a parameter: no test sleeps.
The keys themselves (the script) are driven in test_browser."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from prmsite.core.errors import ApplicationError, ConflictError
from rollouts.labelling import services, views
from rollouts.labelling.forms import RATING_KEYS, RATING_WORDS
from rollouts.labelling.services import LabelInput, draft_save, label_revise, label_skip, label_submit, labelling_next
from rollouts.labels import label_create
from rollouts.models import LabelDraft, LabelRevision, LabelSkip, ProcessRewardLabel, RolloutCheckout
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import (
    claim_next,
    form_data,
    make_labeller,
    rollout_url,
    submit,
    visit_of,
)

pytestmark = pytest.mark.django_db


def work(*ratings, notes=None, **fields) -> LabelInput:
    return LabelInput(ratings=list(ratings), notes=notes or [""] * len(ratings), **fields)


def revise_url(scheme, rollout_id: int) -> str:
    return reverse("labelling:revise", kwargs={"prm_version": scheme.prm_version, "rollout_id": rollout_id})


def skip_url(scheme, rollout_id: int) -> str:
    return reverse("labelling:skip", kwargs={"prm_version": scheme.prm_version, "rollout_id": rollout_id})


def checked_ratings(html: str) -> dict[int, str]:
    """The rating radio checked for each step of a labelling page."""
    return {
        int(match.group(1)): match.group(2)
        for match in re.finditer(r'name="rating_(\d+)" value="([^"]*)" checked', html)
    }


# Keys


def test_the_rating_keys_say_their_rating_and_no_digit_but_0_rates():
    assert RATING_KEYS == {"-": "-1", "_": "-1", "a": "-1", "0": "0", "s": "0", "+": "1", "=": "1", "d": "1"}
    assert not [key for key in RATING_KEYS if key.isdigit() and key != "0"]
    assert [(r["sign"], r["word"]) for r in RATING_WORDS] == [("\u22121", "wrong"), ("0", "neutral"), ("+1", "right")]


def test_the_page_shows_the_keys_and_the_ratings_as_words(labeller_client, scheme):
    make_rollout()
    rollout_id = claim_next(labeller_client, scheme)
    html = labeller_client.get(rollout_url(scheme, rollout_id)).content.decode()
    keys = re.search(r'data-rating-keys="([^"]*)"', html)
    assert keys and json.loads(unescape(keys.group(1))) == RATING_KEYS  # what the script reads
    for rating in RATING_WORDS:
        assert f"rate the current step {rating['sign']} ({rating['word']})" in html
        assert f'value="{rating["value"]}"> {rating["sign"]} {rating["word"]}</label>' in html
    assert "<kbd>1</kbd>" not in html and "<kbd>3</kbd>" not in html
    assert "Digits other than 0 rate nothing" in html
    assert "<kbd>Shift</kbd>+<kbd>S</kbd>" in html  # saving moved off s, which rates 0


# Skip


def test_a_skip_keeps_the_draft_records_the_skip_and_releases_the_lease(scheme, labeller):
    first, second = make_rollout(), make_rollout()
    shown = timezone.now()
    assert labelling_next(scheme=scheme, username="ann", now=shown) == first.pk
    draft_save(
        user=labeller,
        scheme=scheme,
        rollout=first,
        data=work(1, None, notes=["fine", ""], finish_reason="give_up"),
        visit_started=shown,
        now=shown + timedelta(seconds=30),
    )
    # The skip carries the page's visit: the 15 s since the last save go to the draft too.
    skipped_at = shown + timedelta(seconds=45)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=first.pk, now=skipped_at, visit_started=shown) == (
        second.pk
    )
    draft = LabelDraft.objects.get(rollout=first)
    assert (draft.ratings, draft.notes, draft.finish_reason) == ([1, None], ["fine", ""], "give_up")
    assert draft.seconds_spent == pytest.approx(45)
    skip = LabelSkip.objects.get()
    assert (skip.user, skip.prm_version, skip.rollout_id) == (labeller, "human-v1", first.pk)
    assert skip.skipped_at == skipped_at
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [second.pk]


def test_skipping_again_renews_the_skip_and_what_was_never_handed_out_records_none(scheme, labeller):
    first, second = make_rollout(), make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=first.pk, now=now) == second.pk  # no draft: skipped
    assert LabelSkip.objects.get().skipped_at == now
    later = now + timedelta(minutes=5)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=second.pk, now=later) == first.pk
    assert label_skip(user=labeller, scheme=scheme, rollout_id=first.pk, now=later) == second.pk
    assert dict(LabelSkip.objects.values_list("rollout_id", "skipped_at")) == {first.pk: later, second.pk: later}
    bob = make_labeller("bob")
    label_skip(user=bob, scheme=scheme, rollout_id=99_999_999, now=later)  # nothing to give back, nothing recorded
    label_skip(user=bob, scheme=scheme, rollout_id=second.pk, now=later)  # ann's, never handed to bob
    assert not LabelSkip.objects.filter(user=bob).exists()
    assert RolloutCheckout.objects.get(rollout=second).claimed_by == "ann"


def test_labelling_a_skipped_rollout_drops_the_skip_and_the_draft(scheme, labeller):
    only = make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    draft_save(user=labeller, scheme=scheme, rollout=only, data=work(1, None), visit_started=now, now=now)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=only.pk, now=now) is None
    assert labelling_next(scheme=scheme, username="ann", now=now) == only.pk  # nothing else: it comes back
    label_submit(user=labeller, scheme=scheme, rollout=only, data=work(1, 1), visit_started=None, now=now)
    assert not LabelSkip.objects.exists() and not LabelDraft.objects.exists()


def test_a_skipped_rollout_comes_back_after_the_rest_of_the_queue(scheme, labeller):
    # The claim's order (skipped rollouts last, oldest skip first) is the queue's; this drives it through the services.
    first, second, third = make_rollout(), make_rollout(), make_rollout()
    now = timezone.now()
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk
    draft_save(user=labeller, scheme=scheme, rollout=first, data=work(-1, None), visit_started=now, now=now)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=first.pk, now=now) == second.pk
    label_submit(user=labeller, scheme=scheme, rollout=second, data=work(1, 1), visit_started=None, now=now)
    assert labelling_next(scheme=scheme, username="ann", now=now) == third.pk
    label_submit(user=labeller, scheme=scheme, rollout=third, data=work(1, 1), visit_started=None, now=now)
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk
    assert LabelDraft.objects.get(rollout=first).ratings == [-1, None]


def test_a_skipped_rollout_that_comes_back_resumes_from_its_draft(client, scheme):
    ann = make_labeller("ann")
    first, second = make_rollout(), make_rollout()
    client.force_login(ann)
    assert claim_next(client, scheme) == first.pk
    page = client.get(rollout_url(scheme, first.pk)).content.decode()
    client.post(rollout_url(scheme, first.pk), form_data([1, None], notes=["kept", ""], action="save"))
    skipped = client.post(skip_url(scheme, first.pk), {"visit": visit_of(page)})
    assert skipped["Location"] == rollout_url(scheme, second.pk)
    assert views.SKIPPED.format(rollout_id=first.pk) in client.get(rollout_url(scheme, second.pk)).content.decode()
    scheme_page = client.get(reverse("labelling:scheme", args=[scheme.prm_version])).content.decode()
    assert "skipped: it comes back to you after the rest of your queue" in scheme_page
    # While skipped, its page says so and shows the draft.
    html = client.get(rollout_url(scheme, first.pk)).content.decode()
    assert 'id="skipped-note"' in html and checked_ratings(html) == {0: "1", 1: ""}
    assert submit(client, scheme, second.pk, [1, 1])["Location"] == rollout_url(scheme, first.pk)
    html = client.get(rollout_url(scheme, first.pk)).content.decode()
    assert checked_ratings(html) == {0: "1", 1: ""} and ">kept</textarea>" in html
    assert 'id="skipped-note"' not in html and LabelSkip.objects.exists()  # handed back; the skip stays till labelled
    assert submit(client, scheme, first.pk, [1, 0]).status_code == 302
    assert not LabelSkip.objects.exists()


# Revisions


def labelled(scheme, labeller, rollout, ratings, *, now, seconds: float = 20.0) -> ProcessRewardLabel:
    labelling_next(scheme=scheme, username=labeller.get_username(), now=now)
    return label_submit(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(*ratings, notes=["first note", ""]),
        visit_started=now - timedelta(seconds=seconds),
        now=now,
    )


def test_a_revision_updates_the_label_in_place_keeps_the_history_and_adds_the_time(scheme, labeller):
    rollout = make_rollout()
    now = timezone.now()
    label = labelled(scheme, labeller, rollout, [1, 1], now=now)
    before = (label.prm_output, label.explanations, dict(label.attributes))
    shown = label.created_at + timedelta(seconds=100)
    revised = label_revise(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(1, -1, notes=["", "wrong sum"]),
        visit_started=shown,
        now=shown + timedelta(seconds=60),
    )
    assert revised.pk == label.pk and ProcessRewardLabel.objects.count() == 1
    revised.refresh_from_db()
    assert revised.prm_output == [1, 0] and revised.explanations == ["", "wrong sum"]
    assert revised.final_reward == 0.0
    assert revised.attributes["finish_reason"] == "found_error"
    assert revised.attributes["seconds_spent"] == pytest.approx(80)
    revision = LabelRevision.objects.get()
    assert (revision.prm_output, revision.explanations, revision.attributes) == before
    assert revision.revised_at == shown + timedelta(seconds=60)
    # The same page's token again (a second submit of it): only the time since the last revision counts.
    label_revise(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(0, 1),
        visit_started=shown,
        now=shown + timedelta(seconds=100),
    )
    revised.refresh_from_db()
    assert revised.attributes["seconds_spent"] == pytest.approx(120)
    assert [r.prm_output for r in LabelRevision.objects.order_by("revised_at")] == [[1, 1], [1, 0]]


def test_only_the_author_revises_and_nothing_is_written_otherwise(scheme, labeller):
    bob = make_labeller("bob")
    rollout = make_rollout()
    label = labelled(scheme, labeller, rollout, [1, 1], now=timezone.now())
    with pytest.raises(services.NotRevisable) as refused:
        label_revise(user=bob, scheme=scheme, rollout=rollout, data=work(0, 0), visit_started=None, now=timezone.now())
    assert refused.value.status_code == 403
    with pytest.raises(ApplicationError) as invalid:  # the author, with ratings that make no label
        label_revise(
            user=labeller, scheme=scheme, rollout=rollout, data=work(None, 1), visit_started=None, now=timezone.now()
        )
    assert invalid.value.code == services.RATINGS_INVALID
    label.refresh_from_db()
    assert label.prm_output == [1, 1] and not LabelRevision.objects.exists()


def test_a_closed_scheme_refuses_a_revision(scheme, labeller):
    rollout = make_rollout()
    labelled(scheme, labeller, rollout, [1, 1], now=timezone.now())
    scheme.is_open = False
    scheme.save()
    with pytest.raises(services.RevisionClosed, match="can no longer be revised"):
        label_revise(
            user=labeller, scheme=scheme, rollout=rollout, data=work(0, 0), visit_started=None, now=timezone.now()
        )
    assert not LabelRevision.objects.exists()


def test_first_label_wins_between_two_people_after_a_revision(scheme, labeller):
    bob = make_labeller("bob")
    rollout = make_rollout()
    now = timezone.now()
    label = labelled(scheme, labeller, rollout, [1, 1], now=now)
    label_revise(user=labeller, scheme=scheme, rollout=rollout, data=work(-1, 1), visit_started=None, now=now)
    with pytest.raises(ConflictError) as refused:
        label_create(
            rollout_id=rollout.pk,
            prm_version=scheme.prm_version,
            prm_output=[1, 1],
            worker="bob",
            labelled_by="bob",
            now=now,
        )
    assert refused.value.code == "already_labelled" and refused.value.extra["id"] == label.pk
    assert labelling_next(scheme=scheme, username="bob", now=now) is None  # and it is never handed to bob
    assert list(ProcessRewardLabel.objects.values_list("labelled_by", flat=True)) == ["ann"]
    assert bob.label_drafts.count() == 0


def test_the_author_revises_on_the_page_and_sees_the_history(labeller_client, scheme):
    rollout = make_rollout()
    rollout_id = claim_next(labeller_client, scheme)
    submit(labeller_client, scheme, rollout_id, [1, 1], notes=["", "ok"])
    labelled_page = labeller_client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert f'href="{revise_url(scheme, rollout.pk)}"' in labelled_page
    scheme_page = labeller_client.get(reverse("labelling:scheme", args=[scheme.prm_version])).content.decode()
    assert f'href="{revise_url(scheme, rollout.pk)}"' in scheme_page
    page = labeller_client.get(revise_url(scheme, rollout.pk))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="revising"' in html and 'data-revising="true"' in html
    assert checked_ratings(html) == {0: "1", 1: "1"} and ">ok</textarea>" in html
    assert 'name="finish_reason" value="" checked' in html  # "solution" followed from the ratings: it still does
    assert 'id="skip-form"' not in html and 'value="save"' not in html
    response = labeller_client.post(
        revise_url(scheme, rollout.pk), form_data([1, -1], notes=["", "not ok"], visit=visit_of(html))
    )
    assert response.status_code == 302 and response["Location"] == rollout_url(scheme, rollout.pk)
    html = labeller_client.get(response["Location"]).content.decode()
    assert "revised it 1 time " in html and 'id="revisions"' in html and "Label of rollout" in html
    assert "\u22121 wrong" in html  # the ratings as words
    label = ProcessRewardLabel.objects.get()
    assert label.prm_output == [1, 0] and label.explanations == ["", "not ok"]
    assert LabelRevision.objects.get().prm_output == [1, 1]
    scheme_page = labeller_client.get(reverse("labelling:scheme", args=[scheme.prm_version])).content.decode()
    assert "(1 revision)" in scheme_page


def test_a_revision_page_refuses_others_closed_schemes_and_bad_ratings(client, scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    rollout = make_rollout()
    client.force_login(ann)
    submit(client, scheme, claim_next(client, scheme), [1, 1])
    other = Client()
    other.force_login(bob)
    url = revise_url(scheme, rollout.pk)
    refused = other.get(url)
    assert refused.status_code == 403
    assert escape(services.REVISION_NOT_AUTHOR.format(rollout_id=rollout.pk, prm_version=scheme.prm_version)) in (
        refused.content.decode()
    )
    assert other.post(url, form_data([0, 0])).status_code == 403
    assert other.post(url, form_data([0, 0]), HTTP_ACCEPT="application/json").json()["saved"] is False
    bad = client.post(url, form_data([None, 1]))
    assert bad.status_code == 400 and 'id="errors"' in bad.content.decode()
    assert client.post(url, form_data([0, 0], action="save")).status_code == 400
    assert ProcessRewardLabel.objects.get().prm_output == [1, 1] and not LabelRevision.objects.exists()
    scheme.is_open = False
    scheme.save()
    closed = client.post(url, form_data([0, 0]))
    assert closed.status_code == 409
    assert escape(services.REVISION_CLOSED.format(prm_version=scheme.prm_version)) in closed.content.decode()
    assert client.get(url).status_code == 409
    assert 'id="revise-link"' not in client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert ProcessRewardLabel.objects.get().prm_output == [1, 1] and not LabelRevision.objects.exists()
    assert Client().get(url)["Location"].startswith(reverse("labelling:login"))
