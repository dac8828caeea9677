"""The lease queue (``rollouts.queue``) at the service level with explicit time: the checkout lease, the
active-learning order, the long-poll, and the queue cursor that lets claims skip the labelled head of the queue
without ever skipping an unlabelled or young rollout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from adapters.models import PRMAdapter
from rollouts.labels import label_create
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout, RolloutQueueCursor
from rollouts.queue import checkout_claim, checkout_claim_wait, queue_cursor_advance
from rollouts.selectors import queue_cursor_floor, reference_prm_version_default
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
    make_rollout()
    with CaptureQueriesContext(connection) as queries:
        assert len(claim(timezone.now())) == 1
    assert any("FOR NO KEY UPDATE" in q["sql"] and "SKIP LOCKED" in q["sql"] for q in queries.captured_queries)


# --- the queue cursor ----------------------------------------------------------------------------------------------


def aged(n: int, minutes: int = 60) -> list[Rollout]:
    rollouts = [make_rollout() for _ in range(n)]
    Rollout.objects.filter(pk__in=[r.pk for r in rollouts]).update(
        created_at=timezone.now() - timedelta(minutes=minutes)
    )
    return rollouts


def test_the_cursor_moves_past_labelled_rollouts_to_the_first_unlabelled_one():
    rollouts = aged(5)
    for rollout in rollouts[:3]:
        make_label(rollout, "v1")
    make_label(rollouts[4], "v1")
    assert queue_cursor_advance(prm_version="v1", now=timezone.now()) == rollouts[3].pk
    assert queue_cursor_floor(prm_version="v1") == rollouts[3].pk
    assert queue_cursor_floor(prm_version="v2") == 0


def test_the_cursor_moves_past_the_last_rollout_when_all_are_labelled():
    rollouts = aged(3)
    for rollout in rollouts:
        make_label(rollout, "v1")
    assert queue_cursor_advance(prm_version="v1", now=timezone.now()) == rollouts[-1].pk + 1
    later = make_rollout()
    assert checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now()).ids == [later.pk]


def test_the_cursor_never_passes_a_young_rollout_even_if_labelled():
    old = aged(2)
    young = make_rollout()
    for rollout in [*old, young]:
        make_label(rollout, "v1")
    assert queue_cursor_advance(prm_version="v1", now=timezone.now()) == young.pk


def test_the_cursor_only_moves_forward():
    rollouts = aged(4)
    for rollout in rollouts[:2]:
        make_label(rollout, "v1")
    RolloutQueueCursor.objects.create(prm_version="v1", labelled_below=rollouts[3].pk)
    assert queue_cursor_advance(prm_version="v1", now=timezone.now()) == rollouts[3].pk


def test_claims_behind_a_moved_cursor_hand_out_what_is_left():
    rollouts = aged(6)
    for rollout in rollouts[:4]:
        make_label(rollout, "v1")
    claimed = checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now(), limit=10)
    assert claimed.ids == [r.pk for r in rollouts[4:]]
    assert queue_cursor_floor(prm_version="v1") == rollouts[4].pk


def test_deleting_a_label_in_the_admin_hands_its_rollout_out_again(staff_client):
    rollouts = aged(3)
    labels = [make_label(rollout, "v1") for rollout in rollouts]
    assert checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now()).rollouts == []
    assert queue_cursor_floor(prm_version="v1") == rollouts[-1].pk + 1
    response = staff_client.post(
        reverse("admin:rollouts_processrewardlabel_delete", args=[labels[1].pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not ProcessRewardLabel.objects.filter(pk=labels[1].pk).exists()
    claimed = checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now())
    assert claimed.ids == [rollouts[1].pk]


def test_bulk_deleting_labels_in_the_admin_rewinds_the_cursor(staff_client):
    rollouts = aged(3)
    labels = [make_label(rollout, "v1") for rollout in rollouts]
    checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now())
    response = staff_client.post(
        reverse("admin:rollouts_processrewardlabel_changelist"),
        {"action": "delete_selected", "_selected_action": [labels[0].pk, labels[2].pk], "post": "yes"},
    )
    assert response.status_code == 302
    claimed = checkout_claim(prm_version="v1", claimed_by="t", now=timezone.now(), limit=5)
    assert claimed.ids == [rollouts[0].pk, rollouts[2].pk]


def test_a_claim_for_a_version_without_a_scheme_reads_no_scope_gold_or_skips():
    ids = [make_rollout().pk for _ in range(3)]
    with CaptureQueriesContext(connection) as queries:
        assert claim(timezone.now(), prm_version="api-prm", limit=10) == ids
    sql = " ".join(query["sql"] for query in queries.captured_queries)
    assert "golditem" not in sql.lower() and "labelskip" not in sql.lower()
    assert RolloutQueueCursor.objects.filter(prm_version="api-prm").count() <= 1
