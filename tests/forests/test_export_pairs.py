"""The ``pairs`` export kind on a forest built in memory (no database): its schema, its records, its bytes."""

from __future__ import annotations

import pytest

from forests.metrics.export.kinds import pairs
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.source import ExportTally
from forests.metrics.preferences import PREFERENCE_CHOSEN
from tests.forests.export_forest import PROMPTS, export_file, export_rows, memory_source

COLUMNS = [
    "prompt", "chosen", "rejected", "margin", "preference", "forest", "tree_id", "parent_id", "chosen_id",
    "rejected_id", "chosen_value", "rejected_value", "chosen_count", "rejected_count", "chosen_ci95_low",
    "chosen_ci95_high", "rejected_ci95_low", "rejected_ci95_high",
]  # fmt: skip


def test_the_schema_names_every_column_in_order():
    features = pairs.features(ExportOptions(kind="pairs"))
    assert list(features) == COLUMNS
    assert features["margin"].dtype == "float64" and features["preference"].dtype == "int64"


def test_sibling_steps_whose_values_differ_make_pairs_tree_by_tree(tmp_path):
    rows, tally = export_rows(tmp_path, kind="pairs")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        (PROMPTS["A"], "s1 ", "u1 "),
        (PROMPTS["A"] + "s1 ", "t2 ки ", "s2 "),
        (PROMPTS["A"] + "s1 s2 ", "yes", "no"),
        (PROMPTS["B"], "b1\t", "c1 "),
        (PROMPTS["B"] + "b1\t", "no", "yes"),
    ]
    first = rows[0]
    assert (first["parent_id"], first["chosen_id"], first["rejected_id"], first["tree_id"]) == (1, 4, 10, 1)
    assert (first["chosen_value"], first["rejected_value"], first["margin"]) == (0.75, 0.0, 0.75)
    assert (first["chosen_count"], first["rejected_count"]) == (4, 1)
    assert first["preference"] == PREFERENCE_CHOSEN and first["forest"] == "memory-forest"
    assert tally.records == 5 and tally.skipped == {}


def test_pairs_below_the_minimum_margin_are_left_out(tmp_path):
    rows, _ = export_rows(tmp_path, kind="pairs", min_margin=0.6)
    assert [(r["chosen_id"], r["rejected_id"], r["margin"]) for r in rows] == [
        (4, 10, 0.75),
        (6, 7, 1.0),
        (13, 14, 1.0),
    ]


def test_progress_is_reported_up_to_the_last_tree():
    seen: list[tuple[int, int]] = []
    batches = list(
        pairs.batches(memory_source(), ExportOptions(kind="pairs"), ExportTally(), lambda *done: seen.append(done))
    )
    assert sum(len(batch["prompt"]) for batch in batches) == 5
    assert seen[-1] == (3, 3)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_bytes_are_the_same_on_every_export(tmp_path, fmt):
    export_file(tmp_path / "one", fmt, kind="pairs")
    export_file(tmp_path / "two", fmt, kind="pairs")
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_the_json_lines_escape_as_datasets_writes_them(tmp_path):
    export_file(tmp_path / "out.jsonl", kind="pairs")
    lines = (tmp_path / "out.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 6
    assert (
        lines[-2]
        == (
            '{"prompt":"Is \\"B\\"\\/ü?\\nb1\\t","chosen":"no","rejected":"yes","margin":1.0,"preference":1,'
            '"forest":"memory-forest","tree_id":2,"parent_id":12,"chosen_id":13,"rejected_id":14,"chosen_value":1.0,'
            '"rejected_value":0.0,"chosen_count":1,"rejected_count":1,"chosen_ci95_low":0.2065493144,'
            '"chosen_ci95_high":1.0,"rejected_ci95_low":0.0,"rejected_ci95_high":0.7934506856}'
        ).encode()
    )
