"""The ``stepwise`` export kind (what PRM trainers read) on a forest built in memory (no database)."""

from __future__ import annotations

import pytest

from forests.metrics.export.kinds import stepwise
from forests.metrics.export.options import ExportOptions
from prmsite.core.domain import STEPWISE_COLUMNS
from tests.forests.export_forest import FIRST_PATH_INTERVALS, PROMPTS, export_file, export_rows

PATH_META = [
    "forest", "tree_id", "leaf_id", "rollout_id", "rollouts", "node_ids", "values", "counts", "prediction",
    "ground_truth", "correct", "ci95_lows", "ci95_highs",
]  # fmt: skip


def test_the_trainer_columns_come_first_then_the_path_metadata():
    hard = stepwise.features(ExportOptions(kind="stepwise"))
    assert STEPWISE_COLUMNS == ("prompt", "completions", "labels")
    assert list(hard) == [*STEPWISE_COLUMNS, *PATH_META]
    assert hard["labels"].feature.dtype == "bool"
    assert stepwise.features(ExportOptions(kind="stepwise", soft_labels=True))["labels"].feature.dtype == "float64"


def test_one_record_per_node_where_rollouts_end_labelled_by_the_threshold(tmp_path):
    rows, tally = export_rows(tmp_path, kind="stepwise")
    assert [(r["prompt"], r["completions"], r["labels"]) for r in rows] == [
        (PROMPTS["A"], ["s1 ", "s2 ", "yes"], [True, True, True]),
        (PROMPTS["A"], ["s1 ", "s2 ", "no"], [True, True, False]),
        (PROMPTS["A"], ["s1 ", "t2 ки ", "yes"], [True, True, True]),
        (PROMPTS["A"], ["u1 ", "no"], [False, False]),
        (PROMPTS["B"], ["b1\t", "no"], [True, True]),
        (PROMPTS["B"], ["b1\t", "yes"], [True, False]),
        (PROMPTS["B"], ["c1 ", "yes"], [False, False]),
    ]
    first = rows[0]
    assert (first["leaf_id"], first["rollout_id"], first["rollouts"], first["node_ids"]) == (6, None, 2, [4, 5, 6])
    assert (first["counts"], first["prediction"], first["ground_truth"], first["correct"]) == ([4, 3, 2], 1, 1, True)
    assert rows[-1]["prediction"] is None and rows[-1]["correct"] is False
    assert tally.records == 7 and tally.skipped == {}


def test_soft_labels_are_the_values_and_the_threshold_moves_hard_ones(tmp_path):
    soft, _ = export_rows(tmp_path, kind="stepwise", soft_labels=True)
    assert soft[0]["labels"] == pytest.approx([0.75, 2 / 3, 1.0])
    strict, _ = export_rows(tmp_path, kind="stepwise", threshold=0.7)
    assert strict[0]["labels"] == [True, False, True]


def test_one_record_per_rollout_on_request(tmp_path):
    rows, _ = export_rows(tmp_path, kind="stepwise", paths="rollouts")
    assert [r["rollout_id"] for r in rows] == [100, 101, 102, 103, 104, 105, 106, 107]
    assert {r["rollouts"] for r in rows} == {1}
    assert rows[0]["completions"] == rows[1]["completions"]  # two identical rollouts, two records


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="stepwise")
    export_file(tmp_path / "two", fmt, kind="stepwise")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_bytes(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="stepwise")
    first = (tmp_path / "out.jsonl").read_bytes().split(b"\n")[0]
    assert (
        first
        == (
            b'{"prompt":"Is A?","completions":["s1 ","s2 ","yes"],"labels":[true,true,true],"forest":"memory-forest",'
            b'"tree_id":1,"leaf_id":6,"rollout_id":null,"rollouts":2,"node_ids":[4,5,6],"values":[0.75,0.6666666667,1.0],'
            b'"counts":[4,3,2],"prediction":1,"ground_truth":1,"correct":true}'
        )[:-1]
        + FIRST_PATH_INTERVALS
    )
