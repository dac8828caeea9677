"""The generic writer of column batches (no database): formats, refusals, atomic replacement, deterministic bytes."""

from __future__ import annotations

import pytest
from datasets import Dataset, Features, List, Value, load_dataset, load_from_disk

from prmsite.core.dataset_files import (
    FOLDER_MISSING,
    FORMAT_UNKNOWN,
    FORMATS,
    NOT_A_SAVED_DATASET,
    NOTHING_TO_EXPORT,
    ExportError,
    dataset_write,
    write_atomic,
)

FEATURES = Features({"text": Value("string"), "score": Value("float64"), "steps": List(Value("int64"))})
BATCH = {"text": ['a "quote"/\n', "ü", None], "score": [0.1, float("nan"), 1 / 3], "steps": [[1, 2], [], None]}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_same_batches_give_the_same_bytes(tmp_path, fmt):
    assert dataset_write([BATCH], FEATURES, tmp_path / "one", fmt) == 3
    dataset_write([BATCH], FEATURES, tmp_path / "two", fmt)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_json_lines_are_the_bytes_datasets_writes(tmp_path):
    dataset_write([BATCH], FEATURES, tmp_path / "ours.jsonl", "jsonl")
    Dataset.from_dict(BATCH, features=FEATURES).to_json(str(tmp_path / "theirs.jsonl"), lines=True, force_ascii=False)
    assert (tmp_path / "ours.jsonl").read_bytes() == (tmp_path / "theirs.jsonl").read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_back(tmp_path, fmt):
    output = tmp_path / "out"
    dataset_write([BATCH, BATCH], FEATURES, output, fmt)
    if fmt == "hf_disk":
        dataset = load_from_disk(str(output))
    else:
        dataset = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(output), split="train")
    assert dataset["text"] == BATCH["text"] * 2


def test_nothing_to_write_writes_nothing(tmp_path):
    with pytest.raises(ExportError) as refused:
        dataset_write([], FEATURES, tmp_path / "out.jsonl", "jsonl")
    assert str(refused.value) == NOTHING_TO_EXPORT
    assert list(tmp_path.iterdir()) == []


def test_refusals_name_what_is_wrong(tmp_path):
    with pytest.raises(ExportError) as refused:
        dataset_write([BATCH], FEATURES, tmp_path / "out.csv", "csv")
    assert str(refused.value) == FORMAT_UNKNOWN.format(formats=", ".join(FORMATS), fmt="csv")
    with pytest.raises(ExportError) as refused:
        dataset_write([BATCH], FEATURES, tmp_path / "missing" / "out.jsonl", "jsonl")
    assert str(refused.value) == FOLDER_MISSING.format(folder=tmp_path / "missing")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(ExportError) as refused:
        dataset_write([BATCH], FEATURES, precious, "hf_disk")
    assert str(refused.value) == NOT_A_SAVED_DATASET.format(target=precious)
    assert (precious / "keep.txt").read_text() == "mine"


def test_a_saved_dataset_is_replaced_whole(tmp_path):
    output = tmp_path / "saved"
    dataset_write([BATCH, BATCH], FEATURES, output, "hf_disk")
    dataset_write([BATCH], FEATURES, output, "hf_disk")
    assert len(load_from_disk(str(output))) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no work folder left behind


def test_write_atomic_writes_whole_files_and_needs_the_folder(tmp_path):
    write_atomic(tmp_path / "report.json", b"{}")
    write_atomic(tmp_path / "report.json", b'{"a": 1}')
    assert (tmp_path / "report.json").read_bytes() == b'{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
    with pytest.raises(ExportError) as refused:
        write_atomic(tmp_path / "nowhere" / "r.json", b"{}")
    assert str(refused.value) == FOLDER_MISSING.format(folder=tmp_path / "nowhere")
