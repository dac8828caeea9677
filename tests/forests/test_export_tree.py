"""The ``tree`` export kind on a forest built in memory (no database): each tree as nested JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forests.metrics.export.kinds import tree
from forests.metrics.export.options import ExportOptions
from tests.forests.export_forest import PROMPTS, export_file, export_rows, memory_forest


def test_the_schema():
    features = tree.features(ExportOptions(kind="tree"))
    assert list(features) == ["forest", "tree_id", "prompt", "ground_truth", "num_nodes", "num_rollouts", "root"]


def test_preorder_visits_each_tree_depth_first_children_by_id():
    forest = memory_forest()
    order, size = tree.preorder(forest)
    assert forest.ids[order].tolist() == [1, 4, 5, 6, 7, 8, 9, 10, 11, 2, 12, 13, 14, 15, 16, 3]
    assert size[:3].tolist() == [9, 6, 1]
    assert np.array_equal(np.sort(order), np.arange(forest.size))


def test_one_record_per_tree_with_every_node_nested(tmp_path):
    rows, tally = export_rows(tmp_path, kind="tree")
    assert [(r["tree_id"], r["prompt"], r["num_nodes"], r["num_rollouts"]) for r in rows] == [
        (1, PROMPTS["A"], 9, 5),
        (2, PROMPTS["B"], 6, 3),
        (3, PROMPTS["C"], 1, 0),
    ]
    root = rows[0]["root"]
    assert (root["id"], root["value"], root["count"], root["is_leaf"]) == (1, 0.6, 5, False)
    assert [child["id"] for child in root["children"]] == [4, 10]
    leaf = root["children"][0]["children"][0]["children"][0]
    assert (leaf["text"], leaf["is_leaf"], leaf["prediction"], leaf["children"]) == ("yes", True, 1, [])
    assert rows[2]["root"]["value"] is None and rows[2]["root"]["children"] == []
    assert tally.records == 3


def test_parquet_stores_the_tree_as_json_dumps_text(tmp_path):
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    export_file(tmp_path / "out.parquet", "parquet", kind="tree")
    text = pyarrow_parquet.read_table(tmp_path / "out.parquet").column("root")[2].as_py()
    expected = {
        "id": 3, "text": "Is C?", "value": None, "count": 0, "ci95_low": None, "ci95_high": None,
        "is_leaf": False, "prediction": None, "children": [],
    }  # fmt: skip
    assert text == json.dumps(expected, ensure_ascii=False)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="tree")
    export_file(tmp_path / "two", fmt, kind="tree")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_bytes(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="tree")
    last = (tmp_path / "out.jsonl").read_bytes().split(b"\n")[-2]
    assert last == (
        b'{"forest":"memory-forest","tree_id":3,"prompt":"Is C?","ground_truth":1,"num_nodes":1,"num_rollouts":0,'
        b'"root":{"id":3,"text":"Is C?","value":null,"count":0,"ci95_low":null,"ci95_high":null,"is_leaf":false,'
        b'"prediction":null,"children":[]}}'
    )
