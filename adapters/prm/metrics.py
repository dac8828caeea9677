"""How well step rewards fit step labels. Pure: no torch, no Django.

- ``loss``: the training objective on held-out steps — cross-entropy between the target and the predicted probability
  that the step is good, weighted as in training (neutral steps with their ``neutral_weight``, unlabelled ones not at
  all), averaged over the weight;
- ``mae``: mean absolute difference between prediction and target over the same steps (how close soft targets are
  fitted);
- ``step_accuracy``: share of steps whose target is not 0.5 (not neutral) where ``prediction >= 0.5`` agrees with
  ``target > 0.5``;
- ProcessBench (``prmsite.core.processbench``): the first step whose target is below 0.5 against the first step
  scored below 0.5, per rollout; F1 of the accuracies on erroneous and on correct rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from adapters.prm.examples import StepExample
from prmsite.core.domain import LABEL_NEUTRAL, LABEL_VALUES, PRM_THRESHOLD
from prmsite.core.processbench import first_below, first_error, processbench_scores

PROBABILITY_FLOOR = 1e-7  # keeps log(0) out of the loss of a saturated prediction


def step_cross_entropy(target: float, probability: float) -> float:
    p = min(max(probability, PROBABILITY_FLOOR), 1.0 - PROBABILITY_FLOOR)
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


def prm_evaluate(examples: Sequence[StepExample], probabilities: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Metrics of ``probabilities`` (one list per example, one value per step) against the examples' targets."""
    if len(examples) != len(probabilities):
        raise ValueError(f"{len(examples)} examples but {len(probabilities)} score lists")
    weighted_loss = weighted_error = total_weight = 0.0
    right = counted = 0
    reference: list[int] = []
    predicted: list[int] = []
    for example, scores in zip(examples, probabilities, strict=True):
        if len(scores) != len(example.steps):
            raise ValueError(f"{example.source}: {len(example.steps)} steps but {len(scores)} scores")
        for target, weight, score in zip(example.targets, example.weights, scores, strict=True):
            if weight > 0:
                weighted_loss += weight * step_cross_entropy(target, score)
                weighted_error += weight * abs(score - target)
                total_weight += weight
            if weight > 0 and target != 0.5:
                counted += 1
                right += (score >= PRM_THRESHOLD) == (target > LABEL_VALUES[LABEL_NEUTRAL])
        reference.append(first_error(example.step_ok()))
        predicted.append(first_below(scores, PRM_THRESHOLD))
    processbench = processbench_scores(reference, predicted) if examples else None
    return {
        "examples": len(examples),
        "steps": sum(len(e.steps) for e in examples),
        "loss": weighted_loss / total_weight if total_weight else None,
        "mae": weighted_error / total_weight if total_weight else None,
        "step_accuracy": right / counted if counted else None,
        "processbench": processbench.as_dict() if processbench else None,
    }
