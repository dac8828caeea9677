"""The queue of pending expansions of a forest and its leases: claims and releases.

Design note
-----------
Pending work is ``Expansion`` rows; a forest's queue is its rows with ``available_at <= now``, read oldest first
through the index ``(forest, available_at, id)``. A claim reads only the rows it hands out (plus those concurrent
claimers hold, skipped), so it costs the same in a forest of a million nodes as in one of a thousand. Leasing moves
``available_at`` to the lease's end; an expired lease is simply claimable again. Claims lock queue rows with ``SKIP
LOCKED`` and never wait for them; when the queue is shorter than asked for, a claim plans more roots first
(``forests.growth.plan``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from forests.growth.plan import growth_plan_require, plan_batch
from forests.growth.selectors import GIVEN_UP_AT, growth_options_of
from forests.models import Expansion, Forest, ForestTally, GrowthPlan, Node
from forests.selectors import forest_get
from prmsite.core.errors import ApplicationError

BAD_LIMIT = "limit must be between 1 and {max}."
# Most expansions one claim hands out.
CLAIM_LIMIT_MAX = 1000
# Most planning batches one claim runs when batches queue nothing (trees already complete).
PLAN_BATCHES_PER_CLAIM = 4


@dataclass(frozen=True)
class ClaimedExpansion:
    id: int
    root_id: int
    node_id: int
    depth: int
    stage: str
    count: int
    prompt: str
    prefix: list[str]
    ground_truth: int | None
    lease_expires_at: datetime


@dataclass(frozen=True)
class ClaimResult:
    expansions: list[ClaimedExpansion]
    done: bool  # nothing is queued or leased and every root is planned: the policy has nothing left to grow
    reason: str = ""


def expansion_claim(
    *, forest_name: str, claimed_by: str, now: datetime, limit: int = 16, max_rollouts: int | None = None
) -> ClaimResult:
    """Lease up to ``limit`` queued expansions of the forest (fewer once they ask for ``max_rollouts`` rollouts; at
    least one) until ``now + GROWTH_LEASE_S``.

    Invariant: while a lease is live its expansion is handed to nobody else, whatever the number of concurrent
    claimers (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` and a conditional update; SQLite: one ``BEGIN IMMEDIATE``
    transaction). An expansion leased ``GROWTH_MAX_ATTEMPTS`` times without an answer is given up.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= CLAIM_LIMIT_MAX:
        raise ApplicationError(BAD_LIMIT.format(max=CLAIM_LIMIT_MAX))
    forest = forest_get(name=forest_name)
    plan = growth_plan_require(forest)
    options = growth_options_of(plan)
    if options.max_forest_tokens is not None:
        tally = ForestTally.objects.filter(forest=forest).first()
        if tally is not None and tally.tokens >= options.max_forest_tokens:
            return ClaimResult([], done=True, reason=f"max_forest_tokens ({options.max_forest_tokens}) reached")
    available = Expansion.objects.filter(forest=forest, available_at__lte=now)
    roots_left = True
    for _ in range(PLAN_BATCHES_PER_CLAIM):
        if available[:limit].count() >= limit:
            break
        queued, roots_left = plan_batch(forest=forest, now=now, batch=max(settings.GROWTH_PLAN_BATCH, limit))
        if queued or not roots_left:
            break
    leased = _lease(forest=forest, claimed_by=claimed_by, now=now, limit=limit, max_rollouts=max_rollouts)
    if leased:
        return ClaimResult(_describe(leased), done=False)
    waiting = Expansion.objects.filter(forest=forest, available_at__lt=GIVEN_UP_AT).exists()
    if not waiting:
        cursor = GrowthPlan.objects.filter(pk=plan.pk).values_list("root_cursor", flat=True).first() or 0
        roots_left = Node.objects.filter(forest=forest, depth=0, pk__gt=cursor).exists()
    return ClaimResult([], done=not waiting and not roots_left)


def _lease(*, forest: Forest, claimed_by: str, now: datetime, limit: int, max_rollouts: int | None) -> list[Expansion]:
    lease_until = now + timedelta(seconds=settings.GROWTH_LEASE_S)
    with transaction.atomic():
        queryset = Expansion.objects.filter(forest=forest, available_at__lte=now).order_by("available_at", "id")
        if connection.features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True)
        rows = list(queryset.values_list("id", "count", "attempts")[:limit])
        picked: list[int] = []
        given_up: list[int] = []
        wanted = 0
        for expansion_id, count, attempts in rows:
            if attempts >= settings.GROWTH_MAX_ATTEMPTS:
                given_up.append(expansion_id)
                continue
            if picked and max_rollouts is not None and wanted >= max_rollouts:
                break
            picked.append(expansion_id)
            wanted += count
        if given_up:
            Expansion.objects.filter(pk__in=given_up).update(available_at=GIVEN_UP_AT)
        if not picked:
            return []
        Expansion.objects.filter(pk__in=picked, available_at__lte=now).update(
            available_at=lease_until, leased_by=claimed_by, attempts=F("attempts") + 1
        )
        leased = list(
            Expansion.objects.filter(pk__in=picked, available_at=lease_until, leased_by=claimed_by).order_by("id")
        )
    return leased


def _describe(expansions: Sequence[Expansion]) -> list[ClaimedExpansion]:
    """The claimed expansions with the texts a worker needs: the root's prompt and the steps down to the node."""
    ids = {node_id for e in expansions for node_id in e.path}
    nodes = {
        node_id: (text, ground_truth)
        for node_id, text, ground_truth in Node.objects.filter(pk__in=ids).values_list("id", "text", "ground_truth")
    }
    claimed = []
    for e in expansions:
        root_text, ground_truth = nodes[e.path[0]]
        claimed.append(
            ClaimedExpansion(
                id=e.pk,
                root_id=e.tree_id,
                node_id=e.node_id,
                depth=len(e.path) - 1,
                stage=e.stage,
                count=e.count,
                prompt=root_text,
                prefix=[nodes[node_id][0] for node_id in e.path[1:]],
                ground_truth=ground_truth,
                lease_expires_at=e.available_at,
            )
        )
    return claimed


def expansion_release(
    *, forest_name: str, ids: Sequence[int], released_by: str, now: datetime, failed: bool = False, error: str = ""
) -> int:
    """End the caller's live leases on ``ids``; answer how many ended.

    A plain release (a worker shutting down) makes them claimable at once and does not count as an attempt. A
    ``failed`` release (the model could not answer) keeps the attempt and records ``error``; after
    ``GROWTH_MAX_ATTEMPTS`` such attempts the expansion is given up.
    """
    forest = forest_get(name=forest_name)
    with transaction.atomic():
        live = Expansion.objects.filter(
            forest=forest, pk__in=list(ids), leased_by=released_by, available_at__gt=now, available_at__lt=GIVEN_UP_AT
        )
        if not failed:
            return live.update(available_at=now, attempts=F("attempts") - 1)
        exhausted = live.filter(attempts__gte=settings.GROWTH_MAX_ATTEMPTS).update(
            available_at=GIVEN_UP_AT, last_error=error[:2000]
        )
        return exhausted + live.update(available_at=now, last_error=error[:2000])
