"""Training examples: hard, soft and neutral labels; stepwise exports read with datasets; labels from the API; the
held-out split."""

from __future__ import annotations

import pytest

from adapters.prm.errors import PRMError
from adapters.prm.examples import (
    SKIP_BAD_CONFIDENCE,
    SKIP_BAD_LABEL,
    SKIP_LENGTH_MISMATCH,
    SKIP_NO_STEPS,
    SKIP_NO_TRAINED_STEP,
    SKIP_NOT_TEXT,
    SKIP_ROLLOUT_MISSING,
    StepExample,
    confidence_scale,
    examples_from_api,
    examples_from_labels,
    examples_from_stepwise,
    split_by_prompt,
    step_confidence,
    step_target,
    stepwise_dataset_read,
)
from adapters.prm.training_run import examples_load
from forests.metrics.stats import wilson_interval
from tests.adapters.prm.conftest import write_jsonl
from tests.forests.export_forest import export_file


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


# --- confidence (train_prm --weight_by_confidence) -----------------------------------------------------------------


def test_a_steps_confidence_is_one_minus_the_width_of_its_wilson_interval():
    for correct, completions in [(1, 1), (0, 1), (3, 4), (20, 20), (100, 200)]:
        low, high = wilson_interval(correct, completions)
        assert step_confidence(completions, low, high) == pytest.approx(1 - (high - low))
    assert step_confidence(1, *wilson_interval(1, 1)) == pytest.approx(0.2065, abs=1e-4)  # what the docs say
    assert step_confidence(20, *wilson_interval(20, 20)) == pytest.approx(0.84, abs=0.005)
    assert step_confidence(200, *wilson_interval(100, 200)) == pytest.approx(0.86, abs=0.005)
    assert step_confidence(4, 0.25, 0.25) == 1.0


@pytest.mark.parametrize(
    ("count", "low", "high"), [(None, None, None), (0, None, None), (0, 0.1, 0.9), (5, None, None)]
)
def test_a_step_without_completions_or_interval_has_confidence_one(count, low, high):
    assert step_confidence(count, low, high) == 1.0


@pytest.mark.parametrize(
    ("count", "low", "high"),
    [(-1, 0.1, 0.2), (1.5, 0.1, 0.2), (True, 0.1, 0.2), ("3", 0.1, 0.2), (3, 0.5, 0.4), (3, -0.1, 0.5),
     (3, 0.1, 1.2), (3, float("nan"), 0.5), (float("inf"), 0.1, 0.2)],
)  # fmt: skip
def test_anything_else_is_no_confidence(count, low, high):
    with pytest.raises(ValueError):
        step_confidence(count, low, high)


def test_the_scale_makes_the_confidences_average_one_weighted_by_the_steps_weights():
    weights, confidences = (1.0, 1.0, 0.5, 0.0), (0.2, 0.6, 1.0, 0.9)
    scale = confidence_scale(weights, confidences)
    assert scale == pytest.approx(2.5 / 1.3)
    assert sum(w * c * scale for w, c in zip(weights, confidences, strict=True)) == pytest.approx(sum(weights))
    with pytest.raises(ValueError, match="every trained step has confidence 0"):
        confidence_scale((1.0, 0.0), (0.0, 1.0))


CONFIDENT_ROWS = [
    {"prompt": "p1", "completions": ["a", "b"], "labels": [True, False], "counts": [4, 1],
     "ci95_lows": [0.3, 0.0], "ci95_highs": [0.9, 0.8]},
    {"prompt": "p2", "completions": ["c"], "labels": [True], "counts": None, "ci95_lows": None, "ci95_highs": None},
    {"prompt": "p3", "completions": ["d", "e"], "labels": [True, True], "counts": [2, None],
     "ci95_lows": [0.5, None], "ci95_highs": [0.7, None]},
    {"prompt": "p4", "completions": ["f", "g"], "labels": [True, True], "counts": [2],
     "ci95_lows": [0.5], "ci95_highs": [0.7]},
]  # fmt: skip


def test_stepwise_rows_carry_their_confidences_only_when_asked():
    result = examples_from_stepwise(CONFIDENT_ROWS, weight_by_confidence=True)
    assert [e.confidences() for e in result.examples] == [
        pytest.approx((0.4, 0.2)),
        (1.0,),  # no completions behind any step: a person's labels
        pytest.approx((0.8, 1.0)),  # the second step has none
    ]
    assert result.skipped == {SKIP_BAD_CONFIDENCE: 1}  # p4: one figure for two steps
    plain = examples_from_stepwise(CONFIDENT_ROWS)
    assert len(plain.examples) == 4 and {e.confidences() for e in plain.examples} <= {(1.0,), (1.0, 1.0)}
    assert plain.examples[0].hardened().confidence == ()


def test_the_confidences_of_our_own_stepwise_export_are_read_from_its_intervals(tmp_path):
    path = tmp_path / "stepwise.jsonl"
    export_file(path, "jsonl", kind="stepwise")
    rows = stepwise_dataset_read(path, confidence=True)
    assert rows.column_names == ["prompt", "completions", "labels", "counts", "ci95_lows", "ci95_highs"]
    first = examples_from_stepwise(rows, weight_by_confidence=True).examples[0]
    assert first.steps == ("s1 ", "s2 ", "yes")
    # 3 of 4, 2 of 3 and 2 of 2 rollouts through the steps reach the right answer (tests.forests.export_forest).
    expected = [1 - (high - low) for low, high in (wilson_interval(3, 4), wilson_interval(2, 3), wilson_interval(2, 2))]
    assert first.confidences() == pytest.approx(expected, abs=1e-9)


def test_a_file_without_the_confidence_columns_is_refused_when_they_are_asked_for(tmp_path):
    path = write_jsonl(tmp_path / "plain.jsonl", ROWS)
    assert stepwise_dataset_read(path).column_names == ["prompt", "completions", "labels"]
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['counts', 'ci95_lows', 'ci95_highs'\] that "):
        stepwise_dataset_read(path, confidence=True)


def test_a_labelling_scheme_is_refused_with_weight_by_confidence_before_the_server_is_asked():
    class NoServer:
        def __getattr__(self, name):
            raise AssertionError(f"the server was asked ({name})")

    with pytest.raises(PRMError, match="--weight_by_confidence reads the completions and intervals of a stepwise"):
        examples_load(labelling_scheme_version="judge-v1", client=NoServer(), weight_by_confidence=True)
