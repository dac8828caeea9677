"""Laying a tree out for its page: a flat, depth-first list of entries that a template turns into nested blocks
without recursion. Pure: no Django.

A *block* is a run of consecutive steps: it starts at the shown node or at a child of a fork (a node with several
children) and goes on while each step has exactly one child, so a long chain is one block, not a staircase. A fork
ends its block and opens a collapsible list of its branches (each a block); collapsing it hides the branches, never
the fork's own text. Forks with ``open_depth`` or more forks above them start collapsed (a long chain does not count:
its steps are one block). At most ``max_nodes``
entries are laid out, and a node whose descendants did not fit says how many were left out (its page shows them).
Each node shows at most ``step_chars`` characters of its text, through the page's ``PageBudget``
(``prmsite.core.rendering``), shallowest nodes first, so they get the markdown while it lasts.

Every node carries one cell per value source laid over the tree (``SourceInput``): the exact values (from the
rollouts' verdicts) or the step labels of a ``prm:V`` / ``labels:S`` version, each with its count and interval, its
colour, and whether it is the first step on its path whose value falls below the source's threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from forests.metrics.forest import ForestArrays, forest_arrays
from forests.metrics.values import NodeValue, NodeValues, label_values, labelled_values
from prmsite.core.rendering import PageBudget, ShownText

# (id, parent_id, depth, text, is_leaf, prediction, text_chars[, correct, answer]): ``text`` may be the start of the
# node's text, whose whole length is ``text_chars`` (the database sends a page only what it can show); ``correct`` and
# ``answer`` are a leaf's stored verdict and final answer (rows without them are read as a label tree's).
TreeRow = tuple
# (rollout id, node id where it ends, prediction[, correct]): ``correct`` the stored verdict.
TreeRollout = tuple


DASH = "\u2013"  # what a missing number shows


@dataclass(frozen=True)
class SourceInput:
    """A value source to lay over the tree: ``labels`` is ``None`` for the exact values, else the
    ``(leaf node id, step outputs)`` of each of the source's labels on the tree's rollouts."""

    name: str
    labels: Sequence[tuple[int, Sequence[float]]] | None = None
    labelled_rollouts: int = 0  # the tree's rollouts that carry at least one of the source's labels


@dataclass(frozen=True)
class Cell:
    """One source's value at one node, as the page draws it."""

    source: str
    value: NodeValue
    exact: bool  # counts are rollouts (exact values) rather than labels
    first_below: bool  # the first step on its path whose value is below the threshold

    @property
    def shown(self) -> str:
        """The value as the cell writes it (two decimals), or a dash."""
        value = self.value.value
        return DASH if value is None else f"{value:.2f}"

    @property
    def bar(self) -> float:
        """The value clamped to [0, 1], for the bar."""
        value = self.value.value
        return 0.0 if value is None else min(1.0, max(0.0, value))

    @property
    def style(self) -> str:
        """The cell's colour: red (hue 0) at value 0 to green (hue 120) at value 1; grey without a value."""
        return f"background: hsl({round(120 * self.bar)} 65% 82%)" if self.value.count else ""

    @property
    def meter(self) -> str:
        return f"{self.bar:.3f}"

    @property
    def hover(self) -> str:
        v = self.value
        if v.value is None:
            return f"{self.source}: no value (nothing reaches this step)"
        if self.exact:
            text = f"{self.source}: {v.value:.3f}, {v.total}/{v.count} rollouts correct"
        else:
            text = f"{self.source}: {v.value:.3f}, mean of {v.count} label{'s' if v.count != 1 else ''}"
        if v.low is not None and v.high is not None:
            text += f", 95% interval [{v.low:.2f}, {v.high:.2f}]"
        return text


@dataclass(frozen=True)
class SourceSummary:
    name: str
    threshold: float
    exact: bool
    labelled_rollouts: int  # rollouts of the tree the source reaches (exact: every rollout)
    first_below: int  # nodes marked as the first step below the threshold


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
    open: bool  # forks: whether its branches start shown
    hidden_nodes: int = 0  # descendants left out of the layout (over max_nodes)
    starts_block: bool = False  # a <div class="block"> opens before this step
    fork: bool = False  # a fork whose branches (some laid out) follow in a <details class="kids">
    ends_block: bool = False  # its block ends after it (no child of it laid out)
    closes: int = 0  # after the block's end: how many forks' branch lists (and their blocks) end too
    cells: list[Cell] = field(default_factory=list)  # one per source, in the page's order
    correct: bool | None = None  # leaves only: the grader's stored verdict on the rollouts that end here
    answer: str | None = None  # leaves only: their final answer as text
    text: ShownText | None = None  # set once every entry is laid out

    @property
    def html(self) -> str:
        return self.text.html if self.text is not None else ""

    @property
    def key(self) -> str:
        """The id as text: the template writes it several times, and writes text faster than numbers (which Django
        localises one by one)."""
        return str(self.id)

    @property
    def value_html(self) -> str:
        """The exact value with its counts and 95% interval, as the step's line writes it: numbers and fixed markup only
        (formatted here: a page of 2,000 nodes would spend most of its time in the template's number filters)."""
        v = self.value
        if v.value is None:
            return DASH
        interval = f"[{DASH}, {DASH}]" if v.low is None or v.high is None else f"[{v.low:.2f}, {v.high:.2f}]"
        return f'{v.value:.3f} ({v.correct}/{v.count}, <span title="95% Wilson interval">{interval}</span>)'

    @property
    def depth_text(self) -> str:
        return str(self.depth)

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
    sources: list[SourceSummary] = field(default_factory=list)


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
    sources: Sequence[SourceInput] = (),
    threshold: float = 0.5,
) -> TreeLayout:
    """The layout of the subtree under ``focus_id`` (the root when ``None``) of the tree made of ``rows``.

    Values are computed over the whole tree (``rows`` must be one whole tree) from ``rollouts``, counting rollouts
    (a leaf no rollout ends at counts as one). Texts are shown through ``budget``, at most ``step_chars`` characters
    each (``None``: no cap of its own). Each of ``sources`` (none: the exact values alone) gives every entry a cell,
    its first step below ``threshold`` on each path marked. Raises ``KeyError`` when ``focus_id`` is not one of the
    rows.
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

    source_values = [
        (source, values if source.labels is None else _source_node_values(arrays, source).by_id(arrays.ids))
        for source in sources
    ]
    marks = [_first_below(children, root_id, vals, threshold) for _, vals in source_values]

    entries: list[TreeEntry] = []
    entry_of: dict[int, TreeEntry] = {}
    stack: list[int] = [focus]
    while stack:
        node_id = stack.pop()
        row = by_id[node_id]
        parent_id, depth, is_leaf, prediction = row[1], row[2], row[4], row[5]
        if len(entries) >= max_nodes:
            entry_of[parent_id].hidden_nodes += sizes[node_id]  # the parent was laid out: only it reaches here
            continue
        kids = children.get(node_id, ())
        entry = TreeEntry(
            id=node_id,
            parent_id=parent_id,
            depth=depth,
            is_leaf=is_leaf,
            prediction=prediction,
            value=values[node_id],
            children=len(kids),
            subtree_nodes=sizes[node_id],
            open=True,
            starts_block=node_id == focus or len(children.get(parent_id, ())) != 1,
        )
        if is_leaf:
            index = arrays.index_of(node_id)
            entry.correct = arrays.node_is_correct(index)
            entry.answer = row[8] if len(row) > 8 else (None if prediction is None else str(prediction))
        entry.cells = [
            Cell(source=source.name, value=vals[node_id], exact=source.labels is None, first_below=node_id in mark)
            for (source, vals), mark in zip(source_values, marks, strict=True)
        ]
        entries.append(entry)
        entry_of[node_id] = entry
        stack.extend(reversed(kids))
    _nest(entries, entry_of, open_depth)
    for entry in sorted(entries, key=lambda e: e.depth):  # stable: depth first, then page order
        row = by_id[entry.id]
        entry.text = budget.show(row[3], full_chars=row[6], limit=step_chars)
    summaries = [
        SourceSummary(
            name=source.name,
            threshold=threshold,
            exact=source.labels is None,
            labelled_rollouts=len(arrays.rollout_node) if source.labels is None else source.labelled_rollouts,
            first_below=len(mark),
        )
        for (source, _), mark in zip(source_values, marks, strict=True)
    ]
    return TreeLayout(
        entries=entries,
        total_nodes=len(rows),
        shown_nodes=len(entries),
        focus_id=focus,
        path=path,
        values=values,
        sources=summaries,
    )


def _source_node_values(arrays: ForestArrays, source: SourceInput) -> NodeValues:
    labels = []
    for leaf_id, outputs in source.labels or ():
        try:
            labels.append((arrays.index_of(leaf_id), outputs))
        except KeyError:  # a rollout that arrived after the tree was read
            continue
    return label_values(arrays, labels)


def _first_below(
    children: dict[int, list[int]], root_id: int | None, values: dict[int, NodeValue], threshold: float
) -> set[int]:
    """The steps (never the root) whose value is below ``threshold`` while no step above them on their path is: where
    each path first falls below. A step without a value neither falls nor hides a fall below it."""
    marked: set[int] = set()
    if root_id is None:
        return marked
    stack = [(child, False) for child in children.get(root_id, ())]
    while stack:
        node_id, fallen = stack.pop()
        v = values[node_id].value
        below = not fallen and v is not None and v < threshold
        if below:
            marked.add(node_id)
        stack.extend((child, fallen or below) for child in children.get(node_id, ()))
    return marked


def _nest(entries: list[TreeEntry], entry_of: dict[int, TreeEntry], open_depth: int) -> None:
    """Where blocks and forks open and close, in page order (``entries`` depth-first); a fork starts open when fewer
    than ``open_depth`` forks lie above it."""
    laid_kids: dict[int, int] = {}
    for entry in entries:
        if entry.parent_id in entry_of:
            laid_kids[entry.parent_id] = laid_kids.get(entry.parent_id, 0) + 1
    forks: list[list[int]] = []  # [fork id, branches laid out still to close]
    for entry in entries:
        kids = laid_kids.get(entry.id, 0)
        if entry.children > 1 and kids:
            entry.fork = True
            entry.open = len(forks) < open_depth
            forks.append([entry.id, kids])
        elif not kids:
            entry.ends_block = True
            while forks:  # the block ends: one branch of the innermost fork is done
                forks[-1][1] -= 1
                if forks[-1][1]:
                    break
                forks.pop()
                entry.closes += 1  # the fork's branch list and its own block end here too


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
