"""Writes of forest growth: the growth plan, the queue of pending expansions and its leases, and the bookkeeping of
arriving rollouts. The decisions themselves are ``forests.growth`` (pure); this module loads rows, asks, writes.

Design note
-----------
- **The queue.** Pending work is ``Expansion`` rows; a forest's queue is its rows with ``available_at <= now``, read
  oldest first through the index ``(forest, available_at, id)``. A claim reads only the rows it hands out (plus
  those concurrent claimers hold, skipped), so it costs the same in a forest of a million nodes as in one of a
  thousand. Leasing moves ``available_at`` to the lease's end; an expired lease is simply claimable again.
- **Planning as claims come in.** Roots are planned in id order, ``GROWTH_PLAN_BATCH`` at a time, when a claim finds
  the queue shorter than it asked for; ``GrowthPlan.root_cursor`` remembers how far. A forest that keeps being seeded
  gets its new roots planned the same way.
- **Bookkeeping as rollouts arrive.** Every rollout posted into a forest updates its tree's and forest's tallies
  (``TreeTally``, ``ForestTally``), answers its expansion (``count`` down; deleted at 0) and, when its tree reaches
  ``num_repeats`` rollouts, queues the tree's branching stage (mc or omega) from a snapshot of that one tree. An
  omega probe's answers move its search (``ErrorSearch``) and queue the next probe. A ``RolloutGrowth`` row per
  rollout makes all of this happen once per rollout, even when the same rollout is posted twice.
- **Who answers.** An answer counts against its expansion only when the caller holds it and it still asks for
  answers: the statement that counts it down names the holder and the count it expects, so of concurrent answers at
  most ``count`` pass. Any other answer — a lease that expired and went to another worker, an expansion answered in
  full, dropped by a replaced plan or a decided probe, an id that names nothing — is still a good rollout of its tree:
  it is stored and tallied like a rollout posted without ``expansion_id``, and counts against no expansion. Nothing a
  worker generated is lost, and nobody can use up another worker's expansion.
- **Locks (PostgreSQL).** Claims lock queue rows with ``SKIP LOCKED`` and never wait for them. Planning holds the plan
  row, then tree tallies. An arrival takes, in this order: its expansion row, its tree tally, its search, the forest
  tally (last, briefly). Nobody waits for the plan row while holding a tally, so there is no cycle. On SQLite every
  write transaction holds the database lock from its start (``BEGIN IMMEDIATE``), which serialises all of this.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Max

from forests.growth import (
    STAGE_MC,
    STAGE_OMEGA,
    STAGE_REPEATS,
    Expand,
    GrowthOptions,
    GrowthOptionsError,
    OmegaSearch,
    branching_wanted,
    chunk_counts,
    correct_of,
    mc_plan,
    omega_record,
    omega_start,
    repeats_needed,
    tree_budget,
    wrong_rollouts,
)
from forests.growth_selectors import (
    GIVEN_UP_AT,
    forest_true_counts,
    growth_options_of,
    tree_queued,
    tree_snapshot,
    tree_true_counts,
)
from forests.models import ErrorSearch, Expansion, Forest, ForestTally, GrowthPlan, Node, RolloutGrowth, TreeTally
from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError, UnprocessableError

FOREST_NOT_FOUND = "No forest named {name!r}."
NO_PLAN = "Forest {name!r} has no growth plan yet: PUT /forest/{name}/growth first (rollout_worker does)."
PLAN_CONFLICT = (
    "Forest {name!r} is grown with other options ({differences}); run with the stored options, or replace them "
    "(rollout_worker --replan, or replace=true)."
)
EXPANSION_WITHOUT_FOREST = "expansion_id names work of a forest: send forest_name (and root_id) with it."
EXPANSION_NOT_IN_FOREST = "Expansion {expansion_id} belongs to another forest than {name!r}."
EXPANSION_OFF_PATH = (
    "The rollout does not pass through node {node_id} that expansion {expansion_id} continues from: send the "
    "expansion's prefix steps unchanged as the first reasoning steps."
)
BAD_LIMIT = "limit must be between 1 and {max}."
# Most expansions one claim hands out.
CLAIM_LIMIT_MAX = 1000
# Most planning batches one claim runs when batches queue nothing (trees already complete).
PLAN_BATCHES_PER_CLAIM = 4


def _forest(name: str) -> Forest:
    forest = Forest.objects.filter(name=name).first()
    if forest is None:
        raise NotFoundError(FOREST_NOT_FOUND.format(name=name))
    return forest


def _plan(forest: Forest) -> GrowthPlan:
    plan = GrowthPlan.objects.filter(forest=forest).first()
    if plan is None:
        raise NotFoundError(NO_PLAN.format(name=forest.name))
    return plan


# --- the plan --------------------------------------------------------------------------------------------------------


def growth_plan_set(
    *, forest_name: str, given: Mapping[str, Any], replace: bool = False, by: str = "", now: datetime
) -> tuple[GrowthPlan, bool]:
    """Make sure ``forest_name`` is grown with the options in ``given`` (the others keep their stored value, or their
    default for a new plan); answer the plan and whether it changed.

    Options that differ from a stored plan are a conflict unless ``replace``: a worker started with a typo never
    changes what a hundred others are doing. Replacing keeps the old options in ``history``, drops the queue and
    unfinished searches of the old plan and plans every tree again under the new version.
    """
    forest = _forest(forest_name)
    with transaction.atomic():
        plan = GrowthPlan.objects.select_for_update().filter(forest=forest).first()
        if plan is None:
            try:
                options = GrowthOptions.from_dict(given)
            except (GrowthOptionsError, TypeError) as exc:
                raise ApplicationError(str(exc)) from exc
            try:
                with transaction.atomic():
                    plan = GrowthPlan.objects.create(forest=forest, options=options.to_dict())
                return plan, True
            except IntegrityError:
                # Another worker made the plan a moment ago: compare with it like with any stored plan.
                plan = GrowthPlan.objects.select_for_update().get(forest=forest)
        stored = growth_options_of(plan)
        try:
            wanted = GrowthOptions.from_dict({**stored.to_dict(), **dict(given)})
        except (GrowthOptionsError, TypeError) as exc:
            raise ApplicationError(str(exc)) from exc
        differences = stored.differences(wanted.to_dict())
        if not differences:
            return plan, False
        if not replace:
            described = ", ".join(f"{k}: stored {old!r}, given {new!r}" for k, (old, new) in differences.items())
            raise ConflictError(
                PLAN_CONFLICT.format(name=forest.name, differences=described), extra={"stored": plan.options}
            )
        replaced = {"options": plan.options, "version": plan.version, "replaced_at": now.isoformat(), "by": by}
        plan.history = [*plan.history, replaced]
        plan.options = wanted.to_dict()
        plan.version += 1
        plan.root_cursor = 0
        plan.save()
        Expansion.objects.filter(forest=forest).delete()
        ErrorSearch.objects.filter(forest=forest, status="searching").delete()
        return plan, True


def _plan_batch(*, forest: Forest, now: datetime, batch: int) -> tuple[int, bool]:
    """Plan the next ``batch`` roots of the forest: answer how many expansions it queued and whether roots remain.

    Runs only where no other planner runs (the plan row is locked with ``SKIP LOCKED``; a busy planner means the
    caller just claims what is there).
    """
    with transaction.atomic():
        locked = GrowthPlan.objects.filter(forest=forest)
        if connection.features.has_select_for_update_skip_locked:
            locked = locked.select_for_update(skip_locked=True)
        plan = locked.first()
        if plan is None:
            return 0, False
        options = growth_options_of(plan)
        roots = list(
            Node.objects.filter(forest=forest, depth=0, pk__gt=plan.root_cursor)
            .order_by("id")
            .values_list("id", flat=True)[:batch]
        )
        if not roots:
            return 0, False
        _tallies_ensure(forest_id=forest.pk, root_ids=roots)
        # Lock the trees' tallies (in id order, as arrivals do one at a time) so that a rollout arriving meanwhile
        # either counts before this planning or sees the tree planned.
        tallies = TreeTally.objects.filter(root_id__in=roots).order_by("root_id")
        if connection.features.has_select_for_update:
            tallies = tallies.select_for_update()
        tallies = list(tallies)
        TreeTally.objects.filter(root_id__in=roots).update(planned_version=plan.version)
        queued: list[Expansion] = []
        branch: list[TreeTally] = []
        for tally in tallies:
            need = repeats_needed(rollouts=tally.rollouts, options=options)
            budget = tree_budget(options=options, rollouts=tally.rollouts, queued=0)
            if budget is not None:
                need = min(need, budget)
            for count in chunk_counts(need, settings.GROWTH_EXPANSION_MAX_COUNT):
                queued.append(
                    _expansion(
                        forest_id=forest.pk,
                        root_id=tally.root_id,
                        step=Expand(tally.root_id, (tally.root_id,), count, STAGE_REPEATS),
                        version=plan.version,
                        now=now,
                    )
                )
            if (
                options.branches
                and tally.branched_version != plan.version
                and tally.rollouts >= max(1, options.num_repeats)
            ):
                branch.append(tally)
        Expansion.objects.bulk_create(queued)
        count = len(queued)
        for tally in branch:
            count += _tree_branch(forest_id=forest.pk, plan=plan, options=options, tally=tally, now=now)
        plan.root_cursor = roots[-1]
        plan.save(update_fields=["root_cursor", "updated_at"])
        more = Node.objects.filter(forest=forest, depth=0, pk__gt=roots[-1]).exists()
        return count, more


def _tallies_ensure(*, forest_id: int, root_ids: Sequence[int]) -> None:
    """Create the tallies of trees the bookkeeping has not counted yet, from their rollouts."""
    have = set(TreeTally.objects.filter(root_id__in=root_ids).values_list("root_id", flat=True))
    missing = [root_id for root_id in root_ids if root_id not in have]
    if not missing:
        return
    counts = tree_true_counts(root_ids=missing)
    TreeTally.objects.bulk_create(
        [
            TreeTally(root_id=root_id, forest_id=forest_id, rollouts=counts[root_id][0], correct=counts[root_id][1])
            for root_id in missing
        ],
        ignore_conflicts=True,  # a rollout arriving meanwhile counted the tree itself, from the same truth
    )


def _expansion(
    *, forest_id: int, root_id: int, step: Expand, version: int, now: datetime, search_id: int | None = None
) -> Expansion:
    return Expansion(
        forest_id=forest_id,
        tree_id=root_id,
        node_id=step.node_id,
        path=list(step.path),
        stage=step.stage,
        count=step.count,
        search_id=search_id,
        plan_version=version,
        available_at=now,
    )


def _tree_branch(*, forest_id: int, plan: GrowthPlan, options: GrowthOptions, tally: TreeTally, now: datetime) -> int:
    """Queue a tree's branching stage (its tally row is locked by the caller); answer how many expansions."""
    TreeTally.objects.filter(pk=tally.pk).update(branched_version=plan.version)
    snapshot = tree_snapshot(root_id=tally.root_id)
    if not branching_wanted(snapshot, options):
        return 0
    budget = tree_budget(options=options, rollouts=tally.rollouts, queued=tree_queued(root_id=tally.root_id))
    rows: list[Expansion] = []
    if options.policy == STAGE_MC:
        for step in mc_plan(snapshot, options, budget=budget):
            for count in chunk_counts(step.count, settings.GROWTH_EXPANSION_MAX_COUNT):
                rows.append(
                    _expansion(
                        forest_id=forest_id,
                        root_id=tally.root_id,
                        step=Expand(step.node_id, step.path, count, STAGE_MC),
                        version=plan.version,
                        now=now,
                    )
                )
        Expansion.objects.bulk_create(rows)
        return len(rows)
    if options.policy == STAGE_OMEGA:
        if not any(r.correct for r in snapshot.rollouts):
            return 0  # no step has a known correct continuation to anchor the search on
        through = snapshot.through()
        queued = 0
        for rollout in wrong_rollouts(snapshot):
            search = omega_start(snapshot.path(rollout.leaf_id), through)
            queued += _search_save(
                forest_id=forest_id,
                root_id=tally.root_id,
                leaf_id=rollout.leaf_id,
                search=search,
                plan=plan,
                options=options,
                budget=budget,
                now=now,
            )
            if budget is not None:
                budget = max(0, budget - options.completions_per_step)
        return queued
    return 0


def _search_save(
    *,
    forest_id: int,
    root_id: int,
    leaf_id: int,
    search: OmegaSearch,
    plan: GrowthPlan,
    options: GrowthOptions,
    budget: int | None,
    now: datetime,
    row: ErrorSearch | None = None,
) -> int:
    """Store a search's state and queue its probe, if it has one; answer how many expansions were queued."""
    if row is None:
        row = ErrorSearch(forest_id=forest_id, tree_id=root_id, leaf_id=leaf_id, plan_version=plan.version)
    row.state = search.to_dict()
    row.probe_received = row.probe_correct = 0
    row.probe_wanted = 0
    if search.done:
        row.status = "found" if search.first_error is not None else "none"
        row.first_error_id = search.path[search.first_error] if search.first_error is not None else None
        row.save()
        return 0
    probe_node = search.path[search.probe]
    capped = budget is not None and budget < options.completions_per_step
    if options.max_children_per_node is not None and not capped:
        capped = Node.objects.filter(parent_id=probe_node).count() >= options.max_children_per_node
    if capped:
        row.status = "capped"
        row.save()
        return 0
    row.status = "searching"
    row.probe_wanted = options.completions_per_step
    row.save()
    step = Expand(probe_node, tuple(search.path[: search.probe + 1]), options.completions_per_step, STAGE_OMEGA)
    Expansion.objects.bulk_create(
        [
            _expansion(
                forest_id=forest_id,
                root_id=root_id,
                step=Expand(step.node_id, step.path, count, STAGE_OMEGA),
                version=plan.version,
                now=now,
                search_id=row.pk,
            )
            for count in chunk_counts(step.count, settings.GROWTH_EXPANSION_MAX_COUNT)
        ]
    )
    return 1


# --- claims and releases ---------------------------------------------------------------------------------------------


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
    forest = _forest(forest_name)
    plan = _plan(forest)
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
        queued, roots_left = _plan_batch(forest=forest, now=now, batch=max(settings.GROWTH_PLAN_BATCH, limit))
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
    forest = _forest(forest_name)
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


# --- arriving rollouts -----------------------------------------------------------------------------------------------


def rollout_receive(*, expansion_id: int | None = None, answered_by: str | None = None, **fields: Any):
    """Store a posted rollout (``rollouts.services.rollout_create``) and, for a forest rollout, do the growth
    bookkeeping in the same transaction: tallies, the expansion it answers (``expansion_id``), the tree's branching
    stage when it reaches its repeats, and the omega search it probes for.

    All or nothing; a rollout posted twice (same idempotency key) is counted once. An answer to an expansion is
    refused, and nothing stored, when no expansion has that id (``NotFoundError``), when the expansion is leased to
    another caller than ``answered_by`` (the caller's identity, as ``expansion_claim`` recorded it in ``leased_by``;
    ``None`` skips that check, for trusted callers) and when it has had all the answers it asked for
    (``ConflictError``s).
    """
    from forests.trie import forest_rollout_place, steps_check
    from rollouts.models import Rollout
    from rollouts.services import rollout_create

    if fields.get("forest_name") is None:
        if expansion_id is not None:
            raise ApplicationError(EXPANSION_WITHOUT_FOREST)
        return rollout_create(**fields).rollout
    # Reads first, outside the write transaction (on SQLite it holds the database's one write lock): a repeated
    # idempotency key is answered without one, and the rollout's forest and tree are found before it starts.
    key = fields.get("idempotency_key")
    if key is not None and Rollout.objects.filter(idempotency_key=key).exists():
        return rollout_create(**fields).rollout  # the stored rollout, or the key's conflict; writes nothing
    reasoning = fields.get("reasoning") or []
    if reasoning:
        steps_check(reasoning)
        fields["place"] = forest_rollout_place(
            forest_name=fields["forest_name"],
            example=fields.get("example"),
            steps=list(reasoning),
            ground_truth=fields.get("ground_truth"),
            root_id=fields.get("root_id"),
        )
    with transaction.atomic():
        stored = rollout_create(**fields)
        if stored.created:  # a repeated idempotency key is counted once
            _account(rollout=stored.rollout, expansion_id=expansion_id, answered_by=answered_by)
    return stored.rollout


def _usage(attributes: Mapping[str, Any] | None) -> tuple[int, int]:
    usage = (attributes or {}).get("usage")
    if not isinstance(usage, Mapping):
        return 0, 0

    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    return count("prompt_tokens"), count("completion_tokens")


def _account(*, rollout, expansion_id: int | None, answered_by: str | None = None) -> None:
    from django.utils import timezone

    leaf = rollout.node
    forest_id = rollout.forest_id
    root_id = leaf.tree_id or leaf.pk
    expansion = None
    if expansion_id is not None:
        expansion = _expansion_held(
            expansion_id=expansion_id, rollout=rollout, root_id=root_id, answered_by=answered_by
        )
    prompt_tokens, completion_tokens = _usage(rollout.attributes)
    try:
        with transaction.atomic():
            growth = RolloutGrowth.objects.create(
                rollout=rollout,
                forest_id=forest_id,
                tree_id=root_id,
                expansion_id=expansion.pk if expansion is not None else None,
                stage=expansion.stage if expansion is not None else "",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
    except IntegrityError:
        return  # this rollout was counted when it was first posted
    # First of the rows an arrival locks (see the design note). An expansion whose count was used up since it was
    # read leaves the rollout unplanned, like any other answer that is not the caller's to count.
    if expansion is not None and not _expansion_count_down(expansion=expansion, answered_by=answered_by):
        RolloutGrowth.objects.filter(pk=growth.pk).update(expansion_id=None, stage="")
        expansion = None
    correct = correct_of(rollout.prediction, rollout.ground_truth)
    now = timezone.now()
    tally = _tree_tally_add(
        forest_id=forest_id,
        root_id=root_id,
        correct=correct,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    plan = GrowthPlan.objects.filter(forest_id=forest_id).first()
    if expansion is not None:
        _expansion_answer(expansion=expansion, plan=plan, correct=correct, now=now)
    if plan is not None:
        options = growth_options_of(plan)
        if (
            options.branches
            and tally.planned_version == plan.version
            and tally.branched_version != plan.version
            and tally.rollouts >= max(1, options.num_repeats)
        ):
            _tree_branch(forest_id=forest_id, plan=plan, options=options, tally=tally, now=now)
    _forest_tally_add(
        forest_id=forest_id, correct=correct, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


def _expansion_held(*, expansion_id: int, rollout, root_id: int, answered_by: str | None) -> Expansion | None:
    """The expansion ``rollout`` answers when it counts against it: the expansion exists and is held by
    ``answered_by`` (``None``: any holder, for trusted callers); ``None`` otherwise (see the design note). An
    expansion of another forest, or one the rollout does not pass through, is an ``UnprocessableError``: such an
    answer is malformed, not late. Reads only: the count is taken by ``_expansion_count_down``."""
    expansion = Expansion.objects.filter(pk=expansion_id).first()
    if expansion is None:
        return None
    if expansion.forest_id != rollout.forest_id:
        raise UnprocessableError(EXPANSION_NOT_IN_FOREST.format(expansion_id=expansion_id, name=rollout.forest.name))
    if not _passes_through(rollout, expansion, root_id=root_id):
        raise UnprocessableError(EXPANSION_OFF_PATH.format(node_id=expansion.node_id, expansion_id=expansion_id))
    if answered_by is not None and expansion.leased_by != answered_by:
        return None
    return expansion


def _expansion_count_down(*, expansion: Expansion, answered_by: str | None) -> bool:
    """Take one answer off ``expansion``'s count, deleting it with its last one; answer whether this answer counted
    (False when none is left, or it changed hands since it was read).

    The statements decide, not what was read before them: each names the count it expects, so of concurrent answers
    at most ``count`` find a row to change (PostgreSQL re-checks the condition on the latest row version after
    waiting for a concurrent answer's lock; SQLite runs one write transaction at a time).
    """
    rows = Expansion.objects.filter(pk=expansion.pk)
    if answered_by is not None:
        rows = rows.filter(leased_by=answered_by)
    if rows.filter(count__gt=1).update(count=F("count") - 1):
        return True
    deleted, _ = rows.filter(count=1).delete()
    return bool(deleted)


def _passes_through(rollout, expansion: Expansion, *, root_id: int) -> bool:
    """Whether the rollout's path goes through the expansion's node: same tree, and its first steps are the
    expansion's prefix (the trie is keyed by step text, so equal texts are the same nodes)."""
    if expansion.tree_id != root_id:
        return False
    prefix_ids = list(expansion.path[1:])
    if len(rollout.reasoning) < len(prefix_ids):
        return False
    digests = dict(Node.objects.filter(pk__in=prefix_ids).values_list("id", "text_sha256"))
    return all(
        digests.get(node_id) == hashlib.sha256(step.encode("utf-8")).hexdigest()
        for node_id, step in zip(prefix_ids, rollout.reasoning, strict=False)
    )


_TREE_TALLY_ADD = (
    "UPDATE {table} SET rollouts = rollouts + 1, correct = correct + %s, prompt_tokens = prompt_tokens + %s, "
    "completion_tokens = completion_tokens + %s WHERE root_id = %s "
    "RETURNING rollouts, correct, planned_version, branched_version"
)
_TREE_TALLY_INSERT = (
    "INSERT INTO {table} (root_id, forest_id, rollouts, correct, prompt_tokens, completion_tokens, planned_version, "
    "branched_version) VALUES (%s, %s, %s, %s, %s, %s, 0, 0) ON CONFLICT (root_id) DO UPDATE SET "
    "rollouts = {table}.rollouts + 1, correct = {table}.correct + %s, "
    "prompt_tokens = {table}.prompt_tokens + %s, completion_tokens = {table}.completion_tokens + %s "
    "RETURNING rollouts, correct, planned_version, branched_version"
)


def _tree_tally_add(
    *, forest_id: int, root_id: int, correct: bool, prompt_tokens: int, completion_tokens: int
) -> TreeTally:
    """Count one rollout into its tree's tally (created from the tree's rollouts, this one included, if missing);
    answer the tally as it is now. Holds the tally row until the transaction ends."""
    table = connection.ops.quote_name(TreeTally._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_TREE_TALLY_ADD.format(table=table), [int(correct), prompt_tokens, completion_tokens, root_id])
        row = cursor.fetchone()
        if row is None:
            # Not counted before: start from the tree's rollouts, which include this one. A concurrent first
            # arrival may insert meanwhile; then this one is added to its count (which could not see this one).
            rollouts, correct_n = tree_true_counts(root_ids=[root_id])[root_id]
            inserted = [root_id, forest_id, rollouts, correct_n, prompt_tokens, completion_tokens]
            added = [int(correct), prompt_tokens, completion_tokens]
            cursor.execute(_TREE_TALLY_INSERT.format(table=table), [*inserted, *added])
            row = cursor.fetchone()
    rollouts, correct_n, planned, branched = row
    return TreeTally(
        root_id=root_id,
        forest_id=forest_id,
        rollouts=rollouts,
        correct=correct_n,
        planned_version=planned,
        branched_version=branched,
    )


_FOREST_TALLY_INSERT = (
    "INSERT INTO {table} (forest_id, rollouts, correct, prompt_tokens, completion_tokens) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (forest_id) DO UPDATE SET rollouts = {table}.rollouts + 1, correct = {table}.correct + %s, "
    "prompt_tokens = {table}.prompt_tokens + %s, completion_tokens = {table}.completion_tokens + %s"
)


def _forest_tally_add(*, forest_id: int, correct: bool, prompt_tokens: int, completion_tokens: int) -> None:
    updated = ForestTally.objects.filter(forest_id=forest_id).update(
        rollouts=F("rollouts") + 1,
        correct=F("correct") + int(correct),
        prompt_tokens=F("prompt_tokens") + prompt_tokens,
        completion_tokens=F("completion_tokens") + completion_tokens,
    )
    if updated:
        return
    rollouts, correct_n = forest_true_counts(forest_id=forest_id)
    table = connection.ops.quote_name(ForestTally._meta.db_table)
    with connection.cursor() as cursor:
        inserted = [forest_id, rollouts, correct_n, prompt_tokens, completion_tokens]
        added = [int(correct), prompt_tokens, completion_tokens]
        cursor.execute(_FOREST_TALLY_INSERT.format(table=table), [*inserted, *added])


def _expansion_answer(*, expansion: Expansion, plan: GrowthPlan | None, correct: bool, now: datetime) -> None:
    """One more rollout answered ``expansion`` (counted down already): move its omega search."""
    if expansion.stage != STAGE_OMEGA or expansion.search_id is None or plan is None:
        return
    search_row = ErrorSearch.objects.select_for_update().filter(pk=expansion.search_id).first()
    if search_row is None or search_row.status != "searching" or search_row.plan_version != plan.version:
        return
    search = OmegaSearch(**search_row.state)
    if search.probe is None or search.path[search.probe] != expansion.node_id:
        return  # an answer to an earlier probe of this search, arriving late: it is in the tallies, nothing more
    search_row.probe_received += 1
    search_row.probe_correct += int(correct)
    positive = search_row.probe_correct > 0
    if not positive and search_row.probe_received < search_row.probe_wanted:
        search_row.save(update_fields=["probe_received", "probe_correct", "updated_at"])
        return
    # The probe is decided (a correct completion ends it early): drop what it still asks for, queue the next one.
    # Answers in flight to what is dropped are stored as unplanned rollouts of the tree (see the design note).
    Expansion.objects.filter(search_id=search_row.pk, node_id=expansion.node_id).delete()
    options = growth_options_of(plan)
    search = omega_record(search, positive=positive)
    tally = TreeTally.objects.filter(root_id=search_row.tree_id).values_list("rollouts", flat=True).first() or 0
    budget = tree_budget(options=options, rollouts=tally, queued=tree_queued(root_id=search_row.tree_id))
    _search_save(
        forest_id=search_row.forest_id,
        root_id=search_row.tree_id,
        leaf_id=search_row.leaf_id,
        search=search,
        plan=plan,
        options=options,
        budget=budget,
        now=now,
        row=search_row,
    )


# --- deleting a forest -----------------------------------------------------------------------------------------------


def forest_growth_delete(*, forest: Forest) -> None:
    """Delete a forest's growth rows with set-based statements (``forest_delete`` calls it before the nodes go)."""
    Expansion.objects.filter(forest=forest)._raw_delete(Expansion.objects.db)
    ErrorSearch.objects.filter(forest=forest)._raw_delete(ErrorSearch.objects.db)
    RolloutGrowth.objects.filter(forest=forest)._raw_delete(RolloutGrowth.objects.db)
    TreeTally.objects.filter(forest=forest)._raw_delete(TreeTally.objects.db)
    ForestTally.objects.filter(forest=forest)._raw_delete(ForestTally.objects.db)
    GrowthPlan.objects.filter(forest=forest)._raw_delete(GrowthPlan.objects.db)


def plan_root_max(*, forest: Forest) -> int:
    return Node.objects.filter(forest=forest, depth=0).aggregate(m=Max("id"))["m"] or 0
