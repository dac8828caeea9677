"""The consensus set as a ``stepwise`` dataset, written with ``datasets``. Pure: no Django.

``stepwise`` is the format PRM trainers read (TRL's ``PRMTrainer``): ``prompt`` (str), ``completions`` (list[str],
the steps kept) and ``labels`` (list[bool], one per step: True right, False wrong), plus metadata columns saying
where each record comes from. The same column names and types as the forest exports, so one trainer reads both.

The file is written under a temporary name beside the target and renamed into place: an interrupted export leaves
nothing half-written, and what is written always loads back with ``load_dataset`` / ``load_from_disk``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "parquet", "hf_disk")


class ExportError(ValueError):
    """The export cannot be written as asked; nothing was written."""


def stepwise_features():
    """The ``datasets.Features`` of a consensus record."""
    from datasets import Features, List, Value

    text, integer, boolean = Value("string"), Value("int64"), Value("bool")
    return Features(
        {
            "prompt": text,
            "completions": List(text),
            "labels": List(boolean),
            "rollout_id": integer,
            "prm_version": text,
            "sources": List(text),
            "labellers": List(text),
            "num_labels": integer,
            "num_steps": integer,  # steps of the whole rollout (completions holds the agreed prefix)
            "first_error": integer,  # index of the first wrong step kept, -1 when none
            "model": text,
            "prediction": integer,
            "ground_truth": integer,
            "correct": boolean,
            "forest": text,
            "tree_id": integer,
            "leaf_id": integer,
        }
    )


def stepwise_write(records: Iterable[dict[str, Any]], output: str | os.PathLike, fmt: str) -> int:
    """Write ``records`` (dicts with the columns of ``stepwise_features``) to ``output`` as ``fmt``; return how many.

    ``ExportError`` (and nothing written) when there is no record, the format is unknown, the output's folder is
    missing, or the output is a folder that is not a saved dataset.
    """
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    target = Path(output)
    if not target.parent.is_dir():
        raise ExportError(f"folder {target.parent} does not exist")
    if target.is_dir() and not (fmt == "hf_disk" and (target / "dataset_info.json").is_file()):
        raise ExportError(f"{target} is a folder that is not a dataset saved by save_to_disk: choose another output")
    if fmt != "hf_disk" and target.exists() and not target.is_file():
        raise ExportError(f"{target} exists and is not a file")
    rows = list(records)
    if not rows:
        raise ExportError("nothing to export: no rollout has a consensus with these sources (nothing was written)")
    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        dataset = Dataset.from_list(rows, features=stepwise_features())
        staged = work / "out"
        if fmt == "jsonl":
            dataset.to_json(str(staged), lines=True, force_ascii=False)
        elif fmt == "parquet":
            dataset.to_parquet(str(staged))
        else:
            dataset.save_to_disk(str(staged))
        del dataset
        if fmt == "hf_disk" and target.exists():
            os.replace(target, work / "replaced")  # the old dataset goes into the work folder, removed below
        os.replace(staged, target)
        return len(rows)
    finally:
        if bars_were_on:
            enable_progress_bar()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
