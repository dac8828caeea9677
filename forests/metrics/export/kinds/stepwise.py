"""``stepwise``: one record per path, the format PRM trainers read (TRL's ``PRMTrainer``).

Its first columns are a contract with the PRM trainer (``STEPWISE_COLUMNS``): ``prompt`` (str), ``completions``
(list[str], the steps of one path), ``labels`` (list[bool]: value above the threshold; list[float] in [0, 1] with
soft labels); the path's metadata follow.
"""

from __future__ import annotations

from collections.abc import Iterator

from datasets import Features, List, Value

from forests.metrics.export.context import ExportContext
from forests.metrics.export.names import STEPWISE
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import PathRows, path_batches, path_meta_features
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress
from prmsite.core.domain import STEPWISE_COLUMNS

NAME = STEPWISE


def features(options: ExportOptions) -> Features:
    text = Value("string")
    labels = List(Value("float64")) if options.soft_labels else List(Value("bool"))
    contract = dict(zip(STEPWISE_COLUMNS, (text, List(text), labels), strict=True))
    return Features({**contract, **path_meta_features()})


def batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    context = ExportContext(source, options, tally, features(options), json_lines=json_lines)

    def build(rows: PathRows) -> Batch:
        labels = rows.step_values if context.options.soft_labels else rows.good
        return {
            "prompt": context.texts_of(rows.roots),
            "completions": context.list_column("completions", rows.offsets, context.texts_of(rows.flat)),
            "labels": context.list_column("labels", rows.offsets, labels),
            **rows.meta,
        }

    return path_batches(context, progress, build)
