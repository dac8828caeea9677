"""Reads of forests: counts and progress, per forest and per tree, each in a constant number of queries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, F, Max, Q

from forests.models import Forest, Node
from prmsite.errors import NotFoundError

FOREST_NOT_FOUND = "No forest named {name!r}."
TREE_NOT_FOUND = "Forest {forest!r} has no tree with root id {root_id}."

# A leaf is correct when its prediction equals the ground truth held by its tree's root.
_CORRECT_LEAF = Q(is_leaf=True, prediction=F("tree__ground_truth"))


@dataclass(frozen=True)
class ForestCounts:
    trees: int
    nodes: int
    leaves: int
    rollouts: int


@dataclass(frozen=True)
class ForestProgress:
    """How far a forest has grown: rollouts end at leaves, and correct leaves predict the ground truth."""

    trees: int = 0
    trees_with_leaves: int = 0
    nodes: int = 0
    leaves: int = 0
    correct_leaves: int = 0
    rollouts: int = 0

    @property
    def accuracy(self) -> float | None:
        """Share of correct leaves over the whole forest (``None`` before the first rollout)."""
        return self.correct_leaves / self.leaves if self.leaves else None


@dataclass(frozen=True)
class TreeStats:
    nodes: int = 1
    leaves: int = 0
    correct_leaves: int = 0
    max_depth: int = 0

    @property
    def accuracy(self) -> float | None:
        """The root's exact value: share of this tree's leaves whose prediction is the ground truth."""
        return self.correct_leaves / self.leaves if self.leaves else None


def forest_get(*, name: str) -> Forest:
    forest = Forest.objects.filter(name=name).first()
    if forest is None:
        raise NotFoundError(FOREST_NOT_FOUND.format(name=name))
    return forest


def forest_counts(*, forest: Forest) -> ForestCounts:
    from rollouts.models import Rollout

    nodes = Node.objects.filter(forest=forest)
    return ForestCounts(
        trees=nodes.filter(depth=0).count(),
        nodes=nodes.count(),
        leaves=nodes.filter(is_leaf=True).count(),
        rollouts=Rollout.objects.filter(forest=forest).count(),
    )


def forest_progress_many(*, forest_ids: Iterable[int]) -> dict[int, ForestProgress]:
    """Progress of each forest in ``forest_ids``, in two queries whatever their number."""
    from rollouts.models import Rollout

    ids = list(forest_ids)
    if not ids:
        return {}
    rows = (
        Node.objects.filter(forest_id__in=ids)
        .order_by()
        .values("forest_id")
        .annotate(
            trees=Count("id", filter=Q(depth=0)),
            trees_with_leaves=Count("tree_id", filter=Q(is_leaf=True), distinct=True),
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            correct_leaves=Count("id", filter=_CORRECT_LEAF),
        )
    )
    rollouts = dict(
        Rollout.objects.filter(forest_id__in=ids)
        .order_by()
        .values("forest_id")
        .annotate(n=Count("id"))
        .values_list("forest_id", "n")
    )
    progress = {forest_id: ForestProgress(rollouts=rollouts.get(forest_id, 0)) for forest_id in ids}
    for row in rows:
        forest_id = row.pop("forest_id")
        progress[forest_id] = ForestProgress(**row, rollouts=rollouts.get(forest_id, 0))
    return progress


def forest_progress(*, forest: Forest) -> ForestProgress:
    return forest_progress_many(forest_ids=[forest.pk])[forest.pk]


def forest_roots(*, forest: Forest):
    """The roots of ``forest`` in seeding order (a queryset, for pagination)."""
    return (
        Node.objects.filter(forest=forest, depth=0)
        .order_by("id")
        .only("id", "text", "ground_truth", "serialized_item", "forest_id")
    )


def tree_stats_many(*, root_ids: Iterable[int]) -> dict[int, TreeStats]:
    """Counts and accuracy of each tree in ``root_ids``, in one query."""
    ids = list(root_ids)
    stats = {root_id: TreeStats() for root_id in ids}
    if not ids:
        return stats
    rows = (
        Node.objects.filter(tree_id__in=ids)
        .order_by()
        .values("tree_id")
        .annotate(
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            correct_leaves=Count("id", filter=_CORRECT_LEAF),
            max_depth=Max("depth"),
        )
    )
    for row in rows:
        root_id = row.pop("tree_id")
        stats[root_id] = TreeStats(**row)
    return stats


def tree_root_get(*, forest: Forest, root_id: int) -> Node:
    root = Node.objects.filter(forest=forest, depth=0, pk=root_id).first()
    if root is None:
        raise NotFoundError(TREE_NOT_FOUND.format(forest=forest.name, root_id=root_id))
    return root


def tree_rows(*, root: Node) -> list[tuple[int, int | None, int, str, bool, int | None]]:
    """Every node of ``root``'s tree as ``(id, parent_id, depth, text, is_leaf, prediction)``, in one query."""
    return list(
        Node.objects.filter(tree_id=root.pk)
        .order_by("id")
        .values_list("id", "parent_id", "depth", "text", "is_leaf", "prediction")
        .iterator(chunk_size=2000)
    )
