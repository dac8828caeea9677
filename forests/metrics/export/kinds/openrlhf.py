"""``openrlhf``: one record per path for OpenRLHF's PRM training: ``input`` is the prompt and the steps, each followed
by the placeholder token (``--placeholder_token``), ``value`` the steps' values. Paths whose texts already hold the
placeholder are left out."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
from datasets import Features, List, Value

from forests.metrics.export.context import ExportContext
from forests.metrics.export.names import OPENRLHF
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import PathRows, path_batches, path_meta_features, tagged_texts
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress

NAME = OPENRLHF


def features(options: ExportOptions) -> Features:
    return Features({"input": Value("string"), "value": List(Value("float64")), **path_meta_features()})


def batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    context = ExportContext(source, options, tally, features(options), json_lines=json_lines)
    tag = context.options.placeholder_token

    def build(rows: PathRows) -> Batch:
        return {
            "input": tagged_texts(context, rows, pa.scalar(" " + tag))[0],
            "value": context.list_column("value", rows.offsets, rows.step_values),
            **rows.meta,
        }

    return path_batches(context, progress, build, tag=tag)
