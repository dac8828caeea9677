"""The growth plan of a forest and the planning of its trees: which expansions are queued, and when.

Design note
-----------
- **Planning as claims come in.** Roots are planned in id order, ``GROWTH_PLAN_BATCH`` at a time, when a claim finds
  the queue shorter than it asked for (``forests.growth.queue``); ``GrowthPlan.root_cursor`` remembers how far. A
  forest that keeps being seeded gets its new roots planned the same way.
- **Branching.** When a tree reaches ``num_repeats`` rollouts (``forests.growth.bookkeeping`` sees it arrive, or
  planning finds it so), its branching stage (mc or omega) is queued from a snapshot of that one tree; the decisions
  themselves are ``forests.growth.policies`` (pure).
- **Locks (PostgreSQL).** Planning holds the plan row, then tree tallies (in id order); nobody waits for the plan row
  while holding a tally, so there is no cycle with arrivals. On SQLite every write transaction holds the database
  lock from its start (``BEGIN IMMEDIATE``), which serialises all of this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count

from forests.growth.policies import (
    STAGE_ADAPTIVE,
    STAGE_MC,
    STAGE_OMEGA,
    STAGE_REPEATS,
    Expand,
    GrowthOptions,
    GrowthOptionsError,
    adaptive_steps,
    branching_wanted,
    chunk_counts,
    mc_plan,
    repeats_needed,
    tree_budget,
    wrong_rollouts,
)
from forests.growth.selectors import (
    GIVEN_UP_AT,
    growth_options_of,
    tree_queued,
    tree_snapshot,
    tree_true_counts,
)
from forests.models import ErrorSearch, Expansion, Forest, GrowthPlan, Node, TreeTally
from forests.selectors import forest_get
from prmsite.core.adaptive import dropped, next_rounds
from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError
from prmsite.core.growth import OmegaSearch, omega_start

NO_PLAN = "Forest {name!r} has no growth plan yet: PUT /forest/{name}/growth first (rollout_worker does)."
PLAN_CONFLICT = (
    "Forest {name!r} is grown with other options ({differences}); run with the stored options, or replace them "
    "(rollout_worker --replan, or replace=true)."
)


def growth_plan_require(forest: Forest) -> GrowthPlan:
    """The forest's growth plan; ``NotFoundError`` (``NO_PLAN``) when it has none yet."""
    plan = GrowthPlan.objects.filter(forest=forest).first()
    if plan is None:
        raise NotFoundError(NO_PLAN.format(name=forest.name))
    return plan


def growth_plan_set(
    *, forest_name: str, given: Mapping[str, Any], replace: bool = False, by: str = "", now: datetime
) -> tuple[GrowthPlan, bool]:
    """Make sure ``forest_name`` is grown with the options in ``given`` (the others keep their stored value, or their
    default for a new plan); answer the plan and whether it changed.

    Options that differ from a stored plan are a conflict unless ``replace``: a worker started with a typo never
    changes what a hundred others are doing. Replacing keeps the old options in ``history``, drops the queue and
    unfinished searches of the old plan and plans every tree again under the new version.
    """
    forest = forest_get(name=forest_name)
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


def plan_batch(*, forest: Forest, now: datetime, batch: int) -> tuple[int, bool]:
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
                    expansion_row(
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
            count += tree_branch(forest_id=forest.pk, plan=plan, options=options, tally=tally, now=now)
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
    nodes = dict(
        Node.objects.filter(tree_id__in=missing)
        .order_by()
        .values("tree_id")
        .annotate(n=Count("pk"))
        .values_list("tree_id", "n")
    )
    TreeTally.objects.bulk_create(
        [
            TreeTally(
                root_id=root_id,
                forest_id=forest_id,
                rollouts=counts[root_id][0],
                correct=counts[root_id][1],
                nodes=nodes.get(root_id, 1),
            )
            for root_id in missing
        ],
        ignore_conflicts=True,  # a rollout arriving meanwhile counted the tree itself, from the same truth
    )


def expansion_row(
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


def tree_branch(*, forest_id: int, plan: GrowthPlan, options: GrowthOptions, tally: TreeTally, now: datetime) -> int:
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
                    expansion_row(
                        forest_id=forest_id,
                        root_id=tally.root_id,
                        step=Expand(step.node_id, step.path, count, STAGE_MC),
                        version=plan.version,
                        now=now,
                    )
                )
        Expansion.objects.bulk_create(rows)
        return len(rows)
    if options.policy == STAGE_ADAPTIVE:
        return adaptive_round(forest_id=forest_id, plan=plan, options=options, root_id=tally.root_id, now=now)
    if options.policy == STAGE_OMEGA:
        if not any(r.correct for r in snapshot.rollouts):
            return 0  # no step has a known correct continuation to anchor the search on
        through = snapshot.through()
        queued = 0
        for rollout in wrong_rollouts(snapshot):
            search = omega_start(snapshot.path(rollout.leaf_id), through)
            queued += search_save(
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


def adaptive_round(*, forest_id: int, plan: GrowthPlan, options: GrowthOptions, root_id: int, now: datetime) -> int:
    """The adaptive policy's next moves on a tree (its tally row is locked by the caller, so one arrival of the tree
    at a time decides them): drop what is still asked of steps decided meanwhile, and queue the next round of every
    undecided step that has nothing asked of it, in service order, within the tree's cap. Answer how many expansions
    were queued. Reads the one tree (``tree_snapshot``) and its queued expansions; never the rest of the forest."""
    queued_rows = Expansion.objects.filter(
        tree_id=root_id, stage=STAGE_ADAPTIVE, plan_version=plan.version, available_at__lt=GIVEN_UP_AT
    ).values_list("node_id", "count")
    pending: dict[int, int] = {}
    for node_id, count in queued_rows:
        pending[node_id] = pending.get(node_id, 0) + count
    snapshot = tree_snapshot(root_id=root_id)
    rule = options.adaptive_rule()
    steps = adaptive_steps(snapshot, options, pending=pending)
    decided = dropped(rule, steps)
    if decided:
        # Answers in flight to these are stored as unplanned rollouts of the tree (see bookkeeping's design note).
        Expansion.objects.filter(tree_id=root_id, stage=STAGE_ADAPTIVE, node_id__in=decided).delete()
    budget = tree_budget(options=options, rollouts=len(snapshot.rollouts), queued=tree_queued(root_id=root_id))
    rows: list[Expansion] = []
    for node_id, count in next_rounds(rule, steps, budget=budget):
        path = tuple(snapshot.path(node_id))
        for piece in chunk_counts(count, settings.GROWTH_EXPANSION_MAX_COUNT):
            rows.append(
                expansion_row(
                    forest_id=forest_id,
                    root_id=root_id,
                    step=Expand(node_id, path, piece, STAGE_ADAPTIVE),
                    version=plan.version,
                    now=now,
                )
            )
    Expansion.objects.bulk_create(rows)
    return len(rows)


def search_save(
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
            expansion_row(
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
