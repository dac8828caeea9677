"""The queue's two promises under interleaving, and the labelling rule: the first label of a rollout for a version wins.

Issue 7, items 1 and 2: a label committed between a claim's SELECT and its lease statement let a labelled rollout be
handed out again (PostgreSQL, 1 in ~30,000 hand-outs under 50 claimers); a worker that never claimed a rollout could
label it, and the holder's label was stored too. The window is widened here on purpose, so the race is certain.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from prmsite.core.errors import ConflictError
from rollouts import queue
from rollouts.labels import label_create
from rollouts.models import ProcessRewardLabel, RolloutCheckout
from rollouts.queue import checkout_claim, checkout_release
from tests.factories import make_label, make_rollout


def in_thread(target) -> threading.Thread:
    """Run ``target`` in a thread with its own database connection, closed at the end."""

    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def widen_the_window(monkeypatch, action) -> dict:
    """Make every claim run ``action`` in another thread between its SELECT and its lease statement, and give it
    up to two seconds to finish there (it cannot finish where a lock correctly holds it back)."""
    real_upsert = queue.lease_upsert
    seen: dict = {}

    def widened(**kwargs):
        thread = in_thread(action)
        thread.join(timeout=2)
        seen["thread"] = thread
        seen["finished_inside_the_window"] = not thread.is_alive()
        return real_upsert(**kwargs)

    monkeypatch.setattr(queue, "lease_upsert", widened)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_label_posted_inside_the_claim_window_never_leaves_a_rollout_leased_and_labelled(monkeypatch):
    rollout = make_rollout()
    errors: list[Exception] = []

    def post_label():
        try:
            label_create(
                rollout_id=rollout.pk, prm_version="v1", prm_output=[0.9, 0.9], worker="w", labelled_by="other"
            )
        except ConflictError as exc:
            errors.append(exc)

    seen = widen_the_window(monkeypatch, post_label)
    result = checkout_claim(prm_version="v1", claimed_by="claimer", now=timezone.now())
    seen["thread"].join(timeout=30)
    assert not seen["thread"].is_alive()
    labelled = ProcessRewardLabel.objects.filter(rollout=rollout, prm_version="v1").exists()
    # The label waits for the claim (row lock on PostgreSQL, the write lock on SQLite), then finds the rollout
    # leased to the claimer and is refused; before the fix it committed inside the window and both happened.
    assert not seen["finished_inside_the_window"]
    assert result.ids == [rollout.pk]
    assert not labelled
    assert errors and errors[0].code == "leased"


@pytest.mark.requires_postgres
@pytest.mark.django_db(transaction=True)
def test_the_lease_statement_itself_refuses_a_rollout_labelled_after_the_select(monkeypatch):
    # A label row written without label_create's lock (as by any other writer) commits inside the window on
    # PostgreSQL; the statement that takes the lease must still see it.
    rollout = make_rollout()
    seen = widen_the_window(monkeypatch, lambda: make_label(rollout, "v1"))
    result = checkout_claim(prm_version="v1", claimed_by="claimer", now=timezone.now())
    assert seen["finished_inside_the_window"]
    assert result.ids == []
    assert not RolloutCheckout.objects.exists()


def test_the_lease_statement_refuses_labelled_rollouts(db):
    labelled, free = make_rollout(), make_rollout()
    make_label(labelled, "v1")
    leased = queue.lease_upsert(
        rollout_ids=[labelled.pk, free.pk], prm_version="v1", claimed_by="c", now=timezone.now()
    )
    assert leased == {free.pk}
    # Another version's label does not count.
    assert queue.lease_upsert(rollout_ids=[labelled.pk], prm_version="v2", claimed_by="c", now=timezone.now()) == {
        labelled.pk
    }


def label(rollout, worker="w", labelled_by=None, prm_output=(0.9, 0.1), **kwargs):
    return label_create(
        rollout_id=rollout.pk,
        prm_version="v1",
        prm_output=list(prm_output),
        worker=worker,
        labelled_by=labelled_by,
        **kwargs,
    )


def test_the_first_label_wins_and_a_second_worker_is_told_which(db):
    rollout = make_rollout()
    first, created = label(rollout, worker="a")
    assert created
    with pytest.raises(ConflictError) as refused:
        label(rollout, worker="b", prm_output=(0.2, 0.3))
    assert refused.value.code == "already_labelled"
    assert refused.value.extra["id"] == first.pk
    assert ProcessRewardLabel.objects.count() == 1


def test_the_same_label_again_is_the_same_label_and_other_content_is_a_conflict(db):
    rollout = make_rollout()
    first, _ = label(rollout, worker="a")
    again, created = label(rollout, worker="a")
    assert (again.pk, created) == (first.pk, False)
    with pytest.raises(ConflictError) as refused:
        label(rollout, worker="a", prm_output=(0.5, 0.5))
    assert refused.value.code == "conflict"


def test_a_rollout_leased_to_another_caller_cannot_be_labelled_by_someone_else(db):
    rollout = make_rollout()
    now = timezone.now()
    assert checkout_claim(prm_version="v1", claimed_by="holder", now=now).ids == [rollout.pk]
    with pytest.raises(ConflictError) as refused:
        label(rollout, labelled_by="intruder", now=now)
    assert refused.value.code == "leased"
    assert RolloutCheckout.objects.filter(claimed_by="holder").exists()  # the holder's lease stands
    # The holder labels it; its lease ends.
    label(rollout, labelled_by="holder", now=now)
    assert not RolloutCheckout.objects.exists()


def test_after_the_lease_expires_anyone_may_label_first(db):
    rollout = make_rollout()
    now = timezone.now()
    checkout_claim(prm_version="v1", claimed_by="slow-holder", now=now)
    later = now + timedelta(days=1)
    _, created = label(rollout, labelled_by="someone-else", now=later)
    assert created
    with pytest.raises(ConflictError):
        label(rollout, worker="slow-holder", labelled_by="slow-holder", now=later)


def test_a_caller_releases_only_its_own_leases(db):
    mine, theirs = make_rollout(), make_rollout()
    now = timezone.now()
    checkout_claim(prm_version="v1", claimed_by="me", now=now, limit=1)
    checkout_claim(prm_version="v1", claimed_by="them", now=now, limit=1)
    assert checkout_release(prm_version="v1", rollout_ids=[mine.pk, theirs.pk], claimed_by="me") == 1
    assert checkout_claim(prm_version="v1", claimed_by="other", now=now).ids == [mine.pk]
    assert RolloutCheckout.objects.get(rollout=theirs).claimed_by == "them"


@pytest.mark.django_db(transaction=True)
def test_concurrent_labels_from_two_workers_store_exactly_one():
    rollout = make_rollout()
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def post(worker):
        def run():
            barrier.wait()
            try:
                label(rollout, worker=worker, prm_output=(0.1 * len(worker), 0.2))
                outcomes.append("stored")
            except ConflictError as exc:
                outcomes.append(exc.code)

        return run

    threads = [in_thread(post(name)) for name in ("a", "bb", "ccc", "dddd")]
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["already_labelled"] * 3 + ["stored"]
    assert ProcessRewardLabel.objects.count() == 1
