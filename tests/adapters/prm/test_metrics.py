"""Held-out metrics of a PRM: weighted loss, MAE, step accuracy and ProcessBench, computed by hand here."""

from __future__ import annotations

import math

import pytest

from adapters.prm.examples import StepExample
from adapters.prm.metrics import prm_evaluate, step_cross_entropy


def _example(targets, weights=None) -> StepExample:
    return StepExample(
        prompt="p",
        steps=tuple("s" for _ in targets),
        targets=tuple(targets),
        weights=tuple(weights or [1.0] * len(targets)),
    )


def test_metrics_of_a_perfect_and_a_wrong_prm():
    examples = [_example([1.0, 0.0]), _example([1.0, 1.0])]
    perfect = prm_evaluate(examples, [[0.9, 0.1], [0.8, 0.7]])
    assert perfect["step_accuracy"] == 1.0
    assert perfect["processbench"]["f1"] == 1.0
    assert perfect["loss"] == pytest.approx((2 * -math.log(0.9) - math.log(0.8) - math.log(0.7)) / 4)
    assert perfect["mae"] == pytest.approx((0.1 + 0.1 + 0.2 + 0.3) / 4)
    wrong = prm_evaluate(examples, [[0.2, 0.9], [0.4, 0.9]])
    assert wrong["step_accuracy"] == 0.25
    assert wrong["processbench"] == {
        "error_accuracy": 0.0, "correct_accuracy": 0.0, "f1": 0.0, "num_erroneous": 1, "num_correct": 1,
    }  # fmt: skip


def test_weights_scale_the_loss_and_neutral_steps_count_for_neither_accuracy_nor_processbench_errors():
    examples = [_example([1.0, 0.5, 0.0], [1.0, 0.5, 1.0])]
    metrics = prm_evaluate(examples, [[0.8, 0.3, 0.1]])
    expected = (step_cross_entropy(1.0, 0.8) + 0.5 * step_cross_entropy(0.5, 0.3) + step_cross_entropy(0.0, 0.1)) / 2.5
    assert metrics["loss"] == pytest.approx(expected)
    assert metrics["step_accuracy"] == 1.0  # the neutral step is not judged
    # The reference's first error is step 2 (the neutral one is no error); the PRM first dips below 0.5 at step 1.
    assert metrics["processbench"]["error_accuracy"] == 0.0


def test_soft_targets_are_fitted_best_by_predicting_them():
    examples = [_example([0.3, 0.7])]
    exact = prm_evaluate(examples, [[0.3, 0.7]])
    rounded = prm_evaluate(examples, [[0.01, 0.99]])
    assert exact["loss"] < rounded["loss"]
    assert exact["mae"] == pytest.approx(0.0)


def test_a_saturated_prediction_has_a_finite_loss():
    assert math.isfinite(step_cross_entropy(1.0, 0.0))


def test_scores_must_match_the_examples_step_for_step():
    with pytest.raises(ValueError, match="2 steps but 1 scores"):
        prm_evaluate([_example([1.0, 0.0])], [[0.5]])
    assert prm_evaluate([], [])["loss"] is None
