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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from forests.metrics.forest import ForestArrays
from prmsite.core.domain import LABEL_NEUTRAL, LABEL_PREFERRED

PREFERENCE_CHOSEN = LABEL_PREFERRED  # 1: chosen is preferred to rejected
PREFERENCE_NEUTRAL = LABEL_NEUTRAL  # 2: neither is preferred
PATHS_DISTINCT = "distinct"
PATHS_ROLLOUTS = "rollouts"
PATH_MODES = (PATHS_DISTINCT, PATHS_ROLLOUTS)
PATHS_UNKNOWN = "paths must be one of {modes}, not {paths!r}"
MIN_MARGIN_INVALID = "min_margin must be a number at least 0, not {value!r}"
MAX_PAIRS_INVALID = "max_pairs_per_node must be a whole number at least 1, not {value!r}"


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
    parents: Iterable[int] | None = None,
) -> Iterator[Pair]:
    """The preference pairs of ``forest`` (see the module docstring), node by node in ascending id.

    ``parents`` restricts them to these node indices (ascending); by default every node with two children or more.
    """
    if min_margin < 0:
        raise ValueError(MIN_MARGIN_INVALID.format(value=min_margin))
    if max_pairs_per_node is not None and max_pairs_per_node < 1:
        raise ValueError(MAX_PAIRS_INVALID.format(value=max_pairs_per_node))
    if parents is None:
        parents = np.flatnonzero(np.diff(forest.child_start) >= 2).tolist()
    starts = forest.child_start.tolist()
    kids_all = forest.child_index.tolist()
    value_of = values.tolist()
    for parent in parents:
        kids = [kid for kid in kids_all[starts[parent] : starts[parent + 1]] if value_of[kid] == value_of[kid]]
        if len(kids) < 2:
            continue
        kid_values = [value_of[kid] for kid in kids]
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


@dataclass(frozen=True, eq=False)
class PathTable:
    """The paths a path-based export writes, in order: by tree (root id), last node id, then rollout id."""

    leaf: np.ndarray  # int64 node index where each path ends
    rollout: np.ndarray  # int64 index into the forest's rollout arrays (the first rollout ending there, if distinct)
    rollouts: np.ndarray  # int64 rollouts ending at the leaf (distinct) or 1 (one path per rollout)
    per_rollout: bool

    def __len__(self) -> int:
        return int(self.leaf.size)


def path_table(forest: ForestArrays, mode: str = PATHS_DISTINCT) -> PathTable:
    """The export paths of ``forest``: one per node where rollouts end (``distinct``) or one per rollout."""
    if mode not in PATH_MODES:
        raise ValueError(PATHS_UNKNOWN.format(modes=", ".join(PATH_MODES), paths=mode))
    nodes = forest.rollout_node  # ordered by (tree, node, rollout id): runs of one node are adjacent
    if mode == PATHS_ROLLOUTS:
        everything = np.flatnonzero(forest.depth[nodes] > 0)  # a path has at least one step
        ones = np.ones(everything.size, dtype=np.int64)
        return PathTable(leaf=nodes[everything], rollout=everything, rollouts=ones, per_rollout=True)
    starts = np.flatnonzero(np.r_[True, nodes[1:] != nodes[:-1]]) if nodes.size else np.empty(0, dtype=np.int64)
    counts = np.diff(np.r_[starts, nodes.size]).astype(np.int64)
    stepped = forest.depth[nodes[starts]] > 0  # a path has at least one step
    return PathTable(leaf=nodes[starts][stepped], rollout=starts[stepped], rollouts=counts[stepped], per_rollout=False)


def ancestors(forest: ForestArrays, leaves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step nodes of the paths ending at ``leaves``, flattened: ``(offsets, nodes)``, where path i's steps (depth
    1 first) are ``nodes[offsets[i]:offsets[i + 1]]``. Vectorised: all paths climb one depth per round."""
    depth = forest.depth[leaves]
    offsets = np.zeros(leaves.size + 1, dtype=np.int64)
    np.cumsum(depth, out=offsets[1:])
    nodes = np.empty(int(offsets[-1]), dtype=np.int64)
    current = leaves.astype(np.int64).copy()
    position = offsets[1:] - 1  # where each path's deepest step goes
    remaining = depth.copy()
    while True:
        climbing = remaining > 0
        if not climbing.any():
            break
        nodes[position[climbing]] = current[climbing]
        current[climbing] = forest.parent[current[climbing]]
        position[climbing] -= 1
        remaining[climbing] -= 1
    return offsets, nodes
