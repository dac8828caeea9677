"""Reads of forest growth: a tree as the policies see it, true counts for trees the bookkeeping has not seen, and the
growth summary the forest page and the API show."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Q, Sum

from forests.growth.policies import GrowthOptions, TreeRollout, TreeSnapshot, as_nodes
from forests.models import ErrorSearch, Expansion, Forest, ForestTally, GrowthPlan, Node, RolloutGrowth, TreeTally
from prmsite.queries import correct_rollout_q
from rollouts.models import Rollout

# available_at of an expansion that was given up: never claimable again.
GIVEN_UP_AT = datetime(9999, 1, 1, tzinfo=UTC)


def growth_plan_get(*, forest: Forest) -> GrowthPlan | None:
    return GrowthPlan.objects.filter(forest=forest).first()


def growth_options_of(plan: GrowthPlan) -> GrowthOptions:
    return GrowthOptions.from_dict(plan.options)


def tree_snapshot(*, root_id: int) -> TreeSnapshot:
    """A tree's nodes and rollouts (oldest first), in two queries."""
    nodes = as_nodes(Node.objects.filter(tree_id=root_id).order_by().values_list("id", "parent_id", "depth"))
    rows = Rollout.objects.filter(node__tree_id=root_id).order_by("id").values_list("id", "node_id", "correct")
    rollouts = [TreeRollout(id=i, leaf_id=leaf, correct=correct) for i, leaf, correct in rows]
    return TreeSnapshot(root_id=root_id, nodes=nodes, rollouts=rollouts)


def tree_true_counts(*, root_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """``{root_id: (rollouts, correct)}`` counted from the rollouts themselves (every tree in ``root_ids``)."""
    ids = list(root_ids)
    counts = dict.fromkeys(ids, (0, 0))
    if not ids:
        return counts
    rows = (
        Rollout.objects.filter(node__tree_id__in=ids)
        .order_by()
        .values("node__tree_id")
        .annotate(n=Count("id"), correct=Count("id", filter=correct_rollout_q()))
        .values_list("node__tree_id", "n", "correct")
    )
    for root_id, n, correct in rows:
        counts[root_id] = (n, correct)
    return counts


def forest_true_counts(*, forest_id: int) -> tuple[int, int]:
    """``(rollouts, correct)`` of a forest counted from its rollouts."""
    row = Rollout.objects.filter(forest_id=forest_id).aggregate(
        n=Count("id"), correct=Count("id", filter=correct_rollout_q())
    )
    return row["n"], row["correct"]


def tree_queued(*, root_id: int) -> int:
    """Rollouts still asked of a tree by its queued expansions (given-up ones excluded)."""
    return Expansion.objects.filter(tree_id=root_id, available_at__lt=GIVEN_UP_AT).aggregate(n=Sum("count"))["n"] or 0


@dataclass(frozen=True)
class TreeTokens:
    rollouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def tree_tokens_many(*, root_ids: Iterable[int]) -> dict[int, TreeTokens]:
    """Tokens spent on each tree in ``root_ids`` (as the rollouts reported them), in one query."""
    ids = list(root_ids)
    result = dict.fromkeys(ids, TreeTokens())
    for root_id, rollouts, prompt, completion in TreeTally.objects.filter(root_id__in=ids).values_list(
        "root_id", "rollouts", "prompt_tokens", "completion_tokens"
    ):
        result[root_id] = TreeTokens(rollouts=rollouts, prompt_tokens=prompt, completion_tokens=completion)
    return result


@dataclass(frozen=True)
class GrowthSummary:
    """What the forest page and ``GET /forest/<name>/growth`` show about a forest's growth."""

    options: dict[str, Any] | None
    version: int | None
    planned_roots: int
    roots: int
    rollouts: int
    prompt_tokens: int
    completion_tokens: int
    pending_expansions: int
    pending_rollouts: int
    leased_expansions: int
    given_up_expansions: int
    rollouts_by_stage: dict[str, int] = field(default_factory=dict)
    searches: dict[str, int] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "version": self.version,
            "planned_roots": self.planned_roots,
            "roots": self.roots,
            "rollouts": self.rollouts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "tokens": self.tokens,
            "pending_expansions": self.pending_expansions,
            "pending_rollouts": self.pending_rollouts,
            "leased_expansions": self.leased_expansions,
            "given_up_expansions": self.given_up_expansions,
            "rollouts_by_stage": self.rollouts_by_stage,
            "searches": self.searches,
        }


STAGES_CACHE_SECONDS = 600


def _rollouts_by_stage(*, forest: Forest, tally: ForestTally | None) -> dict[str, int]:
    """The forest's ``RolloutGrowth`` rows counted by stage (one row per rollout: a read of the whole forest's), once
    per state of its tally, then from this process's cache for ``STAGES_CACHE_SECONDS``. The bookkeeping writes a
    rollout's row, and settles its stage, before it counts the rollout on the tally, so a changed count is a changed
    tally; a forest without a tally has no rows to count and is not cached."""
    key = None
    if tally is not None:
        stamp = forest.created_at.timestamp() if forest.created_at else 0
        key = f"forest-stages:{forest.pk}:{stamp}:{tally.rollouts}:{tally.correct}:{tally.prompt_tokens}"
        key += f":{tally.completion_tokens}"
        cached = cache.get(key)
        if cached is not None:
            return cached
    by_stage = dict(
        RolloutGrowth.objects.filter(forest=forest)
        .order_by()
        .values("stage")
        .annotate(n=Count("rollout_id"))
        .values_list("stage", "n")
    )
    if key is not None:
        cache.set(key, by_stage, STAGES_CACHE_SECONDS)
    return by_stage


def forest_growth_summary(*, forest: Forest, now: datetime) -> GrowthSummary:
    """The forest's growth in a handful of aggregate queries (a page, not a claim: it counts the queue)."""
    row = Forest.objects.filter(pk=forest.pk).select_related("growth_plan", "tally").first()
    plan: GrowthPlan | None = getattr(row, "growth_plan", None)
    tally: ForestTally | None = getattr(row, "tally", None)
    queue = Expansion.objects.filter(forest=forest).aggregate(
        pending=Count("id", filter=Q(available_at__lt=GIVEN_UP_AT)),
        pending_rollouts=Sum("count", filter=Q(available_at__lt=GIVEN_UP_AT)),
        leased=Count("id", filter=Q(available_at__gt=now, available_at__lt=GIVEN_UP_AT)),
        given_up=Count("id", filter=Q(available_at__gte=GIVEN_UP_AT)),
    )
    roots = Node.objects.filter(forest=forest, depth=0).aggregate(
        all=Count("id"), planned=Count("id", filter=Q(pk__lte=plan.root_cursor if plan else 0))
    )
    by_stage = _rollouts_by_stage(forest=forest, tally=tally)
    searches = {}
    if plan is not None and plan.options.get("policy") == "omega":
        searches = dict(
            ErrorSearch.objects.filter(forest=forest)
            .order_by()
            .values("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
    return GrowthSummary(
        options=plan.options if plan else None,
        version=plan.version if plan else None,
        planned_roots=roots["planned"] if plan else 0,
        roots=roots["all"],
        rollouts=tally.rollouts if tally else 0,
        prompt_tokens=tally.prompt_tokens if tally else 0,
        completion_tokens=tally.completion_tokens if tally else 0,
        pending_expansions=queue["pending"] or 0,
        pending_rollouts=queue["pending_rollouts"] or 0,
        leased_expansions=queue["leased"] or 0,
        given_up_expansions=queue["given_up"] or 0,
        rollouts_by_stage={(stage or "none"): n for stage, n in by_stage.items()},
        searches=searches,
    )


def error_searches_found(*, forest: Forest) -> list[tuple[int, int, int | None]]:
    """``(leaf_id, first_error_node_id, depth)`` of every finished omega search of ``forest`` that found a step."""
    return list(
        ErrorSearch.objects.filter(forest=forest, status="found")
        .order_by("id")
        .values_list("leaf_id", "first_error_id", "first_error__depth")
    )
