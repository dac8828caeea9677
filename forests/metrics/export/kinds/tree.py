"""``tree``: one record per tree; ``root`` is the whole tree as nested JSON, every node an object (``id``, ``text``,
``value``, ``count``, ``ci95_low``, ``ci95_high``, ``is_leaf``, ``prediction``, ``children``) whose children are in
ascending id, written in the export's JSON style (``json.dumps``' text by default).

The JSON is assembled from column pieces, not from Python objects: in preorder (trees in root order), each node's
text is its object up to the ``[`` of its children, then as many ``]}`` as subtrees end there, then the separator
before the next node unless the tree ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from datasets import Features, Json, Value

from forests.metrics.export.context import ExportContext, nullable_ints
from forests.metrics.export.names import TREE
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress
from forests.metrics.forest import ForestArrays
from prmsite.core.json_text import (
    bool_values,
    float_values,
    grouped,
    int_values,
    joined,
    object_pieces,
    string_values,
)

NAME = TREE
TREE_BATCH = 32  # a tree record holds a whole tree: keep batches small


def features(options: ExportOptions) -> Features:
    text, integer = Value("string"), Value("int64")
    return Features(
        {
            "forest": text,
            "tree_id": integer,
            "prompt": text,
            "ground_truth": integer,
            "num_nodes": integer,
            "num_rollouts": integer,
            "root": Json(),
        }
    )


def preorder(forest: ForestArrays) -> tuple[np.ndarray, np.ndarray]:
    """The node indices in preorder, trees in root order and children in ascending id; and each subtree's size."""
    n = forest.size
    size = np.ones(n, dtype=np.int64)
    for level in reversed(forest.levels[1:]):  # deepest first: a level's sizes are whole before they are added up
        size += np.bincount(forest.parent[level], weights=size[level], minlength=n).astype(np.int64)
    children = forest.child_index
    sizes_before = np.zeros(children.size + 1, dtype=np.int64)
    np.cumsum(size[children], out=sizes_before[1:])
    earlier_siblings = np.zeros(n, dtype=np.int64)  # nodes in the subtrees of the node's earlier siblings
    earlier_siblings[children] = sizes_before[:-1] - sizes_before[forest.child_start[forest.parent[children]]]
    position = np.empty(n, dtype=np.int64)
    roots = forest.roots
    position[roots] = np.cumsum(size[roots]) - size[roots]
    for level in forest.levels[1:]:
        position[level] = position[forest.parent[level]] + 1 + earlier_siblings[level]
    order = np.empty(n, dtype=np.int64)
    order[position] = np.arange(n)
    return order, size


def batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    context = ExportContext(source, options, tally, features(options), json_lines=json_lines)
    forest, style = context.forest, context.json_style
    value, count, low, high = context.value, context.count, context.low, context.high
    total = int(forest.roots.size)
    roots = forest.roots
    order, size = preorder(forest)
    depth = forest.depth[order]
    tree_start = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(size[roots], out=tree_start[1:])
    # Subtrees closing after each node in preorder: its depth minus the next node's plus one (0: a child comes
    # next); the tree's last node closes the whole tree. Code = closings, plus `top` at a tree's last node.
    closing = np.empty(forest.size, dtype=np.int64)
    closing[:-1] = depth[:-1] - depth[1:] + 1
    last = tree_start[1:] - 1
    closing[last] = depth[last] + 1
    top = int(closing.max()) + 1 if closing.size else 1
    code = closing.copy()
    code[last] += top
    tails = pa.array(
        ["]}" * c + (style.item_separator if c else "") for c in range(top)] + ["]}" * c for c in range(top)],
        type=pa.string(),
    )
    rollouts_per_tree = np.bincount(forest.rollout_tree, minlength=forest.size)
    ground_truth = forest.ground_truth[roots]
    for first in range(0, total, TREE_BATCH):
        done = min(first + TREE_BATCH, total)
        start, end = int(tree_start[first]), int(tree_start[done])
        nodes = order[start:end]
        members = [
            ("id", int_values(pa.array(forest.ids[nodes]))),
            ("text", string_values(context.texts_of(nodes), style)),
            ("value", float_values(value[nodes], style)),
            ("count", int_values(pa.array(count[nodes].astype(np.int64)))),
            ("ci95_low", float_values(low[nodes], style)),
            ("ci95_high", float_values(high[nodes], style)),
            ("is_leaf", bool_values(pa.array(forest.is_leaf[nodes]))),
            ("prediction", int_values(nullable_ints(forest.prediction[nodes]))),
            ("children", "["),
        ]
        pieces = [*object_pieces(members, style), tails.take(pa.array(code[start:end]))]
        trees = grouped(joined(pieces), tree_start[first : done + 1] - start)  # a tree's nodes are consecutive
        batch_roots = roots[first:done]
        yield {
            "forest": [context.forest_name] * (done - first),
            "tree_id": forest.ids[batch_roots],
            "prompt": context.texts_of(batch_roots),
            "ground_truth": nullable_ints(ground_truth[first:done]),
            "num_nodes": size[batch_roots],
            "num_rollouts": rollouts_per_tree[batch_roots].astype(np.int64),
            "root": trees,
        }
        if progress is not None and done < total:
            progress(done, total)
    if progress is not None:
        progress(total, total)
