"""The lease queue of the active-learning loop: checkouts (leases) of rollouts for a ``prm_version``.

Design note. Labels are posted by ``rollouts.labels``; the rules below are shared by both modules.

The rules, which every labeller (PRM inference controllers, AI judges, people) shares:

- A claim (``checkout_claim``) leases rollouts for one ``prm_version``: while the lease is live nobody else gets the
  rollout for that version, and a rollout that has a label for the version is never leased again. Both are enforced
  by the one statement that writes the leases, so no interleaving of concurrent claims and labels can break them.
- The first label of a rollout for a version wins (``label_create``). A later label from another worker is refused
  (409, ``already_labelled``, with the stored label's id); so is a label for a rollout that is leased to another
  caller (409, ``leased``), since that caller is labelling it. The same label posted again by the same worker answers
  the same id (a retry is safe); different content from that worker is a 409 (``conflict``).
- A worker is named by its caller: a label's identity is the account that posted it (``labelled_by``: the token's
  user, the person logged in on the labelling pages; empty for trusted code) together with the ``worker`` string it
  gave. ``worker`` is the specification's free string and stands for nothing beyond that caller, so a token posting
  ``"worker": "dave"`` neither is nor blocks the person dave: their labels are different callers' labels.
- A caller may end its own leases early (``checkout_release``): a worker shutting down gives its work back.
- A labelling scheme may ask for K labellers per rollout (``LabellingScheme.labels_per_rollout``): then a rollout is
  handed to K different callers, never twice to one, and takes K labels, one per caller. Claims of such a scheme are
  serialised on its row; everything else stays as for K = 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from prmsite.core.errors import ApplicationError
from rollouts.models import (
    LabellingScheme,
    LabelSkip,
    ProcessRewardLabel,
    Rollout,
    RolloutCheckout,
    RolloutQueueCursor,
)
from rollouts.scope import scope_cursor_key_prefix
from rollouts.selectors import (
    ClaimScope,
    claim_scope,
    queue_cursor_candidate,
    queue_cursor_read,
    reference_prm_version_default,
    rollout_claim_candidates,
    rollout_claim_candidates_overlap,
)

WAIT_NOT_FINITE = "wait must be a finite number of seconds."

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


# Only quoted table names and the placeholders of the VALUES rows are interpolated; every value is a parameter. The
# VALUES columns are column1…column5 on both databases. The WHERE clause refuses a rollout that has a label for the
# version: checked by the statement that takes the lease, it sees every label committed before the statement began.
_LEASE_UPSERT_SQL = (
    "INSERT INTO {checkout} (rollout_id, prm_version, slot, expires_at, claimed_by, created_at) "
    "SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 FROM (VALUES {rows}) AS v "
    "WHERE {labelled} "
    "ON CONFLICT (prm_version, rollout_id, slot) DO UPDATE SET expires_at = excluded.expires_at, "
    "claimed_by = excluded.claimed_by, created_at = excluded.created_at "
    "WHERE {checkout}.expires_at <= %s RETURNING rollout_id"
)
# Once per rollout: no label for the version yet.
_NOT_LABELLED_SQL = (
    "NOT EXISTS (SELECT 1 FROM {label} AS l WHERE l.rollout_id = v.column1 AND l.prm_version = v.column2)"
)
# K labellers per rollout: fewer than K labels, none of them by this claimer.
_OPEN_TO_CLAIMER_SQL = (
    "(SELECT COUNT(*) FROM {label} AS l WHERE l.rollout_id = v.column1 AND l.prm_version = v.column2) < %s "
    "AND NOT EXISTS (SELECT 1 FROM {label} AS l WHERE l.rollout_id = v.column1 AND l.prm_version = v.column2 "
    "AND l.labelled_by = v.column5)"
)


def lease_upsert(
    *,
    rollout_ids: Sequence[int],
    prm_version: str,
    claimed_by: str,
    now: datetime,
    slots: dict[int, int] | None = None,
    labels_wanted: int = 1,
) -> set[int]:
    """Lease these rollouts for ``prm_version`` (in ``slots[rollout_id]``, slot 0 by default); return the ids leased.

    One statement: a rollout with a label for the version is refused (with K = ``labels_wanted`` > 1: a rollout with
    K labels, or with one by this claimer); a rollout with no checkout row in its slot gets one; a row whose lease has
    expired is taken over; a row with a live lease is left alone and its id is not returned. On
    PostgreSQL the conflict check sees the latest committed row (and waits for an uncommitted one), so a lease written
    by a concurrent claim since our SELECT is never overwritten; a label being written concurrently holds the
    rollout's row lock (``label_create``), which our SELECT ... FOR NO KEY UPDATE either skipped or holds. That is
    what makes the claim safe; ``skip_locked`` only keeps concurrent claims from colliding.
    """
    if not rollout_ids:
        return set()
    ops = connection.ops
    checkout = ops.quote_name(RolloutCheckout._meta.db_table)
    label = ops.quote_name(ProcessRewardLabel._meta.db_table)
    expires_at = ops.adapt_datetimefield_value(now + timedelta(seconds=settings.PRM_CHECKOUT_TIMEOUT_S))
    created_at = ops.adapt_datetimefield_value(now)
    now_value = ops.adapt_datetimefield_value(now)
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rollout_ids))
    params: list[Any] = []
    for rollout_id in sorted(rollout_ids):  # a fixed order, so two claims never wait on each other in a cycle
        slot = (slots or {}).get(rollout_id, 0)
        params += [rollout_id, prm_version, slot, expires_at, claimed_by, created_at]
    if labels_wanted == 1:
        labelled = _NOT_LABELLED_SQL.format(label=label)
    else:
        labelled = _OPEN_TO_CLAIMER_SQL.format(label=label)
        params.append(labels_wanted)
    params.append(now_value)
    sql = _LEASE_UPSERT_SQL.format(checkout=checkout, label=label, rows=rows, labelled=labelled)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


@dataclass(frozen=True)
class ClaimResult:
    """What a claim handed out. ``body`` is the JSON answer, rendered inside the claim's transaction when an encoder
    was given (so leases are never written for an answer that then fails to render)."""

    rollouts: list[Rollout] = field(default_factory=list)
    body: bytes | None = None
    released: int = 0  # leased, then given back because the answer had reached max_bytes

    @property
    def ids(self) -> list[int]:
        return [rollout.pk for rollout in self.rollouts]


def _answer_bound(
    rollouts: list[Rollout], *, encode: Callable[[Rollout], bytes], max_bytes: int | None
) -> tuple[list[Rollout], list[bytes]]:
    """The first rollouts whose encoded answer fits ``max_bytes`` (always at least one), and their encodings."""
    kept: list[Rollout] = []
    encoded: list[bytes] = []
    size = 2  # the brackets of the JSON list
    for rollout in rollouts:
        item = encode(rollout)
        if kept and max_bytes is not None and size + len(item) + 1 > max_bytes:
            break
        kept.append(rollout)
        encoded.append(item)
        size += len(item) + 1
    return kept, encoded


def checkout_claim(
    *,
    prm_version: str,
    claimed_by: str,
    now: datetime,
    limit: int = CLAIM_LIMIT_DEFAULT,
    active_learning: bool = False,
    reference_prm_version: str | None = None,
    encode: Callable[[Rollout], bytes] | None = None,
    max_bytes: int | None = None,
) -> ClaimResult:
    """Hand out up to ``limit`` rollouts not labelled for ``prm_version`` and not leased for it at ``now``, and lease
    them until ``now + PRM_CHECKOUT_TIMEOUT_S``.

    Invariants: while a lease is live, its rollout is handed to nobody else for that ``prm_version``, and a labelled
    rollout is never leased, whatever the number of concurrent callers. PostgreSQL: candidates are locked with
    ``FOR NO KEY UPDATE SKIP LOCKED`` (concurrent claims take disjoint rows), then leased by a conditional upsert that
    refuses rows leased meanwhile and rollouts labelled meanwhile. SQLite: the transaction holds the write lock from
    its start (``BEGIN IMMEDIATE``), so the select and the upsert are one atomic step.

    A version with a labelling scheme hands out only the rollouts in the scheme's scope (``rollouts.scope``: its
    forests, models and outcome, never its gold items), read once per claim; and the rollouts ``claimed_by`` skipped
    in it (``LabelSkip``) come to them only when nothing else is claimable for them, the oldest skip first.

    With ``encode``, the answer is rendered inside the transaction (``ClaimResult.body``): if rendering fails, no
    lease is written; with ``max_bytes`` the answer stops before it would exceed that size (it always holds at least
    one rollout) and the leases of the rollouts left out are given back in the same transaction.

    With ``active_learning`` the order is that of ``rollout_active_learning_order`` against
    ``reference_prm_version`` (default: ``reference_prm_version_default``); otherwise oldest first.
    """
    if active_learning and reference_prm_version is None:
        reference_prm_version = reference_prm_version_default(prm_version=prm_version)
    scope = claim_scope(prm_version=prm_version)
    skipped = scope.skipped_by(claimed_by)
    if scope.labels_wanted > 1:
        return _checkout_claim_overlap(
            scope=scope,
            claimed_by=claimed_by,
            now=now,
            limit=limit,
            active_learning=active_learning,
            reference_prm_version=reference_prm_version,
            encode=encode,
            max_bytes=max_bytes,
        )
    floor = queue_cursor_advance(prm_version=prm_version, now=now, scope=scope)

    def candidates():
        return rollout_claim_candidates(
            prm_version=prm_version,
            now=now,
            above_id=floor,
            active_learning=active_learning,
            reference_prm_version=reference_prm_version,
            scope=scope.condition,
        )

    # A plain read first: when there is nothing to hand out (a long-poll's usual case), take no lock at all.
    if not candidates().exists():
        return ClaimResult(body=b"[]" if encode is not None else None)

    claimed: list[int] = []
    with transaction.atomic():
        for queryset in _skipped_last(candidates, skipped):
            _lease_rounds(queryset, claimed, limit=limit, prm_version=prm_version, claimed_by=claimed_by, now=now)
            if len(claimed) >= limit:
                break
        return _claim_answer(
            claimed, prm_version=prm_version, claimed_by=claimed_by, encode=encode, max_bytes=max_bytes
        )


def _skipped_last(
    candidates: Callable[[], QuerySet[Rollout]], skipped: QuerySet[LabelSkip] | None
) -> Iterator[QuerySet[Rollout]]:
    """The candidates in two parts: those the claimer did not skip, then those they skipped, the oldest skip first.
    Each part is bounded by the caller's LIMIT; the second is ordered among the claimer's skips only."""
    if skipped is None:
        yield candidates()
        return
    yield candidates().exclude(pk__in=skipped.values("rollout_id"))
    skipped_at = skipped.filter(rollout_id=OuterRef("pk")).values("skipped_at")[:1]
    yield (
        candidates()
        .filter(pk__in=skipped.values("rollout_id"))
        .annotate(skipped_at=Subquery(skipped_at))
        .order_by("skipped_at", "id")
    )


def _lease_rounds(
    queryset: QuerySet[Rollout], claimed: list[int], *, limit: int, prm_version: str, claimed_by: str, now: datetime
) -> None:
    """Lease rollouts of ``queryset`` (in its order) until ``claimed`` holds ``limit`` or none is left; appends the
    ids leased to ``claimed``. Inside the claim's transaction."""
    for _ in range(_CLAIM_ROUNDS):
        wanted = limit - len(claimed)
        if wanted <= 0:
            return
        selected = queryset.exclude(pk__in=claimed)
        if connection.features.has_select_for_update_skip_locked:
            selected = selected.select_for_update(skip_locked=True, no_key=True, of=("self",))
        ids = list(selected.values_list("id", flat=True)[:wanted])
        if not ids:
            return
        leased = lease_upsert(rollout_ids=ids, prm_version=prm_version, claimed_by=claimed_by, now=now)
        claimed += [i for i in ids if i in leased]
        if len(leased) == len(ids):
            return


def _claim_answer(
    claimed: list[int],
    *,
    prm_version: str,
    claimed_by: str,
    encode: Callable[[Rollout], bytes] | None,
    max_bytes: int | None,
) -> ClaimResult:
    """Load the claimed rollouts and, with an encoder, render the answer and give back what it leaves out; inside
    the claim's transaction."""
    by_id = Rollout.objects.select_related("forest", "node").in_bulk(claimed)
    rollouts = [by_id[i] for i in claimed]
    if encode is None:
        return ClaimResult(rollouts=rollouts)
    kept, encoded = _answer_bound(rollouts, encode=encode, max_bytes=max_bytes)
    left_out = [rollout.pk for rollout in rollouts[len(kept) :]]
    if left_out:
        RolloutCheckout.objects.filter(prm_version=prm_version, rollout_id__in=left_out, claimed_by=claimed_by).delete()
    return ClaimResult(rollouts=kept, body=b"[" + b",".join(encoded) + b"]", released=len(left_out))


def _checkout_claim_overlap(
    *,
    scope: ClaimScope,
    claimed_by: str,
    now: datetime,
    limit: int,
    active_learning: bool,
    reference_prm_version: str | None,
    encode: Callable[[Rollout], bytes] | None,
    max_bytes: int | None,
) -> ClaimResult:
    """``checkout_claim`` for a scheme asking for K = ``scope.labels_wanted`` labellers per rollout: rollouts in its
    scope with fewer than K labels and live leases, none of them the claimer's, each leased in a free slot; the
    claimer's skipped rollouts last.

    Claims of the scheme are serialised by a lock on its row (SQLite: by the write lock), and the candidates are
    locked like any claim's, so labels of them wait: the counts read here hold until the leases are written. The
    queue cursor is not used: a rollout stays open until its K-th label.
    """
    prm_version = scope.prm_version
    labels_wanted = scope.labels_wanted
    with transaction.atomic():
        LabellingScheme.objects.select_for_update().filter(prm_version=prm_version).first()

        def candidates() -> QuerySet[Rollout]:
            return rollout_claim_candidates_overlap(
                prm_version=prm_version,
                now=now,
                labels_wanted=labels_wanted,
                claimed_by=claimed_by,
                active_learning=active_learning,
                reference_prm_version=reference_prm_version,
                scope=scope.condition,
            )

        ids: list[int] = []
        for queryset in _skipped_last(candidates, scope.skipped_by(claimed_by)):
            if connection.features.has_select_for_update_skip_locked:
                queryset = queryset.select_for_update(skip_locked=True, no_key=True, of=("self",))
            ids += queryset.values_list("id", flat=True)[: limit - len(ids)]
            if len(ids) >= limit:
                break
        taken: dict[int, set[int]] = {}
        for rollout_id, slot in RolloutCheckout.objects.filter(
            prm_version=prm_version, rollout_id__in=ids, expires_at__gt=now
        ).values_list("rollout_id", "slot"):
            taken.setdefault(rollout_id, set()).add(slot)
        slots = {
            rollout_id: min(set(range(labels_wanted)) - taken.get(rollout_id, set()))
            for rollout_id in ids
            if len(taken.get(rollout_id, ())) < labels_wanted
        }
        leased = lease_upsert(
            rollout_ids=list(slots),
            prm_version=prm_version,
            claimed_by=claimed_by,
            now=now,
            slots=slots,
            labels_wanted=labels_wanted,
        )
        claimed = [rollout_id for rollout_id in ids if rollout_id in leased]
        return _claim_answer(
            claimed, prm_version=prm_version, claimed_by=claimed_by, encode=encode, max_bytes=max_bytes
        )


def checkout_release(*, prm_version: str, rollout_ids: Sequence[int], claimed_by: str) -> int:
    """End ``claimed_by``'s leases of these rollouts for ``prm_version``, so others may claim them at once; answer
    how many were ended. Leases held by others, and ids that are not leased, are left alone."""
    deleted, _ = RolloutCheckout.objects.filter(
        prm_version=prm_version, rollout_id__in=list(rollout_ids), claimed_by=claimed_by
    ).delete()
    return deleted


def checkout_renew(*, prm_version: str, rollout_id: int, claimed_by: str, now: datetime) -> datetime | None:
    """Extend ``claimed_by``'s live lease of this rollout to ``now + PRM_CHECKOUT_TIMEOUT_S``; answer the new expiry,
    or None when ``claimed_by`` holds no live lease of it (an expired lease is never revived: another claim may have
    been promised its place). A person still working on a rollout keeps it this way."""
    expires_at = now + timedelta(seconds=settings.PRM_CHECKOUT_TIMEOUT_S)
    renewed = RolloutCheckout.objects.filter(
        prm_version=prm_version, rollout_id=rollout_id, claimed_by=claimed_by, expires_at__gt=now
    ).update(expires_at=expires_at)
    return expires_at if renewed else None


def queue_cursor_advance(*, prm_version: str, now: datetime, scope: ClaimScope | None = None) -> int:
    """Move the queue cursor of ``prm_version`` past the rollouts labelled since it last moved; return where it is.

    Under a scheme's scope (``scope``, default: the version's, read here) the cursor also passes rollouts out of the
    scope, which will never be labelled for it, and it is that scope's own cursor (``ClaimScope.cursor_key``): a
    scope changed since never trusts it. It never passes an unlabelled rollout in scope.

    Only forward (concurrent advances keep the largest), and never past a rollout created less than
    ``QUEUE_CURSOR_SETTLE`` before ``now``. Autocommit statements, outside any claim transaction.
    """
    if scope is None:
        scope = claim_scope(prm_version=prm_version)
    key = scope.cursor_key or prm_version
    floor, exists = queue_cursor_read(prm_version=prm_version, cursor_key=key)
    target = queue_cursor_candidate(
        prm_version=prm_version, floor=floor, settled_before=now - QUEUE_CURSOR_SETTLE, scope=scope.condition
    )
    if target is None or target <= floor:
        return floor
    updated = RolloutQueueCursor.objects.filter(prm_version=key, labelled_below__lt=target).update(
        labelled_below=target, updated_at=now
    )
    if not updated and not exists:
        try:
            with transaction.atomic():
                RolloutQueueCursor.objects.create(prm_version=key, labelled_below=target)
        except IntegrityError:  # a concurrent claim created it: move it forward instead
            RolloutQueueCursor.objects.filter(prm_version=key, labelled_below__lt=target).update(
                labelled_below=target, updated_at=now
            )
    return target


def queue_cursor_rewind(*, prm_version: str, rollout_id: int) -> None:
    """Put every cursor of ``prm_version`` (its own and its scheme's, for every scope) back to ``rollout_id`` at
    most: call it when a label of that rollout is deleted, or when it stops being a gold item of the version's scheme,
    so the rollout is handed out again."""
    RolloutQueueCursor.objects.filter(
        Q(prm_version=prm_version) | Q(prm_version__startswith=scope_cursor_key_prefix(prm_version)),
        labelled_below__gt=rollout_id,
    ).update(labelled_below=rollout_id)


def checkout_claim_wait(
    *,
    wait_s: float,
    poll_interval_s: float = CLAIM_POLL_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    **claim: Any,
) -> ClaimResult:
    """``checkout_claim`` retried every ``poll_interval_s`` until it hands something out or ``wait_s`` seconds have
    passed; then an empty result. Never waits longer than ``wait_s`` (plus one claim). ``claim`` is passed on, without
    ``now``: every attempt claims at the current time.

    This waits in the calling thread; it is what a WSGI server runs. Under ASGI (the production server) the long-poll
    waits in the event loop instead (``prmsite.asgi``), calling the endpoint with ``wait=0`` each time."""
    if not math.isfinite(wait_s):
        raise ApplicationError(WAIT_NOT_FINITE)
    deadline = clock() + max(0.0, wait_s)
    while True:
        result = checkout_claim(now=timezone.now(), **claim)
        remaining = deadline - clock()
        if result.rollouts or remaining <= 0:
            return result
        sleep(min(poll_interval_s, remaining))
