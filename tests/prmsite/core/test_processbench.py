"""ProcessBench scoring on hand-computed cases."""

from __future__ import annotations

import random

import pytest

from prmsite.core.domain import label_code_value, rollout_is_correct
from prmsite.core.processbench import (
    NO_ERROR,
    TUNE_NO_SAMPLES,
    first_below,
    first_error,
    mean_f1,
    processbench_by_subset,
    processbench_scores,
    subset_name,
    tune_threshold,
)


def test_first_error_is_the_first_wrong_step_or_minus_one():
    assert first_error([True, True, False, False]) == 2
    assert first_error([False]) == 0
    assert first_error([True, True]) == NO_ERROR
    assert first_error([]) == NO_ERROR


def test_first_below_uses_the_threshold_inclusively():
    assert first_below([0.9, 0.5, 0.49, 0.1], threshold=0.5) == 2
    assert first_below([0.9, 0.7], threshold=0.5) == NO_ERROR


def test_scores_match_hand_computed_figures():
    # Erroneous: 3 rollouts, first errors found exactly in 2 (2/3). Correct: 2 rollouts, one passed whole (1/2).
    reference = [1, 0, 2, NO_ERROR, NO_ERROR]
    predicted = [1, 0, 1, NO_ERROR, 3]
    result = processbench_scores(reference, predicted)
    assert result.error_accuracy == pytest.approx(2 / 3)
    assert result.correct_accuracy == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert (result.num_erroneous, result.num_correct) == (3, 2)


def test_f1_is_undefined_without_both_kinds_and_zero_when_both_fail():
    only_correct = processbench_scores([NO_ERROR], [NO_ERROR])
    assert only_correct.error_accuracy is None and only_correct.f1 is None
    assert processbench_scores([0, NO_ERROR], [NO_ERROR, 0]).f1 == 0.0
    with pytest.raises(ValueError):
        processbench_scores([0], [])


def test_the_correctness_rule_and_label_codes():
    assert rollout_is_correct(1, 1)
    assert not rollout_is_correct(0, 1)
    assert not rollout_is_correct(None, 1)
    assert not rollout_is_correct(None, None)
    assert [label_code_value(c) for c in (0, 1, 2)] == [0.0, 1.0, 0.5]
    for bad in (3, -1, True, 0.7):
        with pytest.raises(ValueError):
            label_code_value(bad)


# A hand-computed ProcessBench run: two subsets, each sample its reference first error and its PRM's step scores.
GSM8K = [
    (1, [0.9, 0.3, 0.8]),  # at 0.5: predicted 1, right
    (NO_ERROR, [0.8, 0.7]),  # -1, right
    (NO_ERROR, [0.9, 0.65]),  # -1, right
    (0, [0.6, 0.2]),  # 1, wrong
]
MATH = [
    (2, [0.7, 0.6, 0.1]),  # 2, right
    (0, [0.2, 0.9]),  # 0, right
    (1, [0.9, 0.9, 0.3]),  # 2, wrong
    (NO_ERROR, [0.9, 0.55]),  # -1, right
]


def run_at(threshold: float) -> tuple[list[str | None], list[int], list[int]]:
    samples = [("gsm8k", *s) for s in GSM8K] + [("math", *s) for s in MATH]
    return (
        [subset for subset, _, _ in samples],
        [reference for _, reference, _ in samples],
        [first_below(scores, threshold) for _, _, scores in samples],
    )


def test_each_subset_is_scored_on_its_own_and_the_headline_is_the_mean_of_their_f1():
    subsets, reference, predicted = run_at(0.5)
    (gsm8k_name, gsm8k), (math_name, math_) = processbench_by_subset(subsets, reference, predicted)
    assert (gsm8k_name, math_name) == ("gsm8k", "math")
    # gsm8k: erroneous 1 of 2 found, correct 2 of 2 passed: F1 = 2 * 1/2 * 1 / (1/2 + 1) = 2/3.
    assert (gsm8k.error_accuracy, gsm8k.correct_accuracy, gsm8k.f1) == (0.5, 1.0, pytest.approx(2 / 3))
    # math: erroneous 2 of 3, correct 1 of 1: F1 = 2 * 2/3 * 1 / (2/3 + 1) = 4/5.
    assert (math_.error_accuracy, math_.correct_accuracy, math_.f1) == (pytest.approx(2 / 3), 1.0, pytest.approx(0.8))
    # ProcessBench's average: (2/3 + 4/5) / 2 = 11/15. Pooled instead: erroneous 3 of 5, correct 3 of 3, F1 = 3/4.
    assert mean_f1([gsm8k, math_]) == pytest.approx(11 / 15)
    assert processbench_scores(reference, predicted).f1 == pytest.approx(0.75)


def test_samples_without_a_subset_are_a_group_of_their_own_listed_last():
    groups = processbench_by_subset(["b", None, "a"], [NO_ERROR, 0, 0], [NO_ERROR, 0, 1])
    assert [name for name, _ in groups] == ["a", "b", None]
    assert mean_f1(result for _, result in groups) is None  # "a" has no correct sample: its F1 is undefined
    assert mean_f1([]) is None
    with pytest.raises(ValueError):
        processbench_by_subset(["a"], [0, 1], [0, 1])


def test_the_subset_is_the_items_subset_field_else_its_source():
    assert subset_name("gsm8k", "ignored") == "gsm8k"
    assert subset_name(None, "math") == "math"
    assert subset_name("", "math") == "math"
    assert subset_name(None, None) is None
    assert subset_name(3, None) == "3"


def test_the_tuned_threshold_maximises_the_subsets_f1_over_its_score_values():
    # gsm8k's score values 0.2 0.3 0.6 0.65 0.7 0.8 0.9. Sample by sample, the thresholds where it matches:
    # (1, [0.9, 0.3, 0.8]): 0.3 < t <= 0.9; (-1, [0.8, 0.7]): t <= 0.7; (-1, [0.9, 0.65]): t <= 0.65;
    # (0, [0.6, 0.2]): t > 0.6. At 0.65 all four match (F1 1); at 0.6 and 0.7, 3 of 4 (F1 2/3); else F1 0.
    tuned = tune_threshold([r for r, _ in GSM8K], [s for _, s in GSM8K])
    assert tuned.threshold == 0.65 and tuned.result.f1 == 1.0 and tuned.candidates == 7
    # Applied to math: (2, [0.7, 0.6, 0.1]) now predicted 1, (1, ...) 2, (-1, [0.9, 0.55]) 1: only (0, ...) right.
    subsets, reference, predicted = run_at(tuned.threshold)
    (_, gsm8k), (_, math_) = processbench_by_subset(subsets, reference, predicted)
    assert gsm8k.f1 == 1.0
    assert (math_.error_accuracy, math_.correct_accuracy, math_.f1) == (pytest.approx(1 / 3), 0.0, 0.0)
    assert mean_f1([gsm8k, math_]) == 0.5


def test_a_tie_goes_to_the_lowest_threshold():
    # math's values 0.1 0.2 0.3 0.55 0.6 0.7 0.9; matches: (2, [0.7, 0.6, 0.1]) 0.1 < t <= 0.6; (0, [0.2, 0.9])
    # t > 0.2; (1, [0.9, 0.9, 0.3]) never (0.9 < t <= 0.9); (-1, [0.9, 0.55]) t <= 0.55. At 0.3 and at 0.55:
    # erroneous 2 of 3, correct 1 of 1, F1 4/5, the best; 0.3 is chosen.
    tuned = tune_threshold([r for r, _ in MATH], [s for _, s in MATH])
    assert tuned.threshold == 0.3 and tuned.result.f1 == pytest.approx(0.8)


def test_tuning_agrees_with_trying_every_score_value():
    rng = random.Random(7)
    for _ in range(200):
        samples = []
        for _ in range(rng.randint(2, 12)):
            scores = [rng.choice([0.1, 0.2, 0.3, 0.5, 0.7, 0.9]) for _ in range(rng.randint(1, 5))]
            samples.append((rng.randint(-1, len(scores) - 1), scores))
        samples += [(NO_ERROR, [0.5]), (0, [0.3])]  # both kinds present
        reference, scores = [r for r, _ in samples], [s for _, s in samples]
        tuned = tune_threshold(reference, scores)
        values = sorted({v for s in scores for v in s})
        f1s = [processbench_scores(reference, [first_below(s, t) for s in scores]).f1 for t in values]
        best = max(f1s)
        assert tuned.result.f1 == pytest.approx(best)
        assert tuned.threshold == values[next(i for i, f1 in enumerate(f1s) if f1 == pytest.approx(best))]


def test_tuning_needs_samples_of_both_kinds():
    with pytest.raises(ValueError, match=TUNE_NO_SAMPLES):
        tune_threshold([], [])
    with pytest.raises(ValueError, match="0 erroneous, 2 correct"):
        tune_threshold([NO_ERROR, NO_ERROR], [[0.5], [0.7]])
    with pytest.raises(ValueError):
        tune_threshold([0], [])
