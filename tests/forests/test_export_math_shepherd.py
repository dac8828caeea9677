"""The ``math_shepherd`` export kind on a forest built in memory (no database)."""

from __future__ import annotations

import pytest

from forests.metrics.export.kinds import math_shepherd
from forests.metrics.export.names import STEP_TAG
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import SKIP_TAGGED
from tests.forests.export_forest import FIRST_PATH_INTERVALS, export_file, export_rows


def test_the_schema():
    features = math_shepherd.features(ExportOptions(kind="math_shepherd"))
    assert list(features)[:3] == ["input", "label", "forest"]
    assert features["input"].dtype == "string" and features["label"].dtype == "string"


def test_each_step_is_tagged_and_marked_good_or_bad(tmp_path):
    rows, tally = export_rows(tmp_path, kind="math_shepherd")
    assert rows[1]["input"] == f"Is A? s1 {STEP_TAG}\ns2 {STEP_TAG}\nno {STEP_TAG}"
    assert rows[1]["label"] == "Is A? s1 +\ns2 +\nno -"
    assert rows[3]["input"] == f'Is "B"/ü? b1 {STEP_TAG}\nno {STEP_TAG}'  # prompt and steps trimmed
    # The path through "t2 ки " already holds the tag: left out, and counted.
    assert [r["leaf_id"] for r in rows] == [6, 7, 11, 13, 14, 16]
    assert tally.skipped == {SKIP_TAGGED.format(tag=STEP_TAG): 1} and tally.records == 6


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="math_shepherd")
    export_file(tmp_path / "two", fmt, kind="math_shepherd")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_bytes(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="math_shepherd")
    first = (tmp_path / "out.jsonl").read_bytes().split(b"\n")[0]
    assert (
        first
        == (
            '{"input":"Is A? s1 ки\\ns2 ки\\nyes ки","label":"Is A? s1 +\\ns2 +\\nyes +","forest":"memory-forest",'
            '"tree_id":1,"leaf_id":6,"rollout_id":null,"rollouts":2,"node_ids":[4,5,6],"values":[0.75,0.6666666667,1.0],'
            '"counts":[4,3,2],"prediction":1,"ground_truth":1,"correct":true}'
        ).encode()[:-1]
        + FIRST_PATH_INTERVALS
    )
