"""The domain rules every part of prmsite shares, written once. Pure: no Django.

- A rollout is *correct* when its prediction equals its tree's ground truth; a missing (unparsable) prediction is
  wrong. ``rollout_is_correct`` is that rule for Python values; ``prmsite.queries.correct_rollout_q`` is the same rule
  as a database expression.
- Step label codes of spec/active-learning-webserver.md: 0 not preferred, 1 preferred, 2 neutral. As a value (the
  probability that the step is good) they read 0.0, 1.0 and 0.5.
"""

from __future__ import annotations

LABEL_NOT_PREFERRED = 0
LABEL_PREFERRED = 1
LABEL_NEUTRAL = 2
LABEL_CODES: dict[int, str] = {
    LABEL_NOT_PREFERRED: "not preferred",
    LABEL_PREFERRED: "preferred",
    LABEL_NEUTRAL: "neutral",
}
LABEL_VALUES: dict[int, float] = {LABEL_NOT_PREFERRED: 0.0, LABEL_PREFERRED: 1.0, LABEL_NEUTRAL: 0.5}
# The codes explained, for messages and help texts.
LABEL_CODES_TEXT = "0 not preferred, 1 preferred, 2 neutral"

# A PRM's step score at or above this judges the step good (its rollout correct when it is the final step's score);
# below it, the step is an error. The default of every threshold flag (evaluate_prm, al_round) and of the measures.
PRM_THRESHOLD = 0.5

# The columns of a stepwise dataset (TRL's stepwise-supervision format), in order: exported by the ``stepwise`` kind,
# read back by ``train_prm``.
STEPWISE_COLUMNS = ("prompt", "completions", "labels")
# Per step, aligned with the steps, in every path-based export (``stepwise``, ``math_shepherd``, ``openrlhf``,
# ``processbench``): the completions (rollouts, or label outputs) behind the step's value and its 95% Wilson interval;
# what ``train_prm --weight_by_confidence`` reads. The same figures as ``tree``'s ``count``, ``ci95_low`` and
# ``ci95_high`` and ``pairs``' ``chosen_count``, ``chosen_ci95_low`` and ``chosen_ci95_high``.
STEP_CONFIDENCE_COLUMNS = ("counts", "ci95_lows", "ci95_highs")


def not_a_label_code(code: object) -> str:
    """The one message for a value that is not a step label code."""
    return f"{code!r} is not a step label code ({LABEL_CODES_TEXT})"


def rollout_is_correct(prediction: int | None, ground_truth: int | None) -> bool:
    """True when ``prediction`` states the ground truth; a missing prediction (or ground truth) is never correct."""
    return prediction is not None and ground_truth is not None and prediction == ground_truth


def label_code_value(code: float | int) -> float:
    """The value (0.0 / 1.0 / 0.5) of a step label code; ``ValueError`` for anything but 0, 1 or 2."""
    if isinstance(code, bool) or code not in LABEL_VALUES:
        raise ValueError(not_a_label_code(code))
    return LABEL_VALUES[int(code)]
