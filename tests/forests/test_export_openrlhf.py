"""The ``openrlhf`` export kind on a forest built in memory (no database)."""

from __future__ import annotations

import pytest

from forests.metrics.export.kinds import openrlhf
from forests.metrics.export.names import DEFAULT_PLACEHOLDER
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.paths import SKIP_TAGGED
from tests.forests.export_forest import LAST_PATH_INTERVALS, export_file, export_rows


def test_the_schema():
    features = openrlhf.features(ExportOptions(kind="openrlhf"))
    assert list(features)[:3] == ["input", "value", "forest"]
    assert features["value"].feature.dtype == "float64"


def test_each_step_is_followed_by_the_placeholder_and_valued(tmp_path):
    rows, tally = export_rows(tmp_path, kind="openrlhf", placeholder_token="<s>")
    assert rows[0]["input"] == "Is A? s1 <s>\ns2 <s>\nyes <s>"
    assert rows[0]["value"] == pytest.approx([0.75, 2 / 3, 1.0])
    assert len(rows) == 7 and tally.skipped == {}  # "ки" is no placeholder here: nothing is left out


def test_texts_holding_the_placeholder_are_left_out(tmp_path):
    rows, tally = export_rows(tmp_path, kind="openrlhf")
    assert len(rows) == 6 and tally.skipped == {SKIP_TAGGED.format(tag=DEFAULT_PLACEHOLDER): 1}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="openrlhf")
    export_file(tmp_path / "two", fmt, kind="openrlhf")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_bytes(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="openrlhf")
    last = (tmp_path / "out.jsonl").read_bytes().split(b"\n")[-2]
    assert (
        last
        == (
            '{"input":"Is \\"B\\"\\/ü? c1 ки\\nyes ки","value":[0.0,0.0],"forest":"memory-forest","tree_id":2,'
            '"leaf_id":16,"rollout_id":null,"rollouts":1,"node_ids":[15,16],"values":[0.0,0.0],"counts":[1,1],'
            '"prediction":null,"ground_truth":0,"correct":false}'
        ).encode()[:-1]
        + LAST_PATH_INTERVALS
    )
