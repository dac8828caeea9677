"""The writes behind the labelling pages: lease renewal, time on the page counted once, drafts, submits that keep the
work when refused, skipping and resuming. Time is a parameter, so no test sleeps."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from prmsite.core.errors import ApplicationError, ConflictError
from rollouts.labelling import services
from rollouts.labelling.services import LabelInput, draft_save, label_skip, label_submit, labelling_next
from rollouts.models import LabelDraft, ProcessRewardLabel, RolloutCheckout
from rollouts.queue import checkout_claim, checkout_renew
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import make_labeller

pytestmark = pytest.mark.django_db


def work(*ratings, notes=None, **fields) -> LabelInput:
    return LabelInput(ratings=list(ratings), notes=notes or [""] * len(ratings), **fields)


def test_renewing_extends_a_live_lease_of_the_holder_only(settings):
    settings.PRM_CHECKOUT_TIMEOUT_S = 60
    now = timezone.now()
    rollout = make_rollout()
    checkout_claim(prm_version="human-v1", claimed_by="ann", now=now)
    later = now + timedelta(seconds=50)
    assert checkout_renew(
        prm_version="human-v1", rollout_id=rollout.pk, claimed_by="ann", now=later
    ) == later + timedelta(seconds=60)
    assert RolloutCheckout.objects.get().expires_at == later + timedelta(seconds=60)
    assert checkout_renew(prm_version="human-v1", rollout_id=rollout.pk, claimed_by="bob", now=later) is None
    expired = later + timedelta(seconds=61)
    assert checkout_renew(prm_version="human-v1", rollout_id=rollout.pk, claimed_by="ann", now=expired) is None
    assert RolloutCheckout.objects.get().expires_at == later + timedelta(seconds=60)  # an expired lease stays expired


def test_time_on_the_page_is_counted_once_across_saves_and_the_submit(scheme, labeller):
    rollout = make_rollout()
    shown = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=shown)
    save = dict(user=labeller, scheme=scheme, rollout=rollout, data=work(1, None))
    draft_save(**save, visit_started=shown, now=shown + timedelta(seconds=100))
    # The same page saves again 30 s later: 30 s more, not 130.
    draft_save(**save, visit_started=shown, now=shown + timedelta(seconds=130))
    assert LabelDraft.objects.get().seconds_spent == pytest.approx(130)
    # Hidden for an hour, then shown again: the hidden time is not counted.
    draft_save(**save, visit_started=shown, now=shown + timedelta(seconds=3730), resume=True)
    assert LabelDraft.objects.get().seconds_spent == pytest.approx(130)
    label = label_submit(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(1, 1),
        visit_started=shown,
        now=shown + timedelta(seconds=3750),
    )
    assert label.attributes["seconds_spent"] == pytest.approx(150)
    assert not LabelDraft.objects.exists()


def test_one_stretch_of_time_counts_at_most_half_an_hour(scheme, labeller):
    rollout = make_rollout()
    shown = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=shown)
    label = label_submit(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(1, 1),
        visit_started=shown,
        now=shown + timedelta(hours=9),
    )
    assert label.attributes["seconds_spent"] == services.VISIT_SECONDS_MAX
    other = make_rollout()
    labelling_next(scheme=scheme, username="ann", now=shown)
    forged = label_submit(user=labeller, scheme=scheme, rollout=other, data=work(1, 1), visit_started=None, now=shown)
    assert forged.attributes["seconds_spent"] == 0


def test_a_save_renews_the_lease_and_says_when_it_ends(scheme, labeller, settings):
    settings.PRM_CHECKOUT_TIMEOUT_S = 600
    rollout = make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    later = now + timedelta(seconds=500)
    saved = draft_save(user=labeller, scheme=scheme, rollout=rollout, data=work(1, None), visit_started=now, now=later)
    assert saved.lease_expires_at == later + timedelta(seconds=600)
    gone = draft_save(
        user=labeller,
        scheme=scheme,
        rollout=rollout,
        data=work(1, None),
        visit_started=now,
        now=later + timedelta(hours=1),
    )
    assert gone.lease_expires_at is None and gone.draft is not None


def test_a_refused_submit_keeps_the_work_as_a_draft(scheme, labeller):
    bob = make_labeller("bob")
    rollout = make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    RolloutCheckout.objects.update(expires_at=now - timedelta(seconds=1))
    labelling_next(scheme=scheme, username="bob", now=now)
    with pytest.raises(ConflictError) as refused:
        label_submit(
            user=labeller,
            scheme=scheme,
            rollout=rollout,
            data=work(-1, 1, notes=["wrong", ""]),
            visit_started=now - timedelta(seconds=20),
            now=now,
        )
    assert refused.value.code == "leased"
    draft = LabelDraft.objects.get(user=labeller)
    assert (draft.ratings, draft.notes, draft.seconds_spent) == ([-1, 1], ["wrong", ""], pytest.approx(20))
    assert not ProcessRewardLabel.objects.exists()
    assert bob.label_drafts.count() == 0


def test_invalid_ratings_are_an_application_error_and_store_nothing(scheme, labeller):
    rollout = make_rollout()
    labelling_next(scheme=scheme, username="ann", now=timezone.now())
    with pytest.raises(ApplicationError) as refused:
        label_submit(
            user=labeller, scheme=scheme, rollout=rollout, data=work(1, None), visit_started=None, now=timezone.now()
        )
    assert refused.value.code == services.RATINGS_INVALID
    assert not ProcessRewardLabel.objects.exists()


def test_next_resumes_a_held_rollout_and_a_closed_scheme_claims_nothing_new(scheme):
    first, second = make_rollout(), make_rollout()
    now = timezone.now()
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk
    assert labelling_next(scheme=scheme, username="bob", now=now) == second.pk
    scheme.is_open = False
    assert labelling_next(scheme=scheme, username="ann", now=now) == first.pk  # what you hold, you may finish
    with pytest.raises(ApplicationError, match="closed"):
        labelling_next(scheme=scheme, username="cat", now=now)


def test_skipping_claims_the_next_before_giving_the_skipped_one_back(scheme, labeller):
    first, second = make_rollout(), make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    draft_save(user=labeller, scheme=scheme, rollout=first, data=work(1, None), visit_started=now, now=now)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=first.pk, now=now) == second.pk
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [second.pk]
    assert LabelDraft.objects.get().ratings == [1, None]  # kept (test_flow checks it all)
    # With nothing else left, the skipped one comes back.
    assert label_skip(user=labeller, scheme=scheme, rollout_id=second.pk, now=now) == first.pk


def test_skipping_the_last_rollout_gives_it_back_and_answers_none(scheme, labeller):
    only = make_rollout()
    now = timezone.now()
    labelling_next(scheme=scheme, username="ann", now=now)
    assert label_skip(user=labeller, scheme=scheme, rollout_id=only.pk, now=now) is None
    assert not RolloutCheckout.objects.exists()
