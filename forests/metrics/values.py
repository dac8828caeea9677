"""Node values: what each value function makes of a forest. Pure: no Django.

- ``labelled`` (exact, from the ground truth): the value of a node is the share of the rollouts passing through it
  (ending at it or below it) that are correct, counting rollouts, not leaves (see ``forests.metrics.forest``).
  Its count is the number of those rollouts, and its interval the Wilson interval of that proportion.
- ``prm:VERSION`` and ``labels:SCHEME`` (from step labels): each label's i-th output is a value of its rollout's i-th
  step node (the depth-(i + 1) ancestor of the leaf where the rollout ends); a node's value is the mean of the values
  it received and its count the number of them. Labelling-scheme codes are read as values by
  ``prmsite.core.domain.label_code_value`` (1 preferred -> 1, 0 not preferred -> 0, 2 neutral -> 0.5). Outputs beyond
  the leaf's depth are ignored.

A node that no rollout (``labelled``) or no label reaches has no value (NaN, count 0). Roots carry the tree's value
too (``labelled``: the share of correct rollouts of the tree), but a beam's score never includes the root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from forests.metrics.forest import ForestArrays
from forests.metrics.stats import wilson_intervals

LABELLED = "labelled"
PRM_PREFIX = "prm:"
LABELS_PREFIX = "labels:"


def version_source(version: str, *, scheme: bool) -> str:
    """The value source a labelled version stands for: ``labels:V`` when a labelling scheme writes it (its labels are
    step codes), ``prm:V`` for any other version (a PRM's scores). The one place this rule is written."""
    return f"{LABELS_PREFIX if scheme else PRM_PREFIX}{version}"


ERROR_VALUE_FUNCTION = (
    "value function {option!r} is not one of: labelled, prm:VERSION (a PRM version's outputs), "
    "labels:SCHEME (a labelling scheme's step labels)"
)


@dataclass(frozen=True)
class ValueFunction:
    """A parsed ``--value_function_option``: ``kind`` is labelled, prm or labels; ``version`` the prm_version read."""

    kind: str
    version: str = ""

    @classmethod
    def parse(cls, option: str) -> ValueFunction:
        option = option.strip()
        if option == LABELLED:
            return cls(kind=LABELLED)
        for prefix in (PRM_PREFIX, LABELS_PREFIX):
            if option.startswith(prefix) and option[len(prefix) :].strip():
                return cls(kind=prefix[:-1], version=option[len(prefix) :].strip())
        raise ValueError(ERROR_VALUE_FUNCTION.format(option=option))

    def __str__(self) -> str:
        return LABELLED if self.kind == LABELLED else f"{self.kind}:{self.version}"


@dataclass(frozen=True)
class NodeValue:
    """One node's value, with the number of rollouts (or labels) behind it and its 95% Wilson interval."""

    count: int
    total: float  # an int for labelled values (correct rollouts)
    low: float | None = None
    high: float | None = None

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def correct(self) -> float:
        """For ``labelled`` values: the number of correct rollouts through the node."""
        return self.total


@dataclass(eq=False)
class NodeValues:
    count: np.ndarray  # float64 per node: rollouts (labelled) or label outputs (prm, labels) behind the value
    total: np.ndarray  # float64 per node: correct rollouts, or the sum of the label outputs

    @property
    def value(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.total / np.where(self.count > 0, self.count, 1), np.nan)

    def intervals(self) -> tuple[np.ndarray, np.ndarray]:
        """95% Wilson intervals (NaN without a count, or for values outside [0, 1])."""
        return wilson_intervals(self.total, self.count)

    def node(self, index: int) -> NodeValue:
        return self.by_id(np.array([index]), np.array([index]))[index]

    def by_id(self, ids: np.ndarray, indices: np.ndarray | None = None) -> dict[int, NodeValue]:
        """``NodeValue``s keyed by ``ids``, of the nodes at ``indices`` (all nodes, in index order, by default).

        Whatever the arrays' dtype, each total is an ``int`` when it is whole and a ``float`` otherwise.
        """
        if indices is None:
            indices = np.arange(self.count.size)
        # float64 whatever was passed in: tolist() then gives floats, whose is_integer() an int lacks before 3.12.
        count = np.asarray(self.count[indices], dtype=np.float64)
        total = np.asarray(self.total[indices], dtype=np.float64)
        low, high = wilson_intervals(total, count)
        return {
            node_id: NodeValue(
                count=int(c),
                total=int(t) if t.is_integer() else t,
                low=None if lo != lo else lo,
                high=None if hi != hi else hi,
            )
            for node_id, c, t, lo, hi in zip(
                ids.tolist(), count.tolist(), total.tolist(), low.tolist(), high.tolist(), strict=True
            )
        }


def _add_subtrees_up(forest: ForestArrays, *arrays: np.ndarray) -> None:
    """Add every node's figures into its parent's, deepest level first: one vectorised pass per depth."""
    for level in reversed(forest.levels[1:]):
        parents = forest.parent[level]
        for array in arrays:
            np.add.at(array, parents, array[level])


def labelled_values(forest: ForestArrays) -> NodeValues:
    """Exact values: correct rollouts through each node over rollouts through it."""
    n = forest.size
    count = np.bincount(forest.rollout_node, minlength=n).astype(np.float64)
    # astype: for an empty input (a tree without rollouts), bincount with weights returns int64, not float64.
    weights = forest.rollout_correct.astype(np.float64)
    total = np.bincount(forest.rollout_node, weights=weights, minlength=n).astype(np.float64)
    _add_subtrees_up(forest, count, total)
    return NodeValues(count=count, total=total)


def step_nodes(forest: ForestArrays, leaf_index: int, num_steps: int) -> list[int]:
    """Indices of the step nodes of a rollout ending at ``leaf_index`` with ``num_steps`` steps: the depth-1 ancestor
    first, as far as both the path and the steps go."""
    return forest.path(leaf_index)[:num_steps]


def label_values(forest: ForestArrays, labels: Iterable[tuple[int, Sequence[float]]]) -> NodeValues:
    """Values from step labels: ``labels`` holds ``(leaf_index, outputs)``, one pair per label.

    Vectorised: the outputs are flattened, and every output climbs from its leaf to its step's depth together with
    all the others, one depth per round.
    """
    n = forest.size
    leaves: list[int] = []
    lengths: list[int] = []
    flat: list[float] = []
    for leaf_index, outputs in labels:
        leaves.append(leaf_index)
        lengths.append(len(outputs))
        flat.extend(outputs)
    count = np.zeros(n, dtype=np.float64)
    total = np.zeros(n, dtype=np.float64)
    if not flat:
        return NodeValues(count=count, total=total)
    values = np.asarray(flat, dtype=np.float64)
    leaf_of = np.repeat(np.asarray(leaves, dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum([0, *lengths[:-1]]), lengths)
    step_depth = np.arange(values.size) - starts + 1  # output i belongs to the depth-(i + 1) node
    climb = forest.depth[leaf_of] - step_depth  # how far above the leaf that node is
    keep = (climb >= 0) & np.isfinite(values)  # outputs beyond the leaf's depth have no node
    node = leaf_of[keep]
    climb = climb[keep]
    values = values[keep]
    while True:
        moving = climb > 0
        if not moving.any():
            break
        node[moving] = forest.parent[node[moving]]
        climb[moving] -= 1
    np.add.at(count, node, 1.0)
    np.add.at(total, node, values)
    return NodeValues(count=count, total=total)
