"""``forests.metrics.evaluation``: ProcessBench's measure rollout by rollout (pure: no database)."""

from __future__ import annotations

import pytest

from forests.metrics.evaluation import PrmEvaluation, mean_outputs


def evaluation(threshold: float = 0.5) -> PrmEvaluation:
    return PrmEvaluation(prm_version="prm-v1", reference="labelled", threshold=threshold)


def test_mean_outputs_go_as_far_as_the_shortest_label():
    assert mean_outputs([[1.0, 0.0, 1.0], [0.0, 0.0]]) == [0.5, 0.0]
    assert mean_outputs([]) == []


def test_each_rollout_adds_both_first_errors_and_its_step_agreement():
    measured = evaluation()
    measured.add([True, True, False], [0.9, 0.8, 0.1])  # both say step 2
    measured.add([True, True], [0.9, 0.2])  # reference -1, PRM 1
    assert measured.reference_first == [2, -1] and measured.predicted_first == [2, 1]
    assert (measured.agree, measured.steps) == (4, 5) and measured.step_agreement == pytest.approx(0.8)
    result = measured.as_dict()
    assert (result["num_rollouts"], result["num_erroneous"], result["num_correct"]) == (2, 1, 1)
    assert (result["error_accuracy"], result["correct_accuracy"], result["f1"]) == (1.0, 0.0, 0.0)


def test_only_the_steps_both_have_are_compared_and_none_is_a_skip():
    measured = evaluation(threshold=0.65)
    measured.add([True, False, False], [0.7])  # compared on one step: both say no error
    measured.add([], [0.9])
    assert measured.reference_first == [-1] and measured.predicted_first == [-1]
    assert measured.skipped == {"no step to compare": 1} and measured.steps == 1


def test_nothing_measured_has_no_agreement():
    assert evaluation().step_agreement is None
    assert evaluation().as_dict()["num_rollouts"] == 0
