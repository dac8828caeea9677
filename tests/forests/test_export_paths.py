"""What the path-based export kinds share (``forests.metrics.export.paths``), on a forest built in memory: a path
with a step of no value is left out and counted; the metadata columns; the step-tagged text."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from forests.metrics.export.context import ExportContext
from forests.metrics.export.kinds import stepwise
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import SKIP_NO_VALUE, path_batches, path_meta_features, tagged_texts
from forests.metrics.export.source import ExportTally
from forests.metrics.values import label_values
from tests.forests.export_forest import memory_source


def test_the_metadata_columns_and_their_order():
    assert list(path_meta_features()) == [
        "forest", "tree_id", "leaf_id", "rollout_id", "rollouts", "node_ids", "values", "counts", "prediction",
        "ground_truth", "correct", "ci95_lows", "ci95_highs",
    ]  # fmt: skip


def test_a_path_with_a_step_of_no_value_is_left_out_and_counted():
    source = memory_source()
    forest = source.forest
    # One PRM label, on the path ending at node 7 (s1 s2 no): every other path has a step no label reaches.
    values = label_values(forest, [(forest.index_of(7), [0.9, 0.8, 0.1])])
    tally = ExportTally()
    options = ExportOptions(kind="stepwise")
    context = ExportContext(replace(source, values=values), options, tally, stepwise.features(options))
    seen: list[tuple[int, int]] = []
    batches = list(path_batches(context, lambda *done: seen.append(done), lambda rows: rows.meta))
    assert [batch["leaf_id"].tolist() for batch in batches] == [[7]]
    assert batches[0]["values"].to_pylist() == [[0.9, 0.8, 0.1]]
    assert tally.skipped == {SKIP_NO_VALUE: 6}
    assert seen[-1] == (3, 3)


def test_the_tagged_text_trims_the_prompt_and_each_step():
    options = ExportOptions(kind="stepwise")
    context = ExportContext(memory_source(), options, ExportTally(), stepwise.features(options))
    texts: list[list[str]] = []
    list(
        path_batches(
            context, None, lambda rows: texts.append(tagged_texts(context, rows, pa.scalar(" !"))[0].to_pylist())
        )
    )
    assert texts[0][4] == 'Is "B"/ü? b1 !\nno !'
