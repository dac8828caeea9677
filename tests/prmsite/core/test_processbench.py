"""ProcessBench scoring on hand-computed cases."""

from __future__ import annotations

import pytest

from prmsite.core.domain import label_code_value, rollout_is_correct
from prmsite.core.processbench import NO_ERROR, first_below, first_error, processbench_scores


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
