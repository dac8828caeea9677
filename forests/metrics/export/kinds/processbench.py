"""``processbench``: one record per path in ProcessBench's format: ``id``, ``generator`` (the rollout's model),
``problem``, ``steps``, ``final_answer_correct`` and ``label``, the index of the first step whose value is not above
the threshold (-1 when none is)."""

from __future__ import annotations

from collections.abc import Iterator

from datasets import Features, List, Value

from forests.metrics.export.context import ExportContext
from forests.metrics.export.names import PROCESSBENCH
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import PathRows, path_batches, path_meta_features
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress
from prmsite.core.processbench import first_error

NAME = PROCESSBENCH
ROLLOUT_RECORD_ID = "{forest}-rollout-{rollout_id}"  # with --paths rollouts
NODE_RECORD_ID = "{forest}-node-{node_id}"  # with --paths distinct


def features(options: ExportOptions) -> Features:
    text = Value("string")
    return Features(
        {
            "id": text,
            "generator": text,
            "problem": text,
            "steps": List(text),
            "final_answer_correct": Value("bool"),
            "label": Value("int64"),
            **path_meta_features(),
        }
    )


def batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    context = ExportContext(source, options, tally, features(options), json_lines=json_lines)
    forest, name, models = context.forest, context.forest_name, context.source.rollout_models

    def build(rows: PathRows) -> Batch:
        bounds = rows.offsets.tolist()
        good = rows.good.tolist()
        first_wrong = [first_error(good[bounds[i] : bounds[i + 1]]) for i in range(len(rows))]
        if rows.per_rollout:
            rollout_ids = forest.rollout_id[rows.rollout].tolist()
            record_ids = [ROLLOUT_RECORD_ID.format(forest=name, rollout_id=r) for r in rollout_ids]
        else:
            record_ids = [NODE_RECORD_ID.format(forest=name, node_id=n) for n in forest.ids[rows.leaf].tolist()]
            # The first rollout ending at a node has the lowest id; a leaf without rollout rows has no model.
            rollout_ids = forest.rollout_id[rows.rollout].tolist()
        return {
            "id": record_ids,
            "generator": [models.get(r, "") for r in rollout_ids],
            "problem": context.texts_of(rows.roots),
            "steps": context.list_column("steps", rows.offsets, context.texts_of(rows.flat)),
            "final_answer_correct": rows.meta["correct"],
            "label": first_wrong,
            **rows.meta,
        }

    return path_batches(context, progress, build)
