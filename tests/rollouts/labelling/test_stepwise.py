"""The stepwise writer: every format loads back with datasets, nothing is written when there is nothing to write."""

from __future__ import annotations

import pytest

from rollouts.labelling.stepwise import ExportError, stepwise_write


def record(**fields):
    values = {
        "prompt": "Is 7 prime?",
        "completions": ["7 has no divisor but 1 and 7. ", "So it is prime."],
        "labels": [True, True],
        "rollout_id": 3,
        "prm_version": "human-v1",
        "sources": ["human-v1", "mc"],
        "labellers": ["ann"],
        "num_labels": 1,
        "num_steps": 2,
        "first_error": -1,
        "model": "tiny",
        "prediction": 1,
        "ground_truth": 1,
        "correct": True,
        "forest": None,
        "tree_id": None,
        "leaf_id": None,
    }
    values.update(fields)
    return values


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf_disk"])
def test_every_format_loads_back_with_the_stepwise_columns(tmp_path, fmt):
    import datasets  # deferred: datasets is heavy

    target = tmp_path / f"out.{fmt}"
    rows = [record(), record(rollout_id=4, labels=[True, False], first_error=1, prediction=None, correct=False)]
    assert stepwise_write(rows, target, fmt) == 2
    if fmt == "hf_disk":
        loaded = datasets.load_from_disk(str(target))
    else:
        loaded = datasets.load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(target), split="train")
    assert loaded[1]["labels"] == [True, False]
    assert loaded[1]["prediction"] is None
    assert loaded[0]["completions"] == ["7 has no divisor but 1 and 7. ", "So it is prime."]
    assert {"prompt", "completions", "labels", "rollout_id", "sources"} <= set(loaded.column_names)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary file left behind


def test_an_hf_disk_dataset_is_replaced_whole(tmp_path):
    import datasets  # deferred: datasets is heavy

    target = tmp_path / "set"
    stepwise_write([record(), record()], target, "hf_disk")
    stepwise_write([record(rollout_id=9)], target, "hf_disk")
    assert datasets.load_from_disk(str(target))["rollout_id"] == [9]


def test_nothing_is_written_when_there_is_no_record_or_the_target_is_wrong(tmp_path):
    with pytest.raises(ExportError, match="nothing to export"):
        stepwise_write([], tmp_path / "empty.jsonl", "jsonl")
    with pytest.raises(ExportError, match="does not exist"):
        stepwise_write([record()], tmp_path / "missing" / "out.jsonl", "jsonl")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ExportError, match="not a dataset"):
        stepwise_write([record()], folder, "hf_disk")
    with pytest.raises(ExportError, match="format must be"):
        stepwise_write([record()], tmp_path / "x.csv", "csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
