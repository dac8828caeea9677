"""Exact ("labelled") node values from the ground truth. Pure: no Django.

The value of a node is the share of the leaves in its subtree (itself included, when a rollout ends there) whose
prediction equals the tree's ground truth; a leaf without a parsable prediction counts as wrong. A node with no leaf
below it has no value (``None``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Row = tuple[int, int | None, bool, int | None]  # (id, parent_id, is_leaf, prediction)


@dataclass(frozen=True)
class NodeValue:
    leaves: int
    correct: int

    @property
    def value(self) -> float | None:
        return self.correct / self.leaves if self.leaves else None


def node_values(rows: Iterable[Row], *, ground_truth: int | None) -> dict[int, NodeValue]:
    """The value of every node of one tree, from its ``(id, parent_id, is_leaf, prediction)`` rows in any order.

    O(n): one pass to read the rows, one to order them parents-first, one to add each subtree up into its parent.
    Raises ``ValueError`` when a row's parent is missing from the rows (the rows are not one whole tree) or when
    the parent links form a cycle.
    """
    parent_of: dict[int, int | None] = {}
    leaves: dict[int, int] = {}
    correct: dict[int, int] = {}
    children: dict[int | None, list[int]] = {}
    for node_id, parent_id, is_leaf, prediction in rows:
        parent_of[node_id] = parent_id
        leaves[node_id] = 1 if is_leaf else 0
        correct[node_id] = 1 if is_leaf and prediction is not None and prediction == ground_truth else 0
        children.setdefault(parent_id, []).append(node_id)
    for node_id, parent_id in parent_of.items():
        if parent_id is not None and parent_id not in parent_of:
            raise ValueError(f"node {node_id} has parent {parent_id}, which is not among the rows")
    order: list[int] = []
    stack = list(children.get(None, []))
    while stack:
        node_id = stack.pop()
        order.append(node_id)
        stack.extend(children.get(node_id, ()))
    if len(order) != len(parent_of):
        raise ValueError("the rows' parent links form a cycle")
    for node_id in reversed(order):  # children before their parents
        parent_id = parent_of[node_id]
        if parent_id is not None:
            leaves[parent_id] += leaves[node_id]
            correct[parent_id] += correct[node_id]
    return {node_id: NodeValue(leaves=leaves[node_id], correct=correct[node_id]) for node_id in parent_of}
