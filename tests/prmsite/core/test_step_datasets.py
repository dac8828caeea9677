"""The step-labelled dataset parsers (prmsite.core.step_datasets): each format from small files, JSON lines, JSON
arrays and Parquet, and bad records named by their line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prmsite.core import step_datasets as sd
from prmsite.core.errors import ApplicationError


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


def read(path: Path, fmt: str, **options) -> list[sd.StepRecord]:
    return list(sd.records_read(path, fmt, **options))


PB = {
    "id": "gsm8k-0",
    "generator": "Qwen2-7B-Instruct",
    "problem": "What is 2+3?",
    "steps": ["2+3 is 6.", "So the answer is \\boxed{6}."],
    "final_answer_correct": False,
    "label": 0,
}


def test_processbench_labels_before_at_and_after_the_first_error(tmp_path):
    items = [PB, {**PB, "id": "gsm8k-1", "steps": ["a", "b", "c", "\\boxed{5}"], "label": 1}]
    items.append({**PB, "id": "gsm8k-2", "steps": ["2+3=5", "\\boxed{5}"], "label": -1, "final_answer_correct": True})
    records = read(write_jsonl(tmp_path / "gsm8k.jsonl", items), "processbench", default_subset="gsm8k")
    assert [r.paths[0].labels for r in records] == [[0, 2], [1, 0, 2, 2], [1, 1]]
    assert [r.paths[0].correct for r in records] == [False, False, True]
    assert [r.paths[0].answer for r in records] == ["6", "5", "5"]
    assert records[0].paths[0].model == "Qwen2-7B-Instruct"
    assert records[0].subset == "gsm8k" and records[0].problem == "What is 2+3?"
    assert "steps" not in records[0].item and records[0].item["id"] == "gsm8k-0"
    assert [r.number for r in records] == [1, 2, 3]


def test_processbench_subset_column_wins_over_the_file_stem(tmp_path):
    records = read(write_jsonl(tmp_path / "x.jsonl", [{**PB, "subset": "math"}]), "processbench", default_subset="x")
    assert records[0].subset == "math"


def test_processbench_json_array_as_published(tmp_path):
    path = tmp_path / "math.json"
    path.write_text(json.dumps([PB, PB], indent=4))
    records = read(path, "processbench")
    assert len(records) == 2 and records[1].number == 2
    path.write_text(json.dumps([PB, 3]))
    with pytest.raises(ApplicationError, match=r"^item 2: not a JSON object"):
        read(path, "processbench")


SHEPHERD_INPUT = (
    "Janet has 3 eggs and buys 2. How many? Step 1: She has 3 eggs. ки\nStep 2: 3 + 2 = 5. ки\n"
    "Step 3: The answer is: 5 ки"
)


def test_math_shepherd_splits_problem_steps_and_marks(tmp_path):
    label = SHEPHERD_INPUT.replace("ки", "+", 2).replace("ки", "-")
    records = read(
        write_jsonl(tmp_path / "ms.jsonl", [{"input": SHEPHERD_INPUT, "label": label, "task": "GSM8K"}]),
        "math_shepherd",
    )
    (record,) = records
    assert record.problem == "Janet has 3 eggs and buys 2. How many?"
    path = record.paths[0]
    assert path.steps == ["Step 1: She has 3 eggs.", "Step 2: 3 + 2 = 5.", "Step 3: The answer is: 5"]
    assert path.labels == [1, 1, 0]
    assert path.correct is False and path.answer == "5"
    assert record.subset == "GSM8K"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: a x"}, "differ at step 1"),
        ({"input": "Q? Step 1: a ки", "label": "Q? Step 1: b +"}, "differ at step 1"),
        ({"input": "Q? a ки", "label": "Q? a +"}, "cannot tell the problem"),
        ({"input": "Q? Step 1: a", "label": "Q? Step 1: a"}, "holds no step tag"),
        ({"input": "Q? Step 1: a ки tail", "label": "Q? Step 1: a + tail"}, "text after its last step tag"),
        ({"input": "Q? Step 1: a ки"}, "missing key 'label'"),
    ],
)
def test_math_shepherd_refusals(tmp_path, item, message):
    with pytest.raises(ApplicationError, match=rf"^line 1: .*{message}"):
        read(write_jsonl(tmp_path / "ms.jsonl", [item]), "math_shepherd")


def test_math_shepherd_problem_column_marks_the_problem(tmp_path):
    item = {"input": "Q? first step ки\nsecond ки", "label": "Q? first step +\nsecond -", "problem": "Q?"}
    (record,) = read(write_jsonl(tmp_path / "ms.jsonl", [item]), "math_shepherd")
    assert record.problem == "Q?" and record.paths[0].steps == ["first step", "second"]


def test_stepwise_booleans_and_soft_labels(tmp_path):
    items = [
        {
            "prompt": "P",
            "completions": ["a", "b"],
            "labels": [True, False],
            "prediction": 3,
            "ground_truth": 4,
            "correct": False,
            "model": "m",
        },
        {"prompt": "P", "completions": ["a", "b", "c"], "labels": [1.0, 0.5, 0.25]},
    ]
    first, second = read(write_jsonl(tmp_path / "sw.jsonl", items), "stepwise")
    assert first.paths[0].labels == [1, 0] and first.paths[0].answer == "3" and first.reference == "4"
    assert first.paths[0].correct is False and first.paths[0].model == "m"
    assert second.paths[0].labels == [1, 2, 0]
    assert second.paths[0].attributes["soft_labels"] == [1.0, 0.5, 0.25]
    assert second.paths[0].correct is None and second.paths[0].model == "stepwise"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"completions": ["a"], "labels": [True]}, "missing key 'prompt'"),
        ({"prompt": 3, "completions": ["a"], "labels": [True]}, "'prompt' must be a string, not int"),
        ({"prompt": "P", "completions": "a", "labels": [True]}, "'completions' must be a list of strings"),
        ({"prompt": "P", "completions": [], "labels": []}, "holds no step"),
        ({"prompt": "P", "completions": ["a"], "labels": [True, False]}, "2 values but 'completions' has 1"),
        ({"prompt": "P", "completions": ["a"], "labels": [1.5]}, "booleans or numbers in"),
        ({"prompt": "P", "completions": ["a"], "labels": [True], "correct": "yes"}, "'correct' must be a boolean"),
    ],
)
def test_stepwise_refusals(tmp_path, item, message):
    with pytest.raises(ApplicationError, match=rf"^line 2: .*{message}"):
        read(
            write_jsonl(tmp_path / "sw.jsonl", [{"prompt": "ok", "completions": ["a"], "labels": [True]}, item]),
            "stepwise",
        )


def prm800k_item(steps, finish="found_error", problem="How many seconds are in 7.8 minutes?"):
    return {
        "labeler": "l1",
        "timestamp": "2023-01-22T04:34:27",
        "generation": 9,
        "question": {"problem": problem, "ground_truth_answer": "468", "pre_generated_steps": ["x"]},
        "label": {"steps": steps, "total_time": 1000, "finish_reason": finish},
    }


def step(*completions, chosen=None, human=None):
    return {
        "completions": [{"text": t, "rating": r, "flagged": None} for t, r in completions],
        "human_completion": human,
        "chosen_completion": chosen,
    }


def test_prm800k_chosen_path_alternatives_and_the_stop_step(tmp_path):
    steps = [
        step(("7.8 min is 7 min and 0.8 min.", 0), chosen=0),
        step(("7 min is 420 s.", 1), ("7 min is 400 s.", -1), chosen=0),
        step(("0.8 min is 50 s.", -1), ("0.8 min is 48 s.", 1)),
    ]
    (record,) = read(write_jsonl(tmp_path / "phase2.jsonl", [prm800k_item(steps)]), "prm800k")
    assert record.reference == "468"
    got = [(p.steps[-1], p.labels, p.attributes["alternative"]) for p in record.paths]
    assert got == [
        ("7 min is 400 s.", [2, 0], True),
        ("0.8 min is 50 s.", [2, 1, 0], True),
        ("0.8 min is 48 s.", [2, 1, 1], True),
    ]
    assert all(p.steps[0] == "7.8 min is 7 min and 0.8 min." for p in record.paths)
    assert "steps" not in record.item["label"] and "pre_generated_steps" not in record.item["question"]
    assert record.item["label"]["finish_reason"] == "found_error"
    (chosen_only,) = read(tmp_path / "phase2.jsonl", "prm800k", alternatives=False)
    assert [p.steps[-1] for p in chosen_only.paths] == ["0.8 min is 50 s.", "0.8 min is 48 s."]


def test_prm800k_finished_solution_is_correct_and_human_steps_preferred(tmp_path):
    steps = [
        step(("bad", -1), human={"text": "7.8 * 60 = 468", "rating": None}),
        step(("So 468.\n\n# Answer\n\n468", 1), chosen=0),
    ]
    wrong = [step(("7.8 * 60 = 460\n\n# Answer\n\n460", -1))]
    records = read(
        write_jsonl(tmp_path / "p1.jsonl", [prm800k_item(steps, "solution"), prm800k_item(wrong)]), "prm800k"
    )
    main = records[0].paths[-1]
    assert main.steps == ["7.8 * 60 = 468", "So 468.\n\n# Answer\n\n468"]
    assert main.labels == [1, 1] and main.answer == "468" and main.correct is True
    assert records[0].paths[0].steps == ["bad"] and records[0].paths[0].correct is None
    assert records[1].paths[0].answer == "460" and records[1].paths[0].correct is False


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"label": {"steps": []}}, "missing key 'question'"),
        (prm800k_item([step(("a", 5), chosen=0)]), "rating 5 is not"),
        (prm800k_item([step(("a", 1), chosen=3)]), "chosen_completion 3"),
        (prm800k_item([step(("a", 1)), step(("b", 1), chosen=0)]), "step 0 has no chosen completion"),
        (prm800k_item([{"completions": [{"rating": 1}], "chosen_completion": 0}]), "missing key 'text'"),
    ],
)
def test_prm800k_refusals(tmp_path, item, message):
    with pytest.raises(ApplicationError, match=rf"^line 1: .*{message}"):
        read(write_jsonl(tmp_path / "p.jsonl", [item]), "prm800k")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"x": NaN}', "NaN is not a JSON number"),
        (b'{"x": "\xff"}', "not UTF-8"),
    ],
)
def test_bad_lines_name_their_number(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(PB).encode() + b"\n\n" + line + b"\n")
    with pytest.raises(ApplicationError, match=rf"^line 3: {message}"):
        read(path, "processbench")


def test_a_line_over_the_limit_is_refused_before_it_is_read_whole(tmp_path):
    path = tmp_path / "big.jsonl"
    big = {**PB, "problem": "x" * (sd.MAX_RECORD_BYTES + 10)}
    path.write_text(json.dumps(PB) + "\n" + json.dumps(big) + "\n")
    with pytest.raises(ApplicationError, match=rf"^line 2: longer than {sd.MAX_RECORD_BYTES} bytes"):
        read(path, "processbench")


def test_parquet_rows(tmp_path):
    rows = [PB, {**PB, "id": "gsm8k-1", "label": -1, "final_answer_correct": True}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "olympiadbench.parquet")
    records = read(tmp_path / "olympiadbench.parquet", "processbench", default_subset="olympiadbench")
    assert [r.paths[0].labels for r in records] == [[0, 2], [1, 1]]
    assert records[1].number == 2 and records[1].subset == "olympiadbench"
    pq.write_table(pa.Table.from_pylist([PB, {**PB, "label": 7}]), tmp_path / "bad.parquet")
    with pytest.raises(ApplicationError, match=r"^row 2: 'label' 7 is not -1"):
        read(tmp_path / "bad.parquet", "processbench")


def test_parquet_row_over_the_limit_and_a_file_that_is_not_parquet(tmp_path):
    pq.write_table(pa.Table.from_pylist([PB, {**PB, "problem": "x" * 2000}]), tmp_path / "big.parquet")
    with pytest.raises(ApplicationError, match=r"^row 2: longer than 1000 bytes"):
        read(tmp_path / "big.parquet", "processbench", max_record_bytes=1000)
    (tmp_path / "fake.parquet").write_text("not parquet")
    with pytest.raises(ApplicationError, match="cannot be read as Parquet"):
        read(tmp_path / "fake.parquet", "processbench")


def test_unknown_format():
    with pytest.raises(ApplicationError, match="unknown format 'gsm'"):
        read(Path("x.jsonl"), "gsm")
