"""The ``processbench`` export kind on a forest built in memory (no database)."""

from __future__ import annotations

import pytest

from forests.metrics.export.kinds import processbench
from forests.metrics.export.kinds.processbench import NODE_RECORD_ID, ROLLOUT_RECORD_ID
from forests.metrics.export.options import ExportOptions
from tests.forests.export_forest import FIRST_PATH_INTERVALS, FOREST_NAME, export_file, export_rows


def test_the_schema():
    features = processbench.features(ExportOptions(kind="processbench"))
    assert list(features)[:7] == ["id", "generator", "problem", "steps", "final_answer_correct", "label", "forest"]


def test_the_label_is_the_first_step_not_above_the_threshold(tmp_path):
    rows, _ = export_rows(tmp_path, kind="processbench")
    assert [(r["leaf_id"], r["label"], r["final_answer_correct"]) for r in rows] == [
        (6, -1, True),
        (7, 2, False),
        (9, -1, True),
        (11, 0, False),
        (13, -1, True),
        (14, 1, False),
        (16, 0, False),
    ]
    assert rows[0]["id"] == NODE_RECORD_ID.format(forest=FOREST_NAME, node_id=6)
    assert [r["generator"] for r in rows] == [
        "model-a",
        "model-b",
        "model-a",
        "model-b",
        "model-a",
        "model-a",
        "model-c",
    ]
    assert rows[4]["problem"] == 'Is "B"/ü?\n' and rows[4]["steps"] == ["b1\t", "no"]


def test_one_record_per_rollout_names_the_rollout(tmp_path):
    rows, _ = export_rows(tmp_path, kind="processbench", paths="rollouts")
    assert rows[1]["id"] == ROLLOUT_RECORD_ID.format(forest=FOREST_NAME, rollout_id=101)
    assert len(rows) == 8


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="processbench")
    export_file(tmp_path / "two", fmt, kind="processbench")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_bytes(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="processbench")
    first = (tmp_path / "out.jsonl").read_bytes().split(b"\n")[0]
    assert (
        first
        == (
            b'{"id":"memory-forest-node-6","generator":"model-a","problem":"Is A?","steps":["s1 ","s2 ","yes"],'
            b'"final_answer_correct":true,"label":-1,"forest":"memory-forest","tree_id":1,"leaf_id":6,"rollout_id":null,'
            b'"rollouts":2,"node_ids":[4,5,6],"values":[0.75,0.6666666667,1.0],"counts":[4,3,2],"prediction":1,'
            b'"ground_truth":1,"correct":true}'
        )[:-1]
        + FIRST_PATH_INTERVALS
    )
