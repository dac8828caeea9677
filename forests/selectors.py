"""Reads of forests."""

from __future__ import annotations

from dataclasses import dataclass

from forests.models import Forest, Node


@dataclass(frozen=True)
class ForestCounts:
    trees: int
    nodes: int
    leaves: int
    rollouts: int


def forest_counts(*, forest: Forest) -> ForestCounts:
    from rollouts.models import Rollout

    nodes = Node.objects.filter(forest=forest)
    return ForestCounts(
        trees=nodes.filter(depth=0).count(),
        nodes=nodes.count(),
        leaves=nodes.filter(is_leaf=True).count(),
        rollouts=Rollout.objects.filter(forest=forest).count(),
    )
