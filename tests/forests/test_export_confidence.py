"""Labels that say how sure they are: every path-based export kind carries, per step, the completions behind its
value (``counts``) and its 95% Wilson interval (``ci95_lows``, ``ci95_highs``), aligned with the steps, the same
figures ``tree`` and ``pairs`` write for the same nodes. On a forest built in memory (no database)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import datasets
import pytest

from forests.metrics.export.context import ExportContext
from forests.metrics.export.kinds import stepwise
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import path_batches, path_meta_features
from forests.metrics.export.registry import export_batches, features_of
from forests.metrics.export.source import ExportTally
from forests.metrics.stats import wilson_interval
from forests.metrics.values import label_values
from prmsite.core.dataset_files import dataset_write
from prmsite.core.domain import STEP_CONFIDENCE_COLUMNS
from tests.forests.export_forest import export_file, export_rows, memory_source

PATH_KINDS = ["stepwise", "math_shepherd", "openrlhf", "processbench"]

# (correct rollouts, rollouts) through each step node of the memory forest, counted by hand from its ROLLOUTS:
# tree A (truth 1): s1 -> s2 -> yes (x2) | no, s1 -> "t2 ки" -> yes, u1 -> no; tree B (truth 0): b1 -> no | yes,
# c1 -> yes (no answer: wrong).
BY_HAND = {
    4: (3, 4), 5: (2, 3), 6: (2, 2), 7: (0, 1), 8: (1, 1), 9: (1, 1), 10: (0, 1), 11: (0, 1),
    12: (1, 2), 13: (1, 1), 14: (0, 1), 15: (0, 1), 16: (0, 1),
}  # fmt: skip


def test_the_column_names_are_the_ones_the_trainer_reads_after_every_earlier_column():
    names = list(path_meta_features())
    assert names[-2:] == ["ci95_lows", "ci95_highs"]
    assert set(STEP_CONFIDENCE_COLUMNS) <= set(names)


@pytest.mark.parametrize("kind", PATH_KINDS)
@pytest.mark.parametrize("paths", ["distinct", "rollouts"])
def test_each_step_carries_its_completions_and_wilson_interval(tmp_path, kind, paths):
    rows, _ = export_rows(tmp_path, kind=kind, paths=paths)
    assert rows
    for row in rows:
        nodes = row["node_ids"]
        assert len(row["counts"]) == len(row["ci95_lows"]) == len(row["ci95_highs"]) == len(nodes)
        assert row["counts"] == [BY_HAND[n][1] for n in nodes]
        assert row["values"] == pytest.approx([BY_HAND[n][0] / BY_HAND[n][1] for n in nodes])
        intervals = [wilson_interval(*BY_HAND[n]) for n in nodes]
        assert row["ci95_lows"] == pytest.approx([low for low, _ in intervals], abs=1e-9)
        assert row["ci95_highs"] == pytest.approx([high for _, high in intervals], abs=1e-9)
    first = next(r for r in rows if r["node_ids"] == [4, 5, 6])
    assert first["ci95_lows"][0] == pytest.approx(0.3006418426)  # 3 of 4
    assert first["ci95_highs"][2] == 1.0  # 2 of 2: the interval reaches 1, never beyond


def test_the_figures_are_the_ones_tree_and_pairs_write_for_the_same_nodes(tmp_path):
    per_node: dict[int, tuple[int, float, float]] = {}
    for kind in PATH_KINDS:
        rows, _ = export_rows(tmp_path, kind=kind)
        for row in rows:
            for node, *figures in zip(row["node_ids"], row["counts"], row["ci95_lows"], row["ci95_highs"], strict=True):
                assert per_node.setdefault(node, tuple(figures)) == tuple(figures)
    trees, _ = export_rows(tmp_path, kind="tree")
    stack = [t["root"] for t in trees]
    seen = 0
    while stack:
        node = stack.pop()
        stack.extend(node["children"])
        if node["id"] in per_node:
            assert per_node[node["id"]] == (node["count"], node["ci95_low"], node["ci95_high"])
            seen += 1
    assert seen == len(per_node) == len(BY_HAND)
    pairs, _ = export_rows(tmp_path, kind="pairs")
    assert pairs
    for pair in pairs:
        for side in ("chosen", "rejected"):
            figures = (pair[f"{side}_count"], pair[f"{side}_ci95_low"], pair[f"{side}_ci95_high"])
            assert per_node[pair[f"{side}_id"]] == figures


def test_soft_labels_and_the_threshold_change_no_interval(tmp_path):
    plain, _ = export_rows(tmp_path, kind="stepwise")
    soft, _ = export_rows(tmp_path, kind="stepwise", soft_labels=True, threshold=0.7)
    for column in STEP_CONFIDENCE_COLUMNS:
        assert [r[column] for r in soft] == [r[column] for r in plain]


def test_with_a_prm_value_function_the_count_is_the_labels_behind_each_step():
    source = memory_source()
    forest = source.forest
    values = label_values(forest, [(forest.index_of(7), [0.9, 0.8, 0.1]), (forest.index_of(7), [0.7, 0.6, 0.3])])
    options = ExportOptions(kind="stepwise")
    context = ExportContext(replace(source, values=values), options, ExportTally(), stepwise.features(options))
    [batch] = list(path_batches(context, None, lambda rows: rows.meta))
    assert batch["counts"].to_pylist() == [[2, 2, 2]]
    expected = [wilson_interval(total, 2) for total in (1.6, 1.4, 0.4)]
    assert batch["ci95_lows"].to_pylist()[0] == pytest.approx([low for low, _ in expected])
    assert batch["ci95_highs"].to_pylist()[0] == pytest.approx([high for _, high in expected])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_columns_read_back_with_datasets(tmp_path, fmt):
    path = tmp_path / f"stepwise.{fmt}"
    export_file(path, fmt, kind="stepwise")
    loaded = datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(path), split="train")
    assert loaded.features["ci95_lows"].feature.dtype == "float64"
    first = loaded[0]
    assert first["counts"] == [4, 3, 2]
    assert first["ci95_highs"] == pytest.approx([wilson_interval(*BY_HAND[n])[1] for n in (4, 5, 6)])
    assert all(math.isfinite(v) for row in loaded["ci95_lows"] for v in row)
    if fmt == "jsonl":  # every earlier key first, in its old order
        keys = list(json.loads(path.read_text(encoding="utf-8").splitlines()[0]))
        assert keys[-3:] == ["correct", "ci95_lows", "ci95_highs"]


def test_a_step_without_an_interval_reads_null(tmp_path):
    source = memory_source()
    forest = source.forest
    # A PRM output outside [0, 1] has a value but no Wilson interval.
    values = label_values(forest, [(forest.index_of(7), [0.9, 1.5, 0.1])])
    options = ExportOptions(kind="stepwise")
    path = tmp_path / "out.jsonl"
    batches = export_batches(replace(source, values=values), options, ExportTally(), json_lines=True)
    dataset_write(batches, features_of(options), path, "jsonl", raw_json=True)
    [row] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert row["counts"] == [1, 1, 1]
    assert row["ci95_lows"][1] is None and row["ci95_highs"][1] is None
    assert row["ci95_lows"][0] == pytest.approx(wilson_interval(0.9, 1)[0])
