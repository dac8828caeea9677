"""The consensus set as a ``stepwise`` dataset, written by the forest exports' writer. Pure: no Django.

``stepwise`` is the format PRM trainers read (TRL's ``PRMTrainer``): ``prompt`` (str), ``completions`` (list[str],
the steps kept) and ``labels`` (list[bool], one per step: True right, False wrong), plus metadata columns saying
where each record comes from. The same column names and types as the forest exports, so one trainer reads both.

The file is written under a temporary name beside the target and renamed into place: an interrupted export leaves
nothing half-written, and what is written always loads back with ``load_dataset`` / ``load_from_disk``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prmsite.core.dataset_files import FORMATS, ExportError, dataset_write

__all__ = ["FORMATS", "ExportError", "stepwise_features", "stepwise_write"]


def stepwise_features(*, adjudicated: bool = False):
    """The ``datasets.Features`` of a consensus record (with ``adjudicated``, the column saying whether the record is
    an adjudicated label: the export's adjudicated-first option)."""
    from datasets import Features, List, Value  # noqa: PLC0415 (deferred: datasets is heavy)

    text, integer, boolean = Value("string"), Value("int64"), Value("bool")
    features = Features(
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
    if adjudicated:
        features["adjudicated"] = boolean
    return features


def stepwise_write(records: Iterable[dict[str, Any]], output: str | os.PathLike, fmt: str) -> int:
    """Write ``records`` (dicts with the columns of ``stepwise_features``) to ``output`` as ``fmt``; return how many.

    The forest exports' writer does the writing (``prmsite.core.dataset_files.dataset_write``): ``ExportError`` (and
    nothing written) when there is no record, the format is unknown, the output's folder is missing, or the output
    is a folder that is not a saved dataset.
    """
    rows = list(records)
    features = stepwise_features(adjudicated=bool(rows) and "adjudicated" in rows[0])
    batch = {name: [row[name] for row in rows] for name in features}
    return dataset_write([batch] if rows else [], features, output, fmt)
