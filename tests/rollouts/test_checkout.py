"""The checkout lease and the active-learning order, at the service level with explicit time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from adapters.models import PRMAdapter
from rollouts.labels import label_create
from rollouts.models import RolloutCheckout
from rollouts.queue import checkout_claim, checkout_claim_wait
from rollouts.selectors import reference_prm_version_default
from tests.factories import make_label, make_rollout

pytestmark = pytest.mark.django_db


def claim(now, prm_version="v1", **kwargs):
    return checkout_claim(prm_version=prm_version, claimed_by="tester", now=now, **kwargs).ids


def test_claim_never_hands_out_a_leased_rollout():
    now = timezone.now()
    ids = [make_rollout().pk for _ in range(4)]
    assert claim(now, limit=3) == ids[:3]
    assert claim(now + timedelta(seconds=1), limit=3) == ids[3:]
    assert claim(now + timedelta(seconds=2)) == []


@override_settings(PRM_CHECKOUT_TIMEOUT_S=600)
def test_an_expired_lease_is_handed_out_again_and_taken_over():
    now = timezone.now()
    rollout = make_rollout()
    assert claim(now) == [rollout.pk]
    assert claim(now + timedelta(seconds=599)) == []
    assert claim(now + timedelta(seconds=600)) == [rollout.pk]
    lease = RolloutCheckout.objects.get()
    assert lease.expires_at == now + timedelta(seconds=1200)


def test_leases_are_per_prm_version():
    now = timezone.now()
    rollout = make_rollout()
    assert claim(now, "v1") == [rollout.pk]
    assert claim(now, "v2") == [rollout.pk]
    assert RolloutCheckout.objects.count() == 2


def test_a_labelled_rollout_is_not_handed_out_even_after_its_lease_expires():
    now = timezone.now()
    rollout = make_rollout()
    claim(now)
    label_create(rollout_id=rollout.pk, prm_version="v1", prm_output=[0.1, 0.2], worker="w")
    assert claim(now + timedelta(days=1)) == []


def test_claim_wait_gives_up_after_the_wait_without_sleeping_forever():
    clock = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    result = checkout_claim_wait(
        wait_s=2.5, poll_interval_s=1, clock=lambda: clock[0], sleep=sleep, prm_version="v", claimed_by="t"
    )
    assert result.rollouts == []
    assert slept == [1, 1, 0.5]


def test_claim_wait_returns_as_soon_as_something_is_claimable():
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        make_rollout()

    result = checkout_claim_wait(wait_s=60, poll_interval_s=0.5, sleep=sleep, prm_version="v", claimed_by="t")
    assert len(result.rollouts) == 1
    assert slept == [0.5]


def scored(prediction, ground_truth, final_reward, reference="prm-ref"):
    rollout = make_rollout(prediction=prediction, ground_truth=ground_truth, reasoning=["a", "b"])
    if final_reward is not None:
        make_label(rollout, reference, prm_output=[0.5, final_reward], final_reward=final_reward)
    return rollout.pk


def test_active_learning_puts_disagreements_first_strongest_first():
    now = timezone.now()
    agree_correct = scored(1, 1, 0.9)
    unscored = scored(1, 1, None)
    mild_false_positive = scored(0, 1, 0.6)  # wrong answer, PRM says right
    agree_wrong = scored(None, 1, 0.1)
    strong_false_negative = scored(1, 1, 0.05)  # right answer, PRM says wrong
    strong_false_positive = scored(None, 1, 0.97)  # no prediction counts as wrong
    order = claim(now, "labeller-v1", active_learning=True, reference_prm_version="prm-ref", limit=10)
    assert order == [
        strong_false_positive,
        strong_false_negative,
        mild_false_positive,
        unscored,
        agree_correct,
        agree_wrong,
    ]


def test_active_learning_compares_with_the_latest_label_of_the_reference():
    now = timezone.now()
    first = scored(1, 1, 0.9)
    second = scored(1, 1, 0.8)
    from rollouts.models import Rollout

    make_label(Rollout.objects.get(pk=second), "prm-ref", worker="later", prm_output=[0.5, 0.1], final_reward=0.1)
    assert claim(now, "lab", active_learning=True, reference_prm_version="prm-ref") == [second, first]


def test_the_default_reference_is_the_newest_adapter_other_than_the_version_asked():
    assert reference_prm_version_default(prm_version="lab") is None
    for version in ("prm-1", "prm-2", "lab"):
        PRMAdapter.objects.create(prm_version=version, base_model="b", worker="w", file="x.zip", sha256="0", size=1)
    assert reference_prm_version_default(prm_version="lab") == "prm-2"
    assert reference_prm_version_default(prm_version="other") == "lab"


def test_active_learning_uses_the_default_reference_over_http(api):
    PRMAdapter.objects.create(prm_version="prm-ref", base_model="b", worker="w", file="x.zip", sha256="0", size=1)
    agree = scored(1, 1, 0.9)
    disagree = scored(1, 1, 0.2)
    response = api.get("/rollout", {"prm_version": "lab", "active_learning": "True"})
    assert [r["id"] for r in response.json()] == [disagree, agree]


def test_without_active_learning_the_oldest_come_first():
    now = timezone.now()
    agree = scored(1, 1, 0.9)
    disagree = scored(1, 1, 0.2)
    assert claim(now, "lab") == [agree, disagree]


@pytest.mark.requires_postgres
def test_on_postgresql_candidates_are_locked_with_skip_locked():
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_rollout()
    with CaptureQueriesContext(connection) as queries:
        assert len(claim(timezone.now())) == 1
    assert any("FOR NO KEY UPDATE" in q["sql"] and "SKIP LOCKED" in q["sql"] for q in queries.captured_queries)
