"""``math_shepherd``: one record per path in Math-Shepherd's format: ``input`` is the prompt and the steps, each
followed by the step tag; ``label`` the same text with ``+`` (a good step) or ``-`` in the tag's place. Paths whose
texts already hold the tag are left out."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Features, Value

from forests.metrics.export.context import ExportContext
from forests.metrics.export.names import BAD_STEP, GOOD_STEP, MATH_SHEPHERD, STEP_TAG
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import PathRows, path_batches, path_meta_features, tagged_texts
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress

NAME = MATH_SHEPHERD


def features(options: ExportOptions) -> Features:
    return Features({"input": Value("string"), "label": Value("string"), **path_meta_features()})


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
        marks = pc.if_else(pa.array(rows.good), " " + GOOD_STEP, " " + BAD_STEP)
        inputs, labels = tagged_texts(context, rows, pa.scalar(" " + STEP_TAG), marks)
        return {"input": inputs, "label": labels, **rows.meta}

    return path_batches(context, progress, build, tag=STEP_TAG)
