"""Preference and step-level datasets from a forest, written with ``datasets``. Pure: no Django.

Each kind is a generator of records (plain dicts, tree by tree in ascending root id, deterministic and without
repeats) and the ``datasets.Features`` they follow; ``dataset_write`` writes any of them as jsonl, parquet or a
``save_to_disk`` folder, through a temporary path renamed into place, so an interrupted export leaves nothing behind
and the file always loads back with ``load_dataset`` / ``load_from_disk``.

Column names and types of ``stepwise`` are a contract with the PRM trainer: ``prompt`` (str), ``completions``
(list[str], the steps of one path), ``labels`` (list[bool]: value above the threshold; list[float] in [0, 1] with
soft labels).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from forests.metrics.forest import ForestArrays
from forests.metrics.preferences import PATHS_DISTINCT, PathRef, paths, sibling_pairs
from forests.metrics.processbench import first_error
from forests.metrics.values import NodeValues
from prmsite.domain import rollout_is_correct

KINDS = ("pairs", "stepwise", "math_shepherd", "openrlhf", "processbench", "tree")
FORMATS = ("jsonl", "parquet", "hf_disk")
STEP_TAG = "ки"  # Math-Shepherd's step tag: the position where the step's score is predicted
GOOD_STEP, BAD_STEP = "+", "-"
DEFAULT_PLACEHOLDER = STEP_TAG  # OpenRLHF's --placeholder_token for Math-Shepherd-style data
WRITE_BATCH = 5_000

Progress = Callable[[int, int], None]


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
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.placeholder_token:
            raise ValueError("the placeholder token must not be empty")


@dataclass
class ExportTally:
    """What an export wrote and what it left out, and why."""

    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass(frozen=True)
class ExportSource:
    """Everything the record generators read: the forest, its values and its texts."""

    forest_name: str
    forest: ForestArrays
    values: NodeValues
    texts: Sequence[str]  # text of each node, by index
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


def _optional(value: float) -> float | None:
    return None if value != value else float(value)


def _int_or_none(value: float) -> int | None:
    return None if value != value else int(value)


class _Records:
    """The record generators of every kind over one source."""

    def __init__(self, source: ExportSource, options: ExportOptions, tally: ExportTally) -> None:
        self.source = source
        self.options = options
        self.tally = tally
        self.forest = source.forest
        self.value = source.values.value
        self.count = source.values.count
        self.low, self.high = source.values.intervals()
        trees = np.argsort(self.forest.root, kind="stable")  # nodes grouped by tree, ascending id within it
        roots_sorted = self.forest.root[trees]
        self.tree_nodes = trees
        self.tree_bounds = np.searchsorted(roots_sorted, self.forest.roots)

    def trees(self) -> Iterator[tuple[int, np.ndarray]]:
        roots = self.forest.roots.tolist()
        bounds = [*self.tree_bounds.tolist(), self.tree_nodes.size]
        for position, root in enumerate(roots):
            yield root, self.tree_nodes[bounds[position] : bounds[position + 1]]

    def prefix(self, index: int) -> str:
        """The root prompt followed by the steps down to ``index``."""
        forest, texts = self.forest, self.source.texts
        return texts[int(forest.root[index])] + "".join(texts[i] for i in forest.path(index))

    # --- pairs -----------------------------------------------------------------------------------------------

    def pairs(self, progress: Progress | None) -> Iterator[dict[str, Any]]:
        forest, texts, options = self.forest, self.source.texts, self.options
        branching = np.diff(forest.child_start) >= 2
        total = int(forest.roots.size)
        for done, (root, nodes) in enumerate(self.trees(), start=1):
            parents = nodes[branching[nodes]]
            prompt_of: dict[int, str] = {}
            for pair in sibling_pairs(
                forest,
                self.value,
                min_margin=options.min_margin,
                max_pairs_per_node=options.max_pairs_per_node,
                neutral=options.neutral_pairs,
                parents=parents,
            ):
                if pair.parent not in prompt_of:
                    prompt_of.clear()
                    prompt_of[pair.parent] = self.prefix(pair.parent)
                chosen, rejected = pair.chosen, pair.rejected
                yield {
                    "prompt": prompt_of[pair.parent],
                    "chosen": texts[chosen],
                    "rejected": texts[rejected],
                    "margin": pair.margin,
                    "preference": pair.preference,
                    "forest": self.source.forest_name,
                    "tree_id": int(forest.ids[root]),
                    "parent_id": int(forest.ids[pair.parent]),
                    "chosen_id": int(forest.ids[chosen]),
                    "rejected_id": int(forest.ids[rejected]),
                    "chosen_value": float(self.value[chosen]),
                    "rejected_value": float(self.value[rejected]),
                    "chosen_count": int(self.count[chosen]),
                    "rejected_count": int(self.count[rejected]),
                    "chosen_ci95_low": _optional(self.low[chosen]),
                    "chosen_ci95_high": _optional(self.high[chosen]),
                    "rejected_ci95_low": _optional(self.low[rejected]),
                    "rejected_ci95_high": _optional(self.high[rejected]),
                }
            if progress is not None:
                progress(done, total)

    # --- path-based kinds --------------------------------------------------------------------------------------

    def path_records(self, progress: Progress | None) -> Iterator[dict[str, Any]]:
        forest, options = self.forest, self.options
        total = int(forest.roots.size)
        done = 0
        current_tree = None
        prediction_of = forest.rollout_prediction
        rollout_index = {int(r): i for i, r in enumerate(forest.rollout_id.tolist()) if r >= 0}
        for ref in paths(forest, options.paths):
            tree = int(forest.root[ref.leaf])
            if tree != current_tree:
                if current_tree is not None and progress is not None:
                    done += 1
                    progress(done, total)
                current_tree = tree
            steps = forest.path(ref.leaf)
            step_values = self.value[steps]
            if np.isnan(step_values).any():
                self.tally.skip("a step without a value")
                continue
            if ref.rollout_id is None:
                prediction = forest.node_prediction(ref.leaf)
            else:
                prediction = prediction_of[rollout_index[ref.rollout_id]]
            truth = forest.tree_ground_truth(ref.leaf)
            meta = {
                "forest": self.source.forest_name,
                "tree_id": int(forest.ids[tree]),
                "leaf_id": int(forest.ids[ref.leaf]),
                "rollout_id": ref.rollout_id,
                "rollouts": ref.rollouts,
                "node_ids": forest.ids[steps].tolist(),
                "values": step_values.tolist(),
                "counts": self.count[steps].astype(np.int64).tolist(),
                "prediction": prediction,
                "ground_truth": truth,
                "correct": rollout_is_correct(prediction, truth),
            }
            record = self._path_record(ref, tree, steps, step_values, meta)
            if record is not None:
                yield record
        if progress is not None:
            progress(total, total)

    def _path_record(self, ref: PathRef, tree: int, steps: list[int], step_values: np.ndarray, meta: dict):
        texts, options = self.source.texts, self.options
        prompt = texts[tree]
        step_texts = [texts[i] for i in steps]
        good = [bool(v > options.threshold) for v in step_values.tolist()]
        kind = options.kind
        if kind == "stepwise":
            labels = step_values.tolist() if options.soft_labels else good
            return {"prompt": prompt, "completions": step_texts, "labels": labels, **meta}
        if kind in ("math_shepherd", "openrlhf"):
            tag = STEP_TAG if kind == "math_shepherd" else options.placeholder_token
            if tag in prompt or any(tag in step for step in step_texts):
                self.tally.skip(f"text holding the step tag {tag!r}")
                return None
            body = [step.strip() for step in step_texts]
            head = prompt.strip() + " "
            text = head + "\n".join(f"{step} {tag}" for step in body)
            if kind == "openrlhf":
                return {"input": text, "value": step_values.tolist(), **meta}
            marks = [GOOD_STEP if ok else BAD_STEP for ok in good]
            label = head + "\n".join(f"{step} {mark}" for step, mark in zip(body, marks, strict=True))
            return {"input": text, "label": label, **meta}
        # processbench
        if ref.rollout_id is None:
            record_id = f"{self.source.forest_name}-node-{meta['leaf_id']}"
            generator = self._first_model(ref.leaf)
        else:
            record_id = f"{self.source.forest_name}-rollout-{ref.rollout_id}"
            generator = self.source.rollout_models.get(ref.rollout_id, "")
        return {
            "id": record_id,
            "generator": generator,
            "problem": prompt,
            "steps": step_texts,
            "final_answer_correct": meta["correct"],
            "label": first_error(good),
            **meta,
        }

    def _first_model(self, leaf: int) -> str:
        if not hasattr(self, "_models_by_leaf"):
            models: dict[int, str] = {}
            for node, rollout_id in zip(
                self.forest.rollout_node.tolist(), self.forest.rollout_id.tolist(), strict=True
            ):
                if rollout_id >= 0 and node not in models and rollout_id in self.source.rollout_models:
                    models[node] = self.source.rollout_models[rollout_id]
            self._models_by_leaf = models
        return self._models_by_leaf.get(leaf, "")

    # --- tree --------------------------------------------------------------------------------------------------

    def tree_records(self, progress: Progress | None) -> Iterator[dict[str, Any]]:
        forest, texts = self.forest, self.source.texts
        total = int(forest.roots.size)
        rollouts_per_tree = np.bincount(forest.rollout_tree, minlength=forest.size)
        for done, (root, nodes) in enumerate(self.trees(), start=1):
            made: dict[int, dict[str, Any]] = {}
            for index in nodes.tolist():
                made[index] = {
                    "id": int(forest.ids[index]),
                    "text": texts[index],
                    "value": _optional(self.value[index]),
                    "count": int(self.count[index]),
                    "ci95_low": _optional(self.low[index]),
                    "ci95_high": _optional(self.high[index]),
                    "is_leaf": bool(forest.is_leaf[index]),
                    "prediction": _int_or_none(forest.prediction[index]),
                    "children": [],
                }
            for index in nodes.tolist():  # ascending id: children come out in id order
                parent = int(forest.parent[index])
                if parent >= 0:
                    made[parent]["children"].append(made[index])
            yield {
                "forest": self.source.forest_name,
                "tree_id": int(forest.ids[root]),
                "prompt": texts[root],
                "ground_truth": forest.tree_ground_truth(root),
                "num_nodes": int(nodes.size),
                "num_rollouts": int(rollouts_per_tree[root]),
                "root": json.dumps(made[root], ensure_ascii=False),
            }
            if progress is not None:
                progress(done, total)


def export_records(
    source: ExportSource, options: ExportOptions, tally: ExportTally, progress: Progress | None = None
) -> Iterator[dict[str, Any]]:
    """The records of ``options.kind``; ``progress(trees_done, trees)`` is called as trees are finished."""
    records = _Records(source, options, tally)
    if options.kind == "pairs":
        generator = records.pairs(progress)
    elif options.kind == "tree":
        generator = records.tree_records(progress)
    else:
        generator = records.path_records(progress)
    for record in generator:
        tally.records += 1
        yield record


# --- writing ---------------------------------------------------------------------------------------------------


class ExportError(ValueError):
    """The export cannot be written; nothing was."""


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


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def dataset_write(records: Iterable[dict[str, Any]], features, output: str | os.PathLike, fmt: str) -> int:
    """Write ``records`` (following ``features``) to ``output`` as ``fmt``; return how many were written.

    The records go to an Arrow file in a temporary folder beside ``output``; ``datasets`` writes the final file from
    it, which is then renamed onto ``output``. A folder that is not a dataset saved by ``save_to_disk`` is never
    replaced. Raises ``ExportError`` (and writes nothing) when there are no records, since an empty file does not
    load back.
    """
    import pyarrow as pa
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

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
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()  # the caller shows its own progress
    try:
        arrow_path = work / "records.arrow"
        written = 0
        iterator = iter(records)
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            while batch := list(islice(iterator, WRITE_BATCH)):
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                written += len(batch)
        if written == 0:
            raise ExportError("nothing to export: no record matches (nothing was written)")
        dataset = Dataset.from_file(str(arrow_path))
        if fmt == "jsonl":
            staged = work / "out.jsonl"
            dataset.to_json(str(staged), lines=True, force_ascii=False)
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
