"""Writes of the active-learning loop: rollouts in, checkouts (leases) out, process reward labels in.

The checkout claim is the delicate part; see ``checkout_claim``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from prmsite.errors import ApplicationError, ConflictError, NotFoundError
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout, RolloutQueueCursor
from rollouts.selectors import (
    queue_cursor_candidate,
    queue_cursor_floor,
    reference_prm_version_default,
    rollout_active_learning_order,
    rollout_claimable,
)

ROLLOUT_NOT_FOUND = "No rollout with id {rollout_id}."
ROOT_ID_WITHOUT_FOREST = "root_id names a tree of a forest: send forest_name with it."
NO_STEPS = "reasoning needs at least one step."
OUTPUT_LENGTH_MISMATCH = (
    "prm_output has {given} values but rollout {rollout_id} has {steps} reasoning steps; send one value per step."
)
OUTPUT_NOT_FINITE = "prm_output must hold finite numbers (floats from a PRM, 0/1/2 from a labeller)."
WAIT_NOT_FINITE = "wait must be a finite number of seconds."
EXPLANATIONS_NOT_TEXT = "explanations must be a list of strings."
LABEL_CONFLICT = (
    "Worker {worker!r} already labelled rollout {rollout_id} for prm_version {prm_version!r} (label {label_id}) "
    "with different content; a repeated label must be identical."
)

# How many rollouts one GET /rollout hands out when the caller does not say, and at most.
CLAIM_LIMIT_DEFAULT = 16
CLAIM_LIMIT_MAX = 1000
# Seconds between two claim attempts while a long-poll waits.
CLAIM_POLL_INTERVAL_S = 0.5
# The queue cursor never passes a rollout younger than this: a transaction inserting a rollout with a smaller id
# (ids are allocated before commit on PostgreSQL) has long committed by then.
QUEUE_CURSOR_SETTLE = timedelta(minutes=5)
# Rounds of a claim on PostgreSQL when rollouts it selected were leased by a concurrent claim meanwhile.
_CLAIM_ROUNDS = 3


def rollout_create(
    *,
    model: str,
    example: str,
    reasoning: Sequence[str],
    prediction: int | None,
    ground_truth: int,
    worker: str,
    attributes: dict[str, Any] | None = None,
    forest_name: str | None = None,
    root_id: int | None = None,
) -> Rollout:
    """Store a rollout; with ``forest_name``, also insert its steps into that forest's trie and link the leaf.

    All or nothing: a forest that rejects the rollout (unknown forest or root, example matching no tree or several,
    ground truth that differs from the tree's) leaves no rollout and no node behind.
    """
    if not reasoning:
        raise ApplicationError(NO_STEPS)
    if root_id is not None and forest_name is None:
        raise ApplicationError(ROOT_ID_WITHOUT_FOREST)
    with transaction.atomic():
        node = None
        if forest_name is not None:
            from forests.trie import forest_rollout_insert

            node = forest_rollout_insert(
                forest_name=forest_name,
                example=example,
                steps=list(reasoning),
                prediction=prediction,
                ground_truth=ground_truth,
                root_id=root_id,
            )
        return Rollout.objects.create(
            model=model,
            example=example,
            reasoning=list(reasoning),
            prediction=prediction,
            ground_truth=ground_truth,
            worker=worker,
            attributes=attributes or {},
            forest_id=node.forest_id if node is not None else None,
            node=node,
        )


# Only the quoted table name and the placeholders of the VALUES rows are interpolated; every value is a parameter.
_LEASE_UPSERT_SQL = (
    "INSERT INTO {table} (rollout_id, prm_version, expires_at, claimed_by, created_at) VALUES {rows} "
    "ON CONFLICT (prm_version, rollout_id) DO UPDATE SET expires_at = excluded.expires_at, "
    "claimed_by = excluded.claimed_by, created_at = excluded.created_at "
    "WHERE {table}.expires_at <= %s RETURNING rollout_id"
)


def _lease_upsert(*, rollout_ids: Sequence[int], prm_version: str, claimed_by: str, now: datetime) -> set[int]:
    """Lease these rollouts for ``prm_version``; return the ids actually leased.

    One statement: a rollout with no checkout row gets one; a row whose lease has expired is taken over; a row with a
    live lease is left alone and its id is not returned. On PostgreSQL the conflict check sees the latest committed
    row (and waits for an uncommitted one), so a lease written by a concurrent claim since our SELECT is never
    overwritten. That is what makes the claim safe; ``skip_locked`` only keeps concurrent claims from colliding.
    """
    if not rollout_ids:
        return set()
    ops = connection.ops
    table = ops.quote_name(RolloutCheckout._meta.db_table)
    expires_at = ops.adapt_datetimefield_value(now + timedelta(seconds=settings.PRM_CHECKOUT_TIMEOUT_S))
    created_at = ops.adapt_datetimefield_value(now)
    now_value = ops.adapt_datetimefield_value(now)
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rollout_ids))
    params: list[Any] = []
    for rollout_id in sorted(rollout_ids):  # a fixed order, so two claims never wait on each other in a cycle
        params += [rollout_id, prm_version, expires_at, claimed_by, created_at]
    params.append(now_value)
    sql = _LEASE_UPSERT_SQL.format(table=table, rows=rows)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


def checkout_claim(
    *,
    prm_version: str,
    claimed_by: str,
    now: datetime,
    limit: int = CLAIM_LIMIT_DEFAULT,
    active_learning: bool = False,
    reference_prm_version: str | None = None,
) -> list[Rollout]:
    """Hand out up to ``limit`` rollouts not labelled for ``prm_version`` and not leased for it at ``now``, and lease
    them until ``now + PRM_CHECKOUT_TIMEOUT_S``.

    Invariant: while a lease is live, its rollout is handed to nobody else for that ``prm_version``, whatever the
    number of concurrent callers. PostgreSQL: candidates are locked with ``FOR NO KEY UPDATE SKIP LOCKED`` (concurrent
    claims take disjoint rows, and label inserts, which only take a key-share lock, never wait), then leased by a
    conditional upsert that refuses rows leased meanwhile. SQLite: the transaction holds the write lock from its start
    (``BEGIN IMMEDIATE``), so the select and the upsert are one atomic step.

    With ``active_learning`` the order is that of ``rollout_active_learning_order`` against
    ``reference_prm_version`` (default: ``reference_prm_version_default``); otherwise oldest first.
    """
    if active_learning and reference_prm_version is None:
        reference_prm_version = reference_prm_version_default(prm_version=prm_version)
    floor = queue_cursor_advance(prm_version=prm_version, now=now)

    def candidates():
        queryset = rollout_claimable(prm_version=prm_version, now=now, above_id=floor)
        if active_learning:
            return rollout_active_learning_order(queryset=queryset, reference_prm_version=reference_prm_version)
        return queryset.order_by("id")

    # A plain read first: when there is nothing to hand out (a long-poll's usual case), take no lock at all.
    if not candidates().exists():
        return []

    claimed: list[int] = []
    with transaction.atomic():
        for _ in range(_CLAIM_ROUNDS):
            wanted = limit - len(claimed)
            queryset = candidates().exclude(pk__in=claimed)
            if connection.features.has_select_for_update_skip_locked:
                queryset = queryset.select_for_update(skip_locked=True, no_key=True, of=("self",))
            ids = list(queryset.values_list("id", flat=True)[:wanted])
            if not ids:
                break
            leased = _lease_upsert(rollout_ids=ids, prm_version=prm_version, claimed_by=claimed_by, now=now)
            claimed += [i for i in ids if i in leased]
            if len(claimed) >= limit or len(leased) == len(ids):
                break
    by_id = Rollout.objects.select_related("forest", "node").in_bulk(claimed)
    return [by_id[i] for i in claimed]


def queue_cursor_advance(*, prm_version: str, now: datetime) -> int:
    """Move the queue cursor of ``prm_version`` past the rollouts labelled since it last moved; return where it is.

    Only forward (concurrent advances keep the largest), and never past a rollout created less than
    ``QUEUE_CURSOR_SETTLE`` before ``now``. Autocommit statements, outside any claim transaction.
    """
    floor = queue_cursor_floor(prm_version=prm_version)
    target = queue_cursor_candidate(prm_version=prm_version, floor=floor, settled_before=now - QUEUE_CURSOR_SETTLE)
    if target is None or target <= floor:
        return floor
    updated = RolloutQueueCursor.objects.filter(prm_version=prm_version, labelled_below__lt=target).update(
        labelled_below=target, updated_at=now
    )
    if not updated and floor == 0:
        try:
            with transaction.atomic():
                RolloutQueueCursor.objects.create(prm_version=prm_version, labelled_below=target)
        except IntegrityError:  # a concurrent claim created it: move it forward instead
            RolloutQueueCursor.objects.filter(prm_version=prm_version, labelled_below__lt=target).update(
                labelled_below=target, updated_at=now
            )
    return target


def queue_cursor_rewind(*, prm_version: str, rollout_id: int) -> None:
    """Put the cursor of ``prm_version`` back to ``rollout_id`` at most: call it when a label of that rollout is
    deleted, so the rollout is handed out again."""
    RolloutQueueCursor.objects.filter(prm_version=prm_version, labelled_below__gt=rollout_id).update(
        labelled_below=rollout_id
    )


def label_delete_many(*, labels: Sequence[ProcessRewardLabel]) -> int:
    """Delete labels and rewind the queue cursors they were behind; answer how many were deleted."""
    with transaction.atomic():
        lowest: dict[str, int] = {}
        for label in labels:
            lowest[label.prm_version] = min(lowest.get(label.prm_version, label.rollout_id), label.rollout_id)
        deleted, _ = ProcessRewardLabel.objects.filter(pk__in=[label.pk for label in labels]).delete()
        for prm_version, rollout_id in lowest.items():
            queue_cursor_rewind(prm_version=prm_version, rollout_id=rollout_id)
    return deleted


def checkout_claim_wait(
    *,
    wait_s: float,
    poll_interval_s: float = CLAIM_POLL_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    **claim: Any,
) -> list[Rollout]:
    """``checkout_claim`` retried every ``poll_interval_s`` until it hands something out or ``wait_s`` seconds have
    passed; then ``[]``. Never waits longer than ``wait_s`` (plus one claim). ``claim`` is passed on, without ``now``:
    every attempt claims at the current time."""
    if not math.isfinite(wait_s):
        raise ApplicationError(WAIT_NOT_FINITE)
    deadline = clock() + max(0.0, wait_s)
    while True:
        claimed = checkout_claim(now=timezone.now(), **claim)
        remaining = deadline - clock()
        if claimed or remaining <= 0:
            return claimed
        sleep(min(poll_interval_s, remaining))


def _reward_values_check(prm_output: Sequence[Any]) -> list[float | int]:
    values = list(prm_output)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ApplicationError(OUTPUT_NOT_FINITE)
    return values


def _label_matches(label: ProcessRewardLabel, *, prm_output: list, explanations: list[str] | None) -> bool:
    return list(label.prm_output) == list(prm_output) and label.explanations == explanations


def label_create(
    *,
    rollout_id: int,
    prm_version: str,
    prm_output: Sequence[float | int],
    worker: str,
    explanations: Sequence[str] | None = None,
) -> tuple[ProcessRewardLabel, bool]:
    """Store a process reward label and end the rollout's checkout for ``prm_version``; return it and whether it is
    new.

    ``prm_output`` has one finite number per reasoning step. Idempotent per (rollout, prm_version, worker): the same
    label posted again returns the stored one (``created`` False); different content for that triple is a conflict.
    """
    values = _reward_values_check(prm_output)
    if explanations is not None:
        explanations = list(explanations)
        if not all(isinstance(text, str) for text in explanations):
            raise ApplicationError(EXPLANATIONS_NOT_TEXT)
    with transaction.atomic():
        rollout = Rollout.objects.filter(pk=rollout_id).only("id", "reasoning").first()
        if rollout is None:
            raise NotFoundError(ROLLOUT_NOT_FOUND.format(rollout_id=rollout_id), extra={"rollout_id": rollout_id})
        if len(values) != len(rollout.reasoning):
            raise ApplicationError(
                OUTPUT_LENGTH_MISMATCH.format(given=len(values), rollout_id=rollout_id, steps=len(rollout.reasoning))
            )
        key = {"rollout_id": rollout_id, "prm_version": prm_version, "worker": worker}
        label = ProcessRewardLabel.objects.filter(**key).first()
        created = False
        if label is None:
            try:
                with transaction.atomic():
                    label = ProcessRewardLabel.objects.create(
                        **key,
                        prm_output=values,
                        explanations=explanations,
                        final_reward=float(values[-1]) if values else None,
                    )
                created = True
            except IntegrityError:
                # The same worker's retry raced its first attempt: the first one won.
                label = ProcessRewardLabel.objects.get(**key)
        if not created and not _label_matches(label, prm_output=values, explanations=explanations):
            raise ConflictError(
                LABEL_CONFLICT.format(worker=worker, rollout_id=rollout_id, prm_version=prm_version, label_id=label.pk),
                extra={"id": label.pk},
            )
        RolloutCheckout.objects.filter(rollout_id=rollout_id, prm_version=prm_version).delete()
    return label, created
