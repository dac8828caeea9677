"""Laying a tree out for its page: a flat, depth-first list of entries that a template turns into nested
``<details>`` without recursion. Pure: no Django.

Subtrees deeper than ``open_depth`` below the shown node start collapsed; at most ``max_nodes`` entries are laid
out, and a node whose descendants did not fit says how many were left out (its page shows them). Each node shows at
most ``step_chars`` characters of its text, through the page's ``PageBudget`` (``prmsite.core.rendering``), shallowest
nodes first: the open ones are the ones read, so they get the markdown while it lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from forests.metrics.forest import forest_arrays
from forests.metrics.values import NodeValue, labelled_values
from prmsite.core.rendering import PageBudget, ShownText

# (id, parent_id, depth, text, is_leaf, prediction, text_chars[, correct, answer]): ``text`` may be the start of the
# node's text, whose whole length is ``text_chars`` (the database sends a page only what it can show); ``correct`` and
# ``answer`` are a leaf's stored verdict and final answer (rows without them are read as a label tree's).
TreeRow = tuple
# (rollout id, node id where it ends, prediction[, correct]): ``correct`` the stored verdict.
TreeRollout = tuple


@dataclass
class TreeEntry:
    id: int
    parent_id: int | None
    depth: int
    is_leaf: bool
    prediction: int | None
    value: NodeValue
    children: int
    subtree_nodes: int
    open: bool
    hidden_nodes: int = 0  # descendants left out of the layout (over max_nodes)
    closes: int = 0  # how many <details> end right after this entry
    correct: bool | None = None  # leaves only: the grader's stored verdict on the rollouts that end here
    answer: str | None = None  # leaves only: their final answer as text
    text: ShownText | None = None  # set once every entry is laid out

    @property
    def html(self) -> str:
        return self.text.html if self.text is not None else ""

    @property
    def close_range(self) -> range:
        return range(self.closes)


@dataclass
class TreeLayout:
    entries: list[TreeEntry]
    total_nodes: int
    shown_nodes: int
    focus_id: int
    path: list[int]  # ids from the root down to the focus node (the focus included)
    values: dict[int, NodeValue]  # exact values with counts and Wilson intervals (forests.metrics.values)


def tree_layout(
    rows: Sequence[TreeRow],
    *,
    ground_truth: int | None,
    budget: PageBudget,
    rollouts: Iterable[TreeRollout] = (),
    focus_id: int | None = None,
    open_depth: int = 3,
    max_nodes: int = 2000,
    step_chars: int | None = None,
) -> TreeLayout:
    """The layout of the subtree under ``focus_id`` (the root when ``None``) of the tree made of ``rows``.

    Values are computed over the whole tree (``rows`` must be one whole tree) from ``rollouts``, counting rollouts
    (a leaf no rollout ends at counts as one). Texts are shown through ``budget``, at most ``step_chars`` characters
    each (``None``: no cap of its own). Raises ``KeyError`` when ``focus_id`` is not one of the rows.
    """
    with_verdicts = bool(rows) and len(rows[0]) > 7
    arrays = forest_arrays(
        (
            (r[0], r[1], r[2], r[4], r[5], ground_truth if r[1] is None else None, *((r[7],) if with_verdicts else ()))
            for r in rows
        ),
        ((r[0], r[1], r[2], None, *r[3:4]) for r in rollouts),
    )
    values = labelled_values(arrays).by_id(arrays.ids)
    by_id = {row[0]: row for row in rows}
    children: dict[int, list[int]] = {}
    root_id = None
    for node_id, parent_id, *_ in rows:
        if parent_id is None:
            root_id = node_id
        else:
            children.setdefault(parent_id, []).append(node_id)
    for kids in children.values():
        kids.sort()
    focus = root_id if focus_id is None else focus_id
    if focus is None or focus not in by_id:
        raise KeyError(focus_id)
    sizes = _subtree_sizes(focus, children)

    path = [focus]
    while by_id[path[-1]][1] is not None:
        path.append(by_id[path[-1]][1])
    path.reverse()

    base_depth = by_id[focus][2]
    entries: list[TreeEntry] = []
    entry_of: dict[int, TreeEntry] = {}
    stack: list[tuple[bool, int]] = [(True, focus)]
    while stack:
        opening, node_id = stack.pop()
        if not opening:
            entries[-1].closes += 1
            continue
        row = by_id[node_id]
        parent_id, depth, is_leaf, prediction = row[1], row[2], row[4], row[5]
        if len(entries) >= max_nodes:
            entry_of[parent_id].hidden_nodes += sizes[node_id]  # the parent was laid out: only it reaches here
            continue
        entry = TreeEntry(
            id=node_id,
            parent_id=parent_id,
            depth=depth,
            is_leaf=is_leaf,
            prediction=prediction,
            value=values[node_id],
            children=len(children.get(node_id, ())),
            subtree_nodes=sizes[node_id],
            open=depth - base_depth < open_depth,
        )
        if is_leaf:
            index = arrays.index_of(node_id)
            entry.correct = arrays.node_is_correct(index)
            entry.answer = row[8] if len(row) > 8 else (None if prediction is None else str(prediction))
        entries.append(entry)
        entry_of[node_id] = entry
        stack.append((False, node_id))
        stack.extend((True, child) for child in reversed(children.get(node_id, ())))
    for entry in sorted(entries, key=lambda e: e.depth):  # stable: depth first, then page order
        row = by_id[entry.id]
        entry.text = budget.show(row[3], full_chars=row[6], limit=step_chars)
    return TreeLayout(
        entries=entries,
        total_nodes=len(rows),
        shown_nodes=len(entries),
        focus_id=focus,
        path=path,
        values=values,
    )


def _subtree_sizes(top: int, children: dict[int, list[int]]) -> dict[int, int]:
    order: list[int] = []
    stack = [top]
    while stack:
        node_id = stack.pop()
        order.append(node_id)
        stack.extend(children.get(node_id, ()))
    sizes: dict[int, int] = {}
    for node_id in reversed(order):
        sizes[node_id] = 1 + sum(sizes[child] for child in children.get(node_id, ()))
    return sizes
