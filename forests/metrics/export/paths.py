"""What the path-based kinds (``stepwise``, ``math_shepherd``, ``openrlhf``, ``processbench``) share: one record per
path (``forests.metrics.preferences.path_table``: per node where rollouts end, or per rollout), its metadata columns,
and the step-tagged text of the tagged kinds. Pure: no Django.

Each step's value comes with the completions behind it (``counts``) and its 95% Wilson interval (``ci95_lows``,
``ci95_highs``; null where there is none): lists aligned with the steps (``prmsite.core.domain.
STEP_CONFIDENCE_COLUMNS``), the figures ``tree`` writes per node (``count``, ``ci95_low``, ``ci95_high``) and ``pairs``
per step of a pair, all read from the same ``ExportContext.count/low/high``. The interval columns come last, so every
earlier column keeps its place and its bytes.

A path is left out (and counted in the tally) when one of its steps has no value, or, for a tagged kind, when its
prompt or one of its steps already holds the tag.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import List, Value

from forests.metrics.export.context import ExportContext, nullable_floats, nullable_ints
from forests.metrics.export.source import Batch, Progress
from forests.metrics.forest import NO_ROLLOUT_ROW
from forests.metrics.preferences import PathTable, ancestors, path_table

PATH_BATCH = 4096  # paths built at a time
SKIP_NO_VALUE = "a step without a value"
SKIP_TAGGED = "text holding the step tag {tag!r}"


def path_meta_features() -> dict[str, Any]:
    """The metadata columns of every path-based kind, after the kind's own columns."""
    text, integer, real, boolean = Value("string"), Value("int64"), Value("float64"), Value("bool")
    return {
        "forest": text,
        "tree_id": integer,
        "leaf_id": integer,
        "rollout_id": integer,
        "rollouts": integer,
        "node_ids": List(integer),
        "values": List(real),
        "counts": List(integer),
        "prediction": integer,
        "ground_truth": integer,
        "correct": boolean,
        "ci95_lows": List(real),
        "ci95_highs": List(real),
    }


@dataclass(frozen=True, eq=False)
class PathRows:
    """The paths kept in one batch: path i's steps are ``flat[offsets[i]:offsets[i + 1]]`` (node indices)."""

    offsets: np.ndarray
    flat: np.ndarray
    step_values: np.ndarray
    good: np.ndarray  # bool per step: its value is above the threshold
    leaf: np.ndarray  # node index where each path ends
    roots: np.ndarray  # node index of each path's root
    rollout: np.ndarray  # index into the forest's rollout arrays
    per_rollout: bool
    meta: Batch  # the metadata columns (``path_meta_features``)

    def __len__(self) -> int:
        return int(self.leaf.size)


def path_batches(
    context: ExportContext,
    progress: Progress | None,
    build: Callable[[PathRows], Batch],
    *,
    tag: str | None = None,
) -> Iterator[Batch]:
    """``build``'s record batches, a batch per ``PATH_BATCH`` paths (trees in root order); with ``tag``, paths whose
    texts hold it are left out."""
    forest = context.forest
    table = path_table(forest, context.options.paths)
    total = int(forest.roots.size)
    tree_rank = np.searchsorted(forest.roots, forest.root[table.leaf]) + 1 if len(table) else None
    tagged = None if tag is None else pc.match_substring(context.text_array, tag).to_numpy(zero_copy_only=False)
    for start in range(0, len(table), PATH_BATCH):
        end = min(start + PATH_BATCH, len(table))
        rows = _path_rows(context, table, slice(start, end), tagged, tag)
        if rows is not None:
            yield build(rows)
        if progress is not None:
            progress(int(tree_rank[end - 1]), total)
    if progress is not None:
        progress(total, total)


def _path_rows(
    context: ExportContext, table: PathTable, rows: slice, tagged: np.ndarray | None, tag: str | None
) -> PathRows | None:
    forest, tally = context.forest, context.tally
    leaf = table.leaf[rows]
    offsets, flat = ancestors(forest, leaf)
    lengths = np.diff(offsets)
    step_values = context.value[flat]
    keep = np.add.reduceat(np.isnan(step_values), offsets[:-1]) == 0
    tally.skip(SKIP_NO_VALUE, int((~keep).sum()))
    if tagged is not None:
        holding = (np.add.reduceat(tagged[flat], offsets[:-1]) > 0) | tagged[forest.root[leaf]]
        tally.skip(SKIP_TAGGED.format(tag=tag), int((keep & holding).sum()))
        keep &= ~holding
    if not keep.any():
        return None
    if not keep.all():
        flat = flat[np.repeat(keep, lengths)]
        lengths = lengths[keep]
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        step_values = context.value[flat]
        leaf = leaf[keep]
    rollout = table.rollout[rows][keep]
    roots = forest.root[leaf]
    n = leaf.size

    truths = forest.ground_truth[roots]  # NaN where none
    if table.per_rollout:
        predictions = pa.array([forest.rollout_prediction[i] for i in rollout.tolist()], type=pa.int64())
        correct = forest.rollout_correct[rollout]
        rollout_ids = forest.rollout_id[rollout]
        missing_id = rollout_ids == NO_ROLLOUT_ROW
    else:
        leaf_predictions = forest.prediction[leaf]  # NaN where none
        predictions = nullable_ints(leaf_predictions)
        correct = forest.node_correct[leaf]  # the grader's stored verdict
        rollout_ids = np.zeros(n, dtype=np.int64)
        missing_id = np.ones(n, dtype=bool)
    meta: Batch = {
        "forest": [context.forest_name] * n,
        "tree_id": forest.ids[roots],
        "leaf_id": forest.ids[leaf],
        "rollout_id": pa.array(rollout_ids, mask=missing_id),
        "rollouts": table.rollouts[rows][keep],
        "node_ids": context.list_column("node_ids", offsets, forest.ids[flat]),
        "values": context.list_column("values", offsets, step_values),
        "counts": context.list_column("counts", offsets, context.count[flat].astype(np.int64)),
        "prediction": predictions,
        "ground_truth": nullable_ints(truths),
        "correct": correct,
        "ci95_lows": context.list_column("ci95_lows", offsets, nullable_floats(context.low[flat])),
        "ci95_highs": context.list_column("ci95_highs", offsets, nullable_floats(context.high[flat])),
    }
    return PathRows(
        offsets=offsets,
        flat=flat,
        step_values=step_values,
        good=step_values > context.options.threshold,
        leaf=leaf,
        roots=roots,
        rollout=rollout,
        per_rollout=table.per_rollout,
        meta=meta,
    )


def tagged_texts(context: ExportContext, rows: PathRows, *marks: Any) -> list[pa.Array]:
    """Each path as one text per ``marks``, as Math-Shepherd writes it: the trimmed prompt, a space, then each trimmed
    step followed by its mark (one string for every step, or an array with one per step), steps joined by line breaks.

    Joined by Arrow's string kernels: no Python loop over the steps; the texts are trimmed once for every ``marks``.
    """
    steps = pc.utf8_trim_whitespace(context.texts_of(rows.flat))
    heads = pc.utf8_trim_whitespace(context.texts_of(rows.roots))
    lists = pa.array(rows.offsets.astype(np.int32))
    texts = []
    for mark in marks:
        body = pc.binary_join(pa.ListArray.from_arrays(lists, pc.binary_join_element_wise(steps, mark, "")), "\n")
        texts.append(pc.binary_join_element_wise(heads, body, " "))
    return texts
