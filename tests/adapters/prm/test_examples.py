"""Training examples: hard, soft and neutral labels; stepwise exports read with datasets; labels from the API; the
held-out split."""

from __future__ import annotations

import pytest

from adapters.prm.examples import (
    SKIP_BAD_LABEL,
    SKIP_LENGTH_MISMATCH,
    SKIP_NO_STEPS,
    SKIP_NO_TRAINED_STEP,
    SKIP_NOT_TEXT,
    SKIP_ROLLOUT_MISSING,
    StepExample,
    examples_from_api,
    examples_from_labels,
    examples_from_stepwise,
    split_by_prompt,
    step_target,
    stepwise_dataset_read,
)
from tests.adapters.prm.conftest import write_jsonl


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, (1.0, 1.0)),
        (False, (0.0, 1.0)),
        (1, (1.0, 1.0)),
        (0, (0.0, 1.0)),
        (0.3, (0.3, 1.0)),
        (1.0, (1.0, 1.0)),
        (2, (0.5, 0.0)),  # neutral: skipped by default
        (None, (0.5, 0.0)),  # unlabelled step
    ],
)
def test_step_labels_become_a_target_and_a_weight(value, expected):
    assert step_target(value, neutral_weight=0.0) == expected


def test_a_positive_neutral_weight_trains_neutral_steps_towards_one_half():
    assert step_target(2, neutral_weight=0.25) == (0.5, 0.25)
    assert step_target(2.0, neutral_weight=0.25) == (0.5, 0.25)


@pytest.mark.parametrize("value", [3, -1, 1.5, -0.1, float("nan"), "1", [1]])
def test_anything_else_is_not_a_step_label(value):
    with pytest.raises(ValueError):
        step_target(value, neutral_weight=0.0)


def test_hardening_rounds_soft_targets_at_one_half_and_leaves_one_half():
    example = StepExample(prompt="p", steps=("a", "b", "c"), targets=(0.2, 0.5, 0.7), weights=(1.0, 0.0, 1.0))
    assert example.hardened().targets == (0.0, 0.5, 1.0)
    assert example.hardened().weights == example.weights
    assert example.step_ok() == [False, True, True]


def test_stepwise_rows_become_examples_and_unreadable_rows_are_counted_by_reason():
    rows = [
        {"prompt": "p1", "completions": ["a", "b"], "labels": [True, False], "extra": 1},
        {"prompt": "p2", "completions": ["a"], "labels": [0.75]},
        {"prompt": "p3", "completions": ["a", "b"], "labels": [True]},
        {"prompt": "p4", "completions": [], "labels": []},
        {"prompt": 4, "completions": ["a"], "labels": [True]},
        {"prompt": "p6", "completions": ["a"], "labels": [7]},
        {"prompt": "p7", "completions": ["a"], "labels": [2]},  # only a neutral step: nothing to learn
    ]
    result = examples_from_stepwise(rows)
    assert [(e.prompt, e.targets, e.weights) for e in result.examples] == [
        ("p1", (1.0, 0.0), (1.0, 1.0)),
        ("p2", (0.75,), (1.0,)),
    ]
    assert result.skipped == {
        SKIP_LENGTH_MISMATCH: 1,
        SKIP_NO_STEPS: 1,
        SKIP_NOT_TEXT: 1,
        SKIP_BAD_LABEL: 1,
        SKIP_NO_TRAINED_STEP: 1,
    }
    assert result.summary() == {"examples": 2, "steps": 3, "trained_steps": 3, "skipped": dict(result.skipped)}


def _rollout(rollout_id: int, prompt: str, steps: list[str]) -> dict:
    return {"id": rollout_id, "example": prompt, "reasoning": steps, "prediction": 1, "ground_truth": 1}


def test_api_labels_pair_with_their_rollouts_and_ai_codes_are_read_as_codes():
    rollouts = {1: _rollout(1, "q1", ["a", "b", "c"]), 2: _rollout(2, "q2", ["a"])}
    labels = [
        {"id": 10, "rollout_id": 1, "prm_output": [1, 2, 0], "prm_version": "s", "worker": "judge"},
        {"id": 11, "rollout_id": 2, "prm_output": [1], "prm_version": "s", "worker": "judge"},
        {"id": 12, "rollout_id": 3, "prm_output": [1], "prm_version": "s", "worker": "judge"},
    ]
    result = examples_from_labels(labels, rollouts, neutral_weight=0.5)
    first, second = result.examples
    assert (first.prompt, first.steps, first.targets, first.weights) == ("q1", ("a", "b", "c"), (1.0, 0.5, 0.0),
                                                                          (1.0, 0.5, 1.0))  # fmt: skip
    assert first.source == "label 10"
    assert second.targets == (1.0,)
    assert result.skipped == {SKIP_ROLLOUT_MISSING: 1}


class FakeLabelClient:
    """The three reads ``examples_from_api`` makes, with the calls recorded."""

    def __init__(self, labels: list[dict], rollouts: list[dict]) -> None:
        self.labels = labels
        self.rollouts = rollouts
        self.calls: list[tuple] = []

    def get_process_reward_label_ids(self, prm_version):
        self.calls.append(("ids", prm_version))
        return [label["id"] for label in self.labels if label["prm_version"] == prm_version]

    def get_process_reward_labels(self, keys):
        self.calls.append(("labels", list(keys)))
        return [label for label in self.labels if label["id"] in keys]

    def get_rollouts_by_ids(self, ids):
        self.calls.append(("rollouts", list(ids)))
        return [r for r in self.rollouts if r["id"] in ids]


def test_examples_from_the_api_read_the_schemes_labels_then_the_rollouts_they_label_once_each():
    labels = [
        {"id": 1, "rollout_id": 7, "prm_output": [1, 0], "prm_version": "s1", "worker": "a"},
        {"id": 2, "rollout_id": 7, "prm_output": [1, 1], "prm_version": "s1", "worker": "b"},
        {"id": 3, "rollout_id": 8, "prm_output": [0], "prm_version": "other", "worker": "a"},
    ]
    client = FakeLabelClient(labels, [_rollout(7, "q", ["x", "y"]), _rollout(8, "r", ["z"])])
    result = examples_from_api(client, "s1")
    assert [e.targets for e in result.examples] == [(1.0, 0.0), (1.0, 1.0)]
    assert client.calls == [("ids", "s1"), ("labels", [1, 2]), ("rollouts", [7])]


def test_a_scheme_without_labels_reads_nothing_more():
    client = FakeLabelClient([], [])
    assert examples_from_api(client, "s1").examples == []
    assert client.calls == [("ids", "s1")]


def _examples(prompts: int, per_prompt: int) -> list[StepExample]:
    return [
        StepExample(prompt=f"p{p}", steps=("s",), targets=(1.0,), weights=(1.0,), source=f"{p}-{r}")
        for p in range(prompts)
        for r in range(per_prompt)
    ]


def test_the_held_out_split_takes_whole_prompts_and_depends_only_on_the_seed():
    examples = _examples(50, 3)
    train, held = split_by_prompt(examples, eval_fraction=0.2, seed=3)
    assert {e.prompt for e in train}.isdisjoint({e.prompt for e in held})
    assert len({e.prompt for e in held}) == 10
    assert len(train) + len(held) == len(examples)
    assert split_by_prompt(list(reversed(examples)), eval_fraction=0.2, seed=3)[1] == list(reversed(held))
    assert {e.prompt for e in split_by_prompt(examples, eval_fraction=0.2, seed=4)[1]} != {e.prompt for e in held}


def test_the_held_out_split_leaves_at_least_one_prompt_on_each_side():
    assert len(split_by_prompt(_examples(2, 1), eval_fraction=0.01, seed=0)[1]) == 1
    assert len(split_by_prompt(_examples(2, 1), eval_fraction=0.9, seed=0)[0]) == 1
    assert split_by_prompt(_examples(1, 4), eval_fraction=0.5, seed=0)[1] == []
    assert split_by_prompt(_examples(5, 1), eval_fraction=0.0, seed=0)[1] == []


ROWS = [
    {"prompt": "p1", "completions": ["a", "b"], "labels": [True, False], "source": "x"},
    {"prompt": "p2", "completions": ["c"], "labels": [True], "source": "y"},
]


def test_a_stepwise_export_is_read_from_jsonl_parquet_and_save_to_disk_folders(tmp_path):
    import datasets  # deferred: datasets is heavy

    jsonl = write_jsonl(tmp_path / "train.jsonl", ROWS)
    parquet = tmp_path / "train.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(parquet))
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    splits = tmp_path / "splits"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]), "test": datasets.Dataset.from_list(ROWS[1:])}
                         ).save_to_disk(str(splits))  # fmt: skip
    for path in (jsonl, parquet, folder):
        read = stepwise_dataset_read(path)
        assert read.column_names == ["prompt", "completions", "labels"]
        assert [row["prompt"] for row in read] == ["p1", "p2"]
    assert [row["prompt"] for row in stepwise_dataset_read(splits)] == ["p1"]
    assert [row["prompt"] for row in stepwise_dataset_read(splits, split="test")] == ["p2"]


def test_a_file_without_the_stepwise_columns_is_refused_naming_what_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "steps": ["a"], "labels": [True]}])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['completions'\]"):
        stepwise_dataset_read(path)
    with pytest.raises(ValueError, match="no such file"):
        stepwise_dataset_read(tmp_path / "nowhere.jsonl")
    (tmp_path / "data.csv").write_text("prompt\np\n")
    with pytest.raises(ValueError, match=r"not '\.csv'"):
        stepwise_dataset_read(tmp_path / "data.csv")
