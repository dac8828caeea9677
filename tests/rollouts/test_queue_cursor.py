"""The queue cursor: claims skip the labelled head of the queue, never skip an unlabelled or young rollout."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from rollouts.models import ProcessRewardLabel, Rollout, RolloutQueueCursor
from rollouts.queue import checkout_claim, queue_cursor_advance
from rollouts.selectors import queue_cursor_floor
from tests.factories import make_label, make_rollout

pytestmark = pytest.mark.django_db


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
