"""Preference and step-level datasets from a forest, written with ``datasets`` (JSON lines: the same bytes, assembled
by ``forests.metrics.json_text``). Pure: no Django.

Each kind is a generator of record batches (columns, tree by tree in ascending root id, deterministic and without
repeats) following the kind's ``datasets.Features``; ``dataset_write`` writes any of them as jsonl, parquet or a
``save_to_disk`` folder, through a temporary path renamed into place, so an interrupted export leaves nothing behind
and the file always loads back with ``load_dataset`` / ``load_from_disk``.

Column names and types of ``stepwise`` are a contract with the PRM trainer: ``prompt`` (str), ``completions``
(list[str], the steps of one path), ``labels`` (list[bool]: value above the threshold; list[float] in [0, 1] with
soft labels).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forests.metrics.forest import NO_ROLLOUT_ROW, ForestArrays
from forests.metrics.preferences import PATH_MODES, PATHS_DISTINCT, PathTable, ancestors, path_table, sibling_pairs
from forests.metrics.values import NodeValues
from prmsite.core.processbench import first_error

if TYPE_CHECKING:
    from forests.metrics.json_text import JsonStyle

KINDS = ("pairs", "stepwise", "math_shepherd", "openrlhf", "processbench", "tree")
FORMATS = ("jsonl", "parquet", "hf_disk")
STEP_TAG = "ки"  # Math-Shepherd's step tag: the position where the step's score is predicted
GOOD_STEP, BAD_STEP = "+", "-"
DEFAULT_PLACEHOLDER = STEP_TAG  # OpenRLHF's --placeholder_token for Math-Shepherd-style data

Progress = Callable[[int, int], None]
TEXT_CHUNK = 65_536  # texts converted to Arrow at a time

# The placeholder is written after every step of every path: its length multiplies the export (a 2,000-character one
# made 949 MiB and 6.3 GB of memory from a small forest; 5 MB overflowed Arrow). A tokenizer's special token is short.
PLACEHOLDER_MAX_CHARS = 32
PLACEHOLDER_EMPTY = "placeholder_token: the placeholder token must not be empty"
PLACEHOLDER_TOO_LONG = "placeholder_token: the placeholder token must be at most {max} characters, not {length}"
PLACEHOLDER_CONTROL = (
    "placeholder_token: the placeholder token must not hold line breaks, tabs, NUL or other control characters"
)
KIND_UNKNOWN = "kind must be one of {kinds}, not {kind!r}"
PATHS_UNKNOWN = "paths must be one of {modes}, not {paths!r}"
MIN_MARGIN_INVALID = "min_margin must be a number at least 0, not {value!r}"
MAX_PAIRS_INVALID = "max_pairs_per_node must be a whole number at least 1, not {value!r}"
THRESHOLD_INVALID = "threshold must be a finite number, not {value!r}"


def placeholder_token_check(token: str) -> str:
    """``token`` when it can follow every step of an export: 1 to ``PLACEHOLDER_MAX_CHARS`` characters, none of them
    a control character (a line break would split the line-based formats). ``ValueError`` otherwise."""
    if not token:
        raise ValueError(PLACEHOLDER_EMPTY)
    if len(token) > PLACEHOLDER_MAX_CHARS:
        raise ValueError(PLACEHOLDER_TOO_LONG.format(max=PLACEHOLDER_MAX_CHARS, length=len(token)))
    if any(not character.isprintable() and character != " " for character in token):
        raise ValueError(PLACEHOLDER_CONTROL)
    return token


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ExportOptions:
    kind: str = "pairs"
    paths: str = PATHS_DISTINCT
    min_margin: float = 0.0
    max_pairs_per_node: int | None = None
    neutral_pairs: bool = False
    threshold: float = 0.0  # a step is good when its value is above this (0: any correct rollout through it)
    soft_labels: bool = False
    placeholder_token: str = DEFAULT_PLACEHOLDER

    def __post_init__(self) -> None:
        """The one check of every export parameter (``export_preferences`` and the admin's download both build
        these): ``ValueError`` with one of the messages above."""
        if self.kind not in KINDS:
            raise ValueError(KIND_UNKNOWN.format(kinds=", ".join(KINDS), kind=self.kind))
        if self.paths not in PATH_MODES:
            raise ValueError(PATHS_UNKNOWN.format(modes=", ".join(PATH_MODES), paths=self.paths))
        if not _is_real(self.min_margin) or self.min_margin < 0:
            raise ValueError(MIN_MARGIN_INVALID.format(value=self.min_margin))
        if self.max_pairs_per_node is not None and (
            not isinstance(self.max_pairs_per_node, int)
            or isinstance(self.max_pairs_per_node, bool)
            or self.max_pairs_per_node < 1
        ):
            raise ValueError(MAX_PAIRS_INVALID.format(value=self.max_pairs_per_node))
        if not _is_real(self.threshold):
            raise ValueError(THRESHOLD_INVALID.format(value=self.threshold))
        placeholder_token_check(self.placeholder_token)


@dataclass
class ExportTally:
    """What an export wrote and what it left out, and why."""

    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


@dataclass(frozen=True)
class ExportSource:
    """Everything the record generators read: the forest, its values and its texts."""

    forest_name: str
    forest: ForestArrays
    values: NodeValues
    texts: Sequence[str] | Any  # text of each node, by index (a list or an Arrow string array)
    rollout_models: dict[int, str] = field(default_factory=dict)  # model of each rollout row (processbench)


def features_of(options: ExportOptions):
    """The ``datasets.Features`` of a kind's records."""
    from datasets import Features, Json, List, Value

    text, integer, real, boolean = Value("string"), Value("int64"), Value("float64"), Value("bool")
    path_meta = {
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
    }
    kinds = {
        "pairs": {
            "prompt": text,
            "chosen": text,
            "rejected": text,
            "margin": real,
            "preference": integer,
            "forest": text,
            "tree_id": integer,
            "parent_id": integer,
            "chosen_id": integer,
            "rejected_id": integer,
            "chosen_value": real,
            "rejected_value": real,
            "chosen_count": integer,
            "rejected_count": integer,
            "chosen_ci95_low": real,
            "chosen_ci95_high": real,
            "rejected_ci95_low": real,
            "rejected_ci95_high": real,
        },
        "stepwise": {
            "prompt": text,
            "completions": List(text),
            "labels": List(real) if options.soft_labels else List(boolean),
            **path_meta,
        },
        "math_shepherd": {"input": text, "label": text, **path_meta},
        "openrlhf": {"input": text, "value": List(real), **path_meta},
        "processbench": {
            "id": text,
            "generator": text,
            "problem": text,
            "steps": List(text),
            "final_answer_correct": boolean,
            "label": integer,
            **path_meta,
        },
        "tree": {
            "forest": text,
            "tree_id": integer,
            "prompt": text,
            "ground_truth": integer,
            "num_nodes": integer,
            "num_rollouts": integer,
            "root": Json(),
        },
    }
    return Features(kinds[options.kind])


def export_texts(texts: Sequence[str] | Any, *, consume: bool = False) -> Any:
    """Node texts as the Arrow array the exports gather their text columns from (``large_string``: no 2 GiB cap).

    With ``consume`` (``texts`` a list), the list is emptied as it is converted, from its end, so that the strings and
    their Arrow copy are never both whole in memory.
    """
    import pyarrow as pa

    if isinstance(texts, pa.Array | pa.ChunkedArray):
        return texts if texts.type == pa.large_string() else texts.cast(pa.large_string())
    if not consume:
        return pa.array(texts, type=pa.large_string())
    chunks = []
    while texts:
        chunks.append(pa.array(texts[-TEXT_CHUNK:], type=pa.large_string()))
        del texts[-TEXT_CHUNK:]
    chunks.reverse()
    return pa.concat_arrays(chunks) if chunks else pa.array([], type=pa.large_string())


Batch = dict[str, Any]  # column name -> pyarrow array or list of values, all of one length


def _nullable_floats(values: np.ndarray) -> Any:
    """A float array with NaN for "none" as a float64 Arrow array with nulls (JSON null, not NaN)."""
    import pyarrow as pa

    return pa.array(values, mask=np.isnan(values))


def _nullable_ints(values: np.ndarray) -> Any:
    """Whole numbers in a float array with NaN for "none" as an int64 Arrow array with nulls (0 under each null, as
    ``pa.array`` writes from ``None``: the saved bytes do not depend on what NaN casts to)."""
    import pyarrow as pa

    missing = np.isnan(values)
    return pa.array(np.where(missing, 0, values).astype(np.int64), mask=missing)


class _Batches:
    """The record batches of every kind over one source, built column by column (vectorised where it can be)."""

    PATH_BATCH = 4096
    PAIR_BATCH = 4096
    TREE_BATCH = 32  # a tree record holds a whole tree: keep batches small

    def __init__(
        self, source: ExportSource, options: ExportOptions, tally: ExportTally, features, json_style: JsonStyle
    ) -> None:
        self.source = source
        self.json_style = json_style
        self.options = options
        self.tally = tally
        self.features = features
        self.schema = features.arrow_schema
        self.forest = source.forest
        self.value = source.values.value
        self.count = source.values.count
        self.low, self.high = source.values.intervals()
        self.forest_name = source.forest_name

    @functools.cached_property
    def text_array(self) -> Any:
        """Every node's text as one Arrow array, converted once: columns of texts are gathered from it."""
        return export_texts(self.source.texts)

    def texts_of(self, indices: np.ndarray) -> Any:
        """The texts of nodes ``indices`` as a ``string`` array."""
        import pyarrow as pa

        return self.text_array.take(pa.array(indices, type=pa.int64())).cast(pa.string())

    def _list(self, name: str, offsets: np.ndarray, flat) -> Any:
        import pyarrow as pa

        field_type = self.schema.field(name).type
        items = flat if isinstance(flat, pa.Array) else pa.array(flat, type=field_type.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), items)

    def prefixes(self, indices: np.ndarray) -> Any:
        """The root prompt followed by the steps down to each node of ``indices``, as a ``string`` array."""
        import pyarrow as pa
        import pyarrow.compute as pc

        offsets, steps = ancestors(self.forest, indices)
        below = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), self.texts_of(steps)), "")
        return pc.binary_join_element_wise(self.texts_of(self.forest.root[indices]), below, "")

    # --- pairs -----------------------------------------------------------------------------------------------

    def pairs(self, progress: Progress | None) -> Iterator[Batch]:
        forest, options = self.forest, self.options
        total = int(forest.roots.size)
        branching = np.flatnonzero(np.diff(forest.child_start) >= 2)
        parents = branching[np.lexsort((branching, forest.root[branching]))].tolist()  # by tree, then node id
        found: dict[str, list] = {"parent": [], "chosen": [], "rejected": [], "margin": [], "preference": []}
        for pair in sibling_pairs(
            forest,
            self.value,
            min_margin=options.min_margin,
            max_pairs_per_node=options.max_pairs_per_node,
            neutral=options.neutral_pairs,
            parents=parents,
        ):
            for name in found:
                found[name].append(getattr(pair, name))
            if len(found["parent"]) >= self.PAIR_BATCH:
                yield self._pair_batch(found)
                if progress is not None:
                    progress(int(np.searchsorted(forest.roots, forest.root[pair.parent])) + 1, total)
                found = {name: [] for name in found}
        if found["parent"]:
            yield self._pair_batch(found)
        if progress is not None:
            progress(total, total)

    def _pair_batch(self, found: dict[str, list]) -> Batch:
        forest = self.forest
        parent, chosen, rejected = (
            np.asarray(found[name], dtype=np.int64) for name in ("parent", "chosen", "rejected")
        )
        parents, which = np.unique(parent, return_inverse=True)  # a prompt per parent, gathered for its pairs
        return {
            "prompt": self.prefixes(parents).take(which.reshape(-1)),
            "chosen": self.texts_of(chosen),
            "rejected": self.texts_of(rejected),
            "margin": found["margin"],
            "preference": found["preference"],
            "forest": [self.forest_name] * parent.size,
            "tree_id": forest.ids[forest.root[parent]],
            "parent_id": forest.ids[parent],
            "chosen_id": forest.ids[chosen],
            "rejected_id": forest.ids[rejected],
            "chosen_value": self.value[chosen],
            "rejected_value": self.value[rejected],
            "chosen_count": self.count[chosen].astype(np.int64),
            "rejected_count": self.count[rejected].astype(np.int64),
            "chosen_ci95_low": _nullable_floats(self.low[chosen]),
            "chosen_ci95_high": _nullable_floats(self.high[chosen]),
            "rejected_ci95_low": _nullable_floats(self.low[rejected]),
            "rejected_ci95_high": _nullable_floats(self.high[rejected]),
        }

    # --- path-based kinds --------------------------------------------------------------------------------------

    def paths(self, progress: Progress | None) -> Iterator[Batch]:
        forest, options = self.forest, self.options
        table = path_table(forest, options.paths)
        total = int(forest.roots.size)
        tree_rank = np.searchsorted(forest.roots, forest.root[table.leaf]) + 1 if len(table) else None
        tagged = None
        if options.kind in ("math_shepherd", "openrlhf"):
            import pyarrow.compute as pc

            tag = STEP_TAG if options.kind == "math_shepherd" else options.placeholder_token
            tagged = pc.match_substring(self.text_array, tag).to_numpy(zero_copy_only=False)
        for start in range(0, len(table), self.PATH_BATCH):
            end = min(start + self.PATH_BATCH, len(table))
            batch = self._path_batch(table, slice(start, end), tagged)
            if batch is not None:
                yield batch
            if progress is not None:
                progress(int(tree_rank[end - 1]), total)
        if progress is not None:
            progress(total, total)

    def _path_batch(self, table: PathTable, rows: slice, tagged: np.ndarray | None) -> Batch | None:
        forest, options = self.forest, self.options
        leaf = table.leaf[rows]
        offsets, flat = ancestors(forest, leaf)
        lengths = np.diff(offsets)
        step_values = self.value[flat]
        keep = np.add.reduceat(np.isnan(step_values), offsets[:-1]) == 0
        self.tally.skip("a step without a value", int((~keep).sum()))
        if tagged is not None:
            holding = (np.add.reduceat(tagged[flat], offsets[:-1]) > 0) | tagged[forest.root[leaf]]
            tag = STEP_TAG if options.kind == "math_shepherd" else options.placeholder_token
            self.tally.skip(f"text holding the step tag {tag!r}", int((keep & holding).sum()))
            keep &= ~holding
        if not keep.any():
            return None
        if not keep.all():
            flat = flat[np.repeat(keep, lengths)]
            lengths = lengths[keep]
            offsets = np.zeros(lengths.size + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            step_values = self.value[flat]
            leaf = leaf[keep]
        rollout = table.rollout[rows][keep]
        roots = forest.root[leaf]
        n = leaf.size

        import pyarrow as pa
        import pyarrow.compute as pc

        truths = forest.ground_truth[roots]  # NaN where none
        if table.per_rollout:
            predictions = pa.array([forest.rollout_prediction[i] for i in rollout.tolist()], type=pa.int64())
            correct = forest.rollout_correct[rollout]
            rollout_ids = forest.rollout_id[rollout]
            missing_id = rollout_ids == NO_ROLLOUT_ROW
        else:
            leaf_predictions = forest.prediction[leaf]  # NaN where none
            predictions = _nullable_ints(leaf_predictions)
            correct = leaf_predictions == truths  # rollout_is_correct: NaN (none) equals nothing
            rollout_ids = np.zeros(n, dtype=np.int64)
            missing_id = np.ones(n, dtype=bool)

        good = step_values > options.threshold
        meta: Batch = {
            "forest": [self.forest_name] * n,
            "tree_id": forest.ids[roots],
            "leaf_id": forest.ids[leaf],
            "rollout_id": pa.array(rollout_ids, mask=missing_id),
            "rollouts": table.rollouts[rows][keep],
            "node_ids": self._list("node_ids", offsets, forest.ids[flat]),
            "values": self._list("values", offsets, step_values),
            "counts": self._list("counts", offsets, self.count[flat].astype(np.int64)),
            "prediction": predictions,
            "ground_truth": _nullable_ints(truths),
            "correct": correct,
        }
        kind = options.kind
        if kind == "stepwise":
            labels = step_values if options.soft_labels else good
            return {
                "prompt": self.texts_of(roots),
                "completions": self._list("completions", offsets, self.texts_of(flat)),
                "labels": self._list("labels", offsets, labels),
                **meta,
            }
        bounds = offsets.tolist()
        if kind in ("math_shepherd", "openrlhf"):
            tag = STEP_TAG if kind == "math_shepherd" else options.placeholder_token
            # Joined by Arrow's string kernels: no Python loop over the steps.
            steps = pc.utf8_trim_whitespace(self.texts_of(flat))
            heads = pc.utf8_trim_whitespace(self.texts_of(roots))

            def joined(pieces) -> Any:
                body = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pieces), "\n")
                return pc.binary_join_element_wise(heads, body, " ")

            inputs = joined(pc.binary_join_element_wise(steps, pa.scalar(" " + tag), ""))
            if kind == "math_shepherd":
                marks = pc.if_else(pa.array(good), " " + GOOD_STEP, " " + BAD_STEP)
                labels = joined(pc.binary_join_element_wise(steps, marks, ""))
            if kind == "openrlhf":
                return {"input": inputs, "value": self._list("value", offsets, step_values), **meta}
            return {"input": inputs, "label": labels, **meta}
        # processbench
        good_list = good.tolist()
        first_wrong = [first_error(good_list[bounds[i] : bounds[i + 1]]) for i in range(n)]
        if table.per_rollout:
            record_ids = [f"{self.forest_name}-rollout-{r}" for r in rollout_ids.tolist()]
            generators = [self.source.rollout_models.get(r, "") for r in rollout_ids.tolist()]
        else:
            record_ids = [f"{self.forest_name}-node-{node_id}" for node_id in forest.ids[leaf].tolist()]
            # The first rollout ending at a node has the lowest id; a leaf without rollout rows has no model.
            generators = [self.source.rollout_models.get(r, "") for r in forest.rollout_id[rollout].tolist()]
        return {
            "id": record_ids,
            "generator": generators,
            "problem": self.texts_of(roots),
            "steps": self._list("steps", offsets, self.texts_of(flat)),
            "final_answer_correct": correct,
            "label": first_wrong,
            **meta,
        }

    # --- tree --------------------------------------------------------------------------------------------------

    def trees(self, progress: Progress | None) -> Iterator[Batch]:
        """One record per tree; ``root`` is the tree as nested JSON, every node an object whose ``children`` are in
        ascending id, written in ``json_style`` (``json.dumps``' text by default).

        The JSON is assembled from column pieces, not from Python objects: in preorder (trees in root order), each
        node's text is its object up to the ``[`` of its children, then as many ``]}`` as subtrees end there, then
        the separator before the next node unless the tree ends.
        """
        import pyarrow as pa

        from forests.metrics.json_text import (
            bool_values,
            float_values,
            grouped,
            int_values,
            joined,
            object_pieces,
            string_values,
        )

        forest, style = self.forest, self.json_style
        total = int(forest.roots.size)
        roots = forest.roots
        order, size = _preorder(forest)
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
        for first in range(0, total, self.TREE_BATCH):
            done = min(first + self.TREE_BATCH, total)
            low, high = int(tree_start[first]), int(tree_start[done])
            nodes = order[low:high]
            members = [
                ("id", int_values(pa.array(forest.ids[nodes]))),
                ("text", string_values(self.texts_of(nodes), style)),
                ("value", float_values(self.value[nodes], style)),
                ("count", int_values(pa.array(self.count[nodes].astype(np.int64)))),
                ("ci95_low", float_values(self.low[nodes], style)),
                ("ci95_high", float_values(self.high[nodes], style)),
                ("is_leaf", bool_values(pa.array(forest.is_leaf[nodes]))),
                ("prediction", int_values(_nullable_ints(forest.prediction[nodes]))),
                ("children", "["),
            ]
            pieces = [*object_pieces(members, style), tails.take(pa.array(code[low:high]))]
            trees = grouped(joined(pieces), tree_start[first : done + 1] - low)  # a tree's nodes are consecutive
            batch_roots = roots[first:done]
            yield {
                "forest": [self.forest_name] * (done - first),
                "tree_id": forest.ids[batch_roots],
                "prompt": self.texts_of(batch_roots),
                "ground_truth": _nullable_ints(ground_truth[first:done]),
                "num_nodes": size[batch_roots],
                "num_rollouts": rollouts_per_tree[batch_roots].astype(np.int64),
                "root": trees,
            }
            if progress is not None and done < total:
                progress(done, total)
        if progress is not None:
            progress(total, total)


def _preorder(forest: ForestArrays) -> tuple[np.ndarray, np.ndarray]:
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


def export_batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    """The records of ``options.kind`` as column batches; ``progress(trees_done, trees)`` is called as they go.

    ``Json`` columns (the tree's ``root``) hold ``json.dumps``' text, what parquet and ``save_to_disk`` store; with
    ``json_lines``, the text a JSON lines file gets instead (``dataset_write(..., raw_json=True)``).
    """
    from forests.metrics.json_text import DUMPS, LINES

    batches = _Batches(source, options, tally, features_of(options), LINES if json_lines else DUMPS)
    if options.kind == "pairs":
        generator = batches.pairs(progress)
    elif options.kind == "tree":
        generator = batches.trees(progress)
    else:
        generator = batches.paths(progress)
    for batch in generator:
        tally.records += len(next(iter(batch.values())))
        yield batch


# --- writing ---------------------------------------------------------------------------------------------------


class ExportError(ValueError):
    """The export cannot be written; nothing was."""


NOTHING_TO_EXPORT = "nothing to export: no record matches (nothing was written)"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed into place."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(f"folder {target.parent} does not exist")
    handle, staged = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(staged, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise


def _arrow(column: Any, arrow_type) -> Any:
    import pyarrow as pa

    if isinstance(column, pa.Array):
        return column if column.type == arrow_type else column.cast(arrow_type)
    return pa.array(column, type=arrow_type)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


LINES_PER_WRITE = 8192  # JSON lines are assembled this many records at a time (Arrow's 32-bit string offsets)


def _record_batch(batch: Batch, schema) -> Any:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([_arrow(batch[field.name], field.type) for field in schema], schema=schema)


def _lines_write(batches: Iterable[Batch], schema, path: Path, raw: Collection[str]) -> int:
    """Write the records as JSON lines (``json_text.json_lines``) to ``path``; return how many."""
    from forests.metrics.json_text import json_lines, text_bytes

    written = 0
    with open(path, "wb") as out:
        for batch in batches:
            record_batch = _record_batch(batch, schema)
            for start in range(0, record_batch.num_rows, LINES_PER_WRITE):
                out.write(text_bytes(json_lines(record_batch.slice(start, LINES_PER_WRITE), raw)))
            written += record_batch.num_rows
    return written


def dataset_write(
    batches: Iterable[Batch], features, output: str | os.PathLike, fmt: str, *, raw_json: bool = False
) -> int:
    """Write column ``batches`` (following ``features``) to ``output`` as ``fmt``; return how many records.

    Everything is written in a temporary folder beside ``output`` and renamed onto it. JSON lines are assembled from
    the columns by ``json_text.json_lines``: the bytes ``datasets``' ``to_json(lines=True, force_ascii=False)``
    writes, without its trip through pandas. With ``raw_json``, ``Json`` columns hold the text the lines get
    (``json_text.LINES`` style, see ``export_batches``); without it, a ``Json`` column (or a column type
    ``json_lines`` does not know) sends the records through ``datasets``' ``to_json``. Parquet and ``save_to_disk``
    are written by ``datasets`` from an Arrow file of the records. A folder that is not a dataset saved by
    ``save_to_disk`` is never replaced. Raises ``ExportError`` (and writes nothing) when there are no records, since
    an empty file does not load back.
    """
    import pyarrow as pa
    from datasets import Dataset, Json
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    from forests.metrics.json_text import json_lines_supported

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    target = Path(output)
    if target.is_dir() and not (fmt == "hf_disk" and _is_saved_dataset(target)):
        raise ExportError(f"{target} is a folder that is not a dataset saved by save_to_disk: choose another output")
    if fmt != "hf_disk" and target.exists() and not target.is_file():
        raise ExportError(f"{target} exists and is not a file")
    if not target.parent.is_dir():
        raise ExportError(f"folder {target.parent} does not exist")

    schema = features.arrow_schema
    json_columns = {name for name, feature in features.items() if isinstance(feature, Json)}
    lines_direct = fmt == "jsonl" and (raw_json or not json_columns) and json_lines_supported(schema, json_columns)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()  # the caller shows its own progress
    try:
        if lines_direct:
            staged = work / "out.jsonl"
            written = _lines_write(batches, schema, staged, json_columns)
            if written == 0:
                raise ExportError(NOTHING_TO_EXPORT)
            os.replace(staged, target)
            return written
        arrow_path = work / "records.arrow"
        written = 0
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                record_batch = _record_batch(batch, schema)
                writer.write_batch(record_batch)
                written += record_batch.num_rows
        if written == 0:
            raise ExportError(NOTHING_TO_EXPORT)
        dataset = Dataset.from_file(str(arrow_path))
        if fmt == "jsonl":
            staged = work / "out.jsonl"
            # datasets decodes JSON columns to objects to write them: a few whole trees at a time, not thousands.
            rows_per_write = 64 if json_columns else None
            dataset.to_json(str(staged), lines=True, force_ascii=False, batch_size=rows_per_write)
            os.replace(staged, target)
        elif fmt == "parquet":
            staged = work / "out.parquet"
            dataset.to_parquet(str(staged))
            os.replace(staged, target)
        else:
            staged = work / "out"
            dataset.save_to_disk(str(staged))
            del dataset
            if target.exists():
                old = work / "replaced"
                os.replace(target, old)  # the old dataset goes into the work folder, removed below
            os.replace(staged, target)
        return written
    finally:
        if bars_were_on:
            enable_progress_bar()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
