"""A forest (or a single tree) as flat arrays: what every metric reads. Pure: no Django.

Built from two streams of plain tuples, in any order:

- node rows ``(id, parent_id, depth, is_leaf, prediction, ground_truth[, correct])`` (``ground_truth`` is read on
  roots only; ``correct``, the grader's stored verdict on a leaf, on leaves only);
- rollout rows ``(rollout_id, node_id, prediction, total_tokens[, correct[, answer]])``: one per rollout, ``node_id``
  the node where it ends, ``total_tokens`` the tokens it spent when the worker recorded them (else ``None``),
  ``correct`` the grader's stored verdict and ``answer`` the final answer's text.

Correctness is the stored verdict (``forests.intake.rollout_verdict`` decided it once); rows that carry none (tests,
hand-built trees) are read as a label forest's, by ``prmsite.core.domain.rollout_is_correct``, the label kind's rule.

Rollouts are counted, not leaves: a leaf reached by k identical rollouts holds k rollouts. A leaf that no rollout
row ends at (a forest grown before rollouts were linked to their leaves, or nodes inserted directly) counts as one
rollout carrying the leaf's own prediction, so such forests still have values.

Nodes are stored in ascending id order, so "lower index" and "lower node id" are the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from prmsite.core.domain import rollout_is_correct

NodeRow = tuple  # (id, parent_id, depth, is_leaf, prediction, ground_truth[, correct][, text])
RolloutRow = tuple  # (rollout_id, node_id, prediction, total_tokens[, correct[, answer]])
NODE_COLUMNS = 6  # without the optional verdict

NO_ROLLOUT_ROW = -1  # rollout id of the one rollout a leaf with no rollout row stands for
NODE_TWICE = "node {node} appears twice among the rows"
PARENT_MISSING = "node {node} has parent {parent}, which is not among the rows"
DEPTH_BROKEN = "node {node}'s depth is not its parent's plus one (the rows' parent links are broken)"
ROLLOUT_NODE_MISSING = "rollout {rollout} ends at node {node}, not in the forest"
_CHUNK = 65_536


def _as_int_or_none(value: float) -> int | None:
    return None if value != value else int(value)  # NaN is the one float not equal to itself


def _chunks(rows: Iterable[tuple], size: int = _CHUNK) -> Iterator[list[tuple]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _table(
    rows: Iterable[tuple],
    width: int,
    on_rows: Callable[[int], None] | None = None,
    texts: list[str] | None = None,
) -> np.ndarray:
    """Rows of numbers and ``None`` as a float64 table (``None`` becomes NaN), built chunk by chunk;
    ``on_rows(rows_so_far)`` is called after each chunk. With ``texts``, each row carries one more column, a string,
    appended to ``texts`` in row order."""
    parts = []
    read = 0
    for chunk in _chunks(rows):
        if texts is not None:
            texts.extend(row[width] for row in chunk)
            chunk = [row[:width] for row in chunk]
        parts.append(np.array(chunk, dtype=np.float64).reshape(len(chunk), width))
        read += len(chunk)
        if on_rows is not None:
            on_rows(read)
    return np.concatenate(parts) if parts else np.empty((0, width), dtype=np.float64)


@dataclass(eq=False)
class ForestArrays:
    ids: np.ndarray  # int64, ascending
    parent: np.ndarray  # int64: index of the parent, -1 for a root
    root: np.ndarray  # int64: index of the node's root
    depth: np.ndarray  # int64
    is_leaf: np.ndarray  # bool
    prediction: np.ndarray  # float64, NaN where none
    ground_truth: np.ndarray  # float64 per root index (NaN elsewhere or when the item has none)
    child_start: np.ndarray  # children of node i: child_index[child_start[i]:child_start[i + 1]], ascending id
    child_index: np.ndarray
    levels: list[np.ndarray]  # node indices by depth: levels[d] holds every node at depth d
    # One entry per rollout, ordered by (tree, node index, rollout id); see the module docstring.
    rollout_id: np.ndarray  # int64; NO_ROLLOUT_ROW for the rollout a leaf with no row stands for
    rollout_node: np.ndarray  # int64 node index
    rollout_prediction: list[int | None]
    rollout_correct: np.ndarray  # bool: the stored verdict (see the module docstring)
    node_correct: np.ndarray  # bool per node: the stored verdict on the rollouts that end there (False elsewhere)
    rollout_answer: list[str | None]  # the final answer's text (a label rollout's prediction as text)
    rollout_tokens: np.ndarray  # float64, NaN where not recorded
    texts: list[str] | None = None  # text of each node, by index, when the rows carried it
    _tree_bounds: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return int(self.ids.size)

    @property
    def roots(self) -> np.ndarray:
        return self.levels[0] if self.levels else np.empty(0, dtype=np.int64)

    @property
    def rollout_tree(self) -> np.ndarray:
        return self.root[self.rollout_node]

    def index_of(self, node_id: int) -> int:
        """The index of node ``node_id``; ``KeyError`` when it is not in the forest."""
        position = int(np.searchsorted(self.ids, node_id))
        if position >= self.ids.size or self.ids[position] != node_id:
            raise KeyError(node_id)
        return position

    def children(self, index: int) -> np.ndarray:
        return self.child_index[self.child_start[index] : self.child_start[index + 1]]

    def path(self, index: int) -> list[int]:
        """Indices of the nodes from the root's first step down to ``index`` (the root excluded)."""
        steps = []
        parent = self.parent
        while parent[index] >= 0:
            steps.append(int(index))
            index = parent[index]
        steps.reverse()
        return steps

    def tree_ground_truth(self, index: int) -> int | None:
        return _as_int_or_none(float(self.ground_truth[self.root[index]]))

    def node_prediction(self, index: int) -> int | None:
        return _as_int_or_none(float(self.prediction[index]))

    def node_is_correct(self, index: int) -> bool:
        """The stored verdict on the rollouts that end at node ``index`` (False where none ends)."""
        return bool(self.node_correct[index])

    def rollouts_of_tree(self, root_index: int) -> slice:
        """The rollouts of the tree rooted at ``root_index``, as a slice of the rollout arrays."""
        if not self._tree_bounds:
            trees = self.rollout_tree
            starts = np.flatnonzero(np.r_[True, trees[1:] != trees[:-1]]) if trees.size else np.empty(0, int)
            ends = np.r_[starts[1:], trees.size]
            self._tree_bounds = {int(trees[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
        start, end = self._tree_bounds.get(int(root_index), (0, 0))
        return slice(start, end)

    def trees_with_rollouts(self) -> np.ndarray:
        """Root indices of the trees holding at least one rollout, ascending."""
        return np.unique(self.rollout_tree)


def forest_arrays(
    node_rows: Iterable[NodeRow],
    rollout_rows: Iterable[RolloutRow] = (),
    *,
    on_rows: Callable[[int], None] | None = None,
    with_texts: bool = False,
) -> ForestArrays:
    """Build the arrays of a forest from its rows (see the module docstring); ``on_rows(node_rows_so_far)`` reports
    progress while the node rows are read. With ``with_texts``, node rows carry a 7th column, the node's text, kept
    in ``texts``.

    Raises ``ValueError`` when the rows are not whole trees: a parent missing from the rows, a depth that is not its
    parent's plus one (which also rules out cycles), or a rollout ending at a node that is not among the rows.
    """
    rollout_table = list(rollout_rows)  # read first: every rollout's node already exists when the nodes are read
    texts: list[str] | None = [] if with_texts else None
    node_rows = iter(node_rows)
    first = next(node_rows, None)
    width = NODE_COLUMNS if first is None else len(first) - (1 if with_texts else 0)
    if first is not None:
        node_rows = itertools.chain([first], node_rows)
    table = _table(node_rows, width, on_rows, texts)
    order = np.argsort(table[:, 0], kind="stable")
    table = table[order]
    if texts is not None:
        texts = np.asarray(texts, dtype=object)[order].tolist() if texts else []
    n = table.shape[0]
    ids = table[:, 0].astype(np.int64)
    if n > 1 and np.any(ids[1:] == ids[:-1]):
        duplicate = int(ids[1:][ids[1:] == ids[:-1]][0])
        raise ValueError(NODE_TWICE.format(node=duplicate))
    depth = table[:, 2].astype(np.int64)
    is_leaf = table[:, 3] != 0
    prediction = table[:, 4].copy()
    parent_ids = table[:, 1]
    is_root = np.isnan(parent_ids)

    parent = np.full(n, -1, dtype=np.int64)
    children_mask = ~is_root
    wanted = parent_ids[children_mask].astype(np.int64)
    positions = np.searchsorted(ids, wanted)
    positions_clipped = np.minimum(positions, max(n - 1, 0))
    found = (positions < n) & (ids[positions_clipped] == wanted) if n else np.zeros(0, dtype=bool)
    if not np.all(found):
        child = int(ids[children_mask][~found][0])
        raise ValueError(PARENT_MISSING.format(node=child, parent=int(wanted[~found][0])))
    parent[children_mask] = positions_clipped
    bad_depth = np.zeros(n, dtype=bool)
    bad_depth[is_root] = depth[is_root] != 0
    bad_depth[children_mask] = depth[children_mask] != depth[parent[children_mask]] + 1
    if np.any(bad_depth):
        node = int(ids[bad_depth][0])
        raise ValueError(DEPTH_BROKEN.format(node=node))

    by_depth = np.argsort(depth, kind="stable")  # within a depth, ascending index (= id)
    bounds = np.searchsorted(depth[by_depth], np.arange(int(depth.max()) + 2 if n else 1))
    levels = [by_depth[bounds[d] : bounds[d + 1]] for d in range(len(bounds) - 1)]
    root = np.arange(n, dtype=np.int64)
    for level in levels[1:]:
        root[level] = root[parent[level]]
    ground_truth = np.full(n, np.nan)
    ground_truth[is_root] = table[is_root, 5]
    if width > NODE_COLUMNS:
        node_correct = table[:, NODE_COLUMNS] == 1  # NaN (no verdict) is not correct
    else:  # rows without a verdict: a label forest's leaves, by the label kind's rule
        truths = ground_truth[root]
        node_correct = is_leaf & ~np.isnan(prediction) & (prediction == truths)

    child_order = np.flatnonzero(children_mask)
    child_order = child_order[np.argsort(parent[child_order], kind="stable")]
    child_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(parent[child_order], minlength=n), out=child_start[1:])

    forest = ForestArrays(
        ids=ids,
        parent=parent,
        root=root,
        depth=depth,
        is_leaf=is_leaf,
        prediction=prediction,
        ground_truth=ground_truth,
        child_start=child_start,
        child_index=child_order,
        levels=levels,
        rollout_id=np.empty(0, dtype=np.int64),
        rollout_node=np.empty(0, dtype=np.int64),
        rollout_prediction=[],
        rollout_correct=np.empty(0, dtype=bool),
        node_correct=node_correct,
        rollout_answer=[],
        rollout_tokens=np.empty(0, dtype=np.float64),
        texts=texts,
    )
    _attach_rollouts(forest, rollout_table)
    return forest


def _attach_rollouts(forest: ForestArrays, rows: list[RolloutRow]) -> None:
    n = forest.size
    r_ids = np.fromiter((NO_ROLLOUT_ROW if r[0] is None else r[0] for r in rows), dtype=np.int64, count=len(rows))
    r_node_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    r_tokens = np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64).reshape(len(rows))
    r_predictions = [r[2] for r in rows]
    # The stored verdict and answer when the rows carry them (None: read by the label rule below / the prediction).
    r_verdicts: list[bool | None] = [bool(r[4]) if len(r) > 4 and r[4] is not None else None for r in rows]
    r_answers = [r[5] if len(r) > 5 else None for r in rows]
    positions = np.searchsorted(forest.ids, r_node_ids)
    clipped = np.minimum(positions, max(n - 1, 0))
    found = (positions < n) & (forest.ids[clipped] == r_node_ids) if n else np.zeros(len(rows), dtype=bool)
    if not np.all(found):
        missing = np.flatnonzero(~found)[0]
        raise ValueError(ROLLOUT_NODE_MISSING.format(rollout=int(r_ids[missing]), node=int(r_node_ids[missing])))
    r_nodes = clipped.astype(np.int64)

    # A leaf that no rollout row ends at stands for one rollout with the leaf's own prediction.
    has_row = np.zeros(n, dtype=bool)
    has_row[r_nodes] = True
    orphans = np.flatnonzero(forest.is_leaf & ~has_row)
    r_ids = np.concatenate([r_ids, np.full(orphans.size, NO_ROLLOUT_ROW, dtype=np.int64)])
    r_nodes = np.concatenate([r_nodes, orphans])
    r_tokens = np.concatenate([r_tokens, np.full(orphans.size, np.nan)])
    r_predictions += [_as_int_or_none(float(p)) for p in forest.prediction[orphans]]
    r_verdicts += [bool(c) for c in forest.node_correct[orphans]]
    r_answers += [None] * orphans.size

    order = np.lexsort((r_ids, r_nodes, forest.root[r_nodes]))
    forest.rollout_id = r_ids[order]
    forest.rollout_node = r_nodes[order]
    forest.rollout_tokens = r_tokens[order]
    forest.rollout_prediction = [r_predictions[i] for i in order.tolist()]
    truths = [_as_int_or_none(g) for g in forest.ground_truth[forest.root[forest.rollout_node]].tolist()]
    verdicts = [r_verdicts[i] for i in order.tolist()]
    forest.rollout_correct = np.fromiter(
        (
            rollout_is_correct(prediction, truth) if verdict is None else verdict
            for verdict, prediction, truth in zip(verdicts, forest.rollout_prediction, truths, strict=True)
        ),
        dtype=bool,
        count=len(truths),
    )
    answers = [r_answers[i] for i in order.tolist()]
    forest.rollout_answer = [
        (None if prediction is None else str(prediction)) if answer is None else answer
        for answer, prediction in zip(answers, forest.rollout_prediction, strict=True)
    ]
