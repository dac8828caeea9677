"""Synthetic preferences and the paths exported for step-level training. Pure: no Django.

Pairs: at every node whose children's values differ, each pair of sibling steps whose values differ by at least
``min_margin`` (and by more than nothing) gives one pair: the prompt is the root prompt plus the steps down to the
node, ``chosen`` the higher-valued step and ``rejected`` the lower one, ``margin`` their difference. Children with
no value (no rollout or label reaches them) take part in no pair. With ``neutral`` on, siblings with equal values
also give a pair marked ``PREFERENCE_NEUTRAL`` (2, "neutral" in the webserver specification; the lower node id is
``chosen``). ``max_pairs_per_node`` keeps, at each node, the pairs of largest margin first (decisive before neutral,
then by node ids). Pairs come out by node id, then chosen id, then rejected id: deterministic and without repeats.

Paths (the path-based export kinds): ``distinct`` gives one path per node where a rollout ends, ``rollouts`` one per
rollout (a leaf reached by k identical rollouts gives k records, told apart by their rollout id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from forests.metrics.forest import NO_ROLLOUT_ROW, ForestArrays
from prmsite.domain import LABEL_NEUTRAL, LABEL_PREFERRED

PREFERENCE_CHOSEN = LABEL_PREFERRED  # 1: chosen is preferred to rejected
PREFERENCE_NEUTRAL = LABEL_NEUTRAL  # 2: neither is preferred
PATHS_DISTINCT = "distinct"
PATHS_ROLLOUTS = "rollouts"
PATH_MODES = (PATHS_DISTINCT, PATHS_ROLLOUTS)


@dataclass(frozen=True)
class Pair:
    parent: int  # node index of the prompt's last node (the root for first steps)
    chosen: int  # node index
    rejected: int  # node index
    margin: float
    preference: int  # PREFERENCE_CHOSEN or PREFERENCE_NEUTRAL


def sibling_pairs(
    forest: ForestArrays,
    values: np.ndarray,
    *,
    min_margin: float = 0.0,
    max_pairs_per_node: int | None = None,
    neutral: bool = False,
    parents: np.ndarray | None = None,
) -> Iterator[Pair]:
    """The preference pairs of ``forest`` (see the module docstring), node by node in ascending id.

    ``parents`` restricts them to these node indices (ascending); by default every node with two children or more.
    """
    if min_margin < 0:
        raise ValueError("min_margin must be at least 0")
    if max_pairs_per_node is not None and max_pairs_per_node < 1:
        raise ValueError("max_pairs_per_node must be at least 1")
    starts = forest.child_start
    if parents is None:
        parents = np.flatnonzero(np.diff(starts) >= 2)
    kids_all = forest.child_index
    for parent in parents.tolist():
        kids = kids_all[starts[parent] : starts[parent + 1]]
        kid_values = values[kids]
        valued = ~np.isnan(kid_values)
        if np.count_nonzero(valued) < 2:
            continue
        kids = kids[valued].tolist()
        kid_values = kid_values[valued].tolist()
        if not neutral and min(kid_values) == max(kid_values):
            continue
        candidates: list[tuple[float, int, int, int, int]] = []  # sort key, then the pair
        for (a, value_a), (b, value_b) in combinations(zip(kids, kid_values, strict=True), 2):
            if value_a == value_b:
                if neutral:
                    candidates.append((0.0, 1, a, b, PREFERENCE_NEUTRAL))
                continue
            chosen, rejected = (a, b) if value_a > value_b else (b, a)
            margin = abs(value_a - value_b)
            if margin >= min_margin:
                candidates.append((-margin, 0, chosen, rejected, PREFERENCE_CHOSEN))
        if max_pairs_per_node is not None and len(candidates) > max_pairs_per_node:
            candidates.sort(key=lambda c: (c[0], c[1], c[2], c[3]))
            candidates = candidates[:max_pairs_per_node]
        candidates.sort(key=lambda c: (c[2], c[3]))
        for negated, _, chosen, rejected, preference in candidates:
            yield Pair(parent=parent, chosen=chosen, rejected=rejected, margin=-negated, preference=preference)


@dataclass(frozen=True)
class PathRef:
    leaf: int  # node index where the path ends
    rollout_id: int | None  # None for distinct paths and for a leaf with no rollout row
    rollouts: int  # rollouts ending at this node (1 for a per-rollout path)


def paths(forest: ForestArrays, mode: str = PATHS_DISTINCT) -> Iterator[PathRef]:
    """Export paths, by tree (root id), then by the id of their last node, then by rollout id."""
    if mode not in PATH_MODES:
        raise ValueError(f"paths must be one of {', '.join(PATH_MODES)}, not {mode!r}")
    nodes = forest.rollout_node.tolist()
    rollout_ids = forest.rollout_id.tolist()
    start = 0
    total = len(nodes)
    while start < total:  # rollouts are ordered by (tree, node, rollout id): runs of one node are adjacent
        end = start + 1
        while end < total and nodes[end] == nodes[start]:
            end += 1
        if mode == PATHS_DISTINCT:
            yield PathRef(leaf=nodes[start], rollout_id=None, rollouts=end - start)
        else:
            for i in range(start, end):
                rollout_id = rollout_ids[i]
                yield PathRef(
                    leaf=nodes[i], rollout_id=None if rollout_id == NO_ROLLOUT_ROW else rollout_id, rollouts=1
                )
        start = end
