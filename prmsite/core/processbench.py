"""ProcessBench's measure of a process reward model (Zheng et al., 2024). Pure: no Django.

Each rollout has a reference index of its first wrong step (-1 when every step is right) and a predicted one (the
first step the PRM scores below a threshold, -1 when none). A prediction is right when the two indices are equal.
The score is the accuracy on erroneous rollouts (reference >= 0), the accuracy on correct ones (reference == -1),
and their harmonic mean, F1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prmsite.core.domain import PRM_THRESHOLD

NO_ERROR = -1


def first_error(step_ok: Iterable[bool]) -> int:
    """Index of the first step that is not right; ``NO_ERROR`` (-1) when every step is right."""
    for index, ok in enumerate(step_ok):
        if not ok:
            return index
    return NO_ERROR


def first_below(scores: Iterable[float], threshold: float = PRM_THRESHOLD) -> int:
    """Index of the first score below ``threshold``; ``NO_ERROR`` (-1) when none is."""
    return first_error(score >= threshold for score in scores)


@dataclass(frozen=True)
class ProcessBenchResult:
    error_accuracy: float | None  # share of erroneous rollouts whose first error the PRM found exactly
    correct_accuracy: float | None  # share of correct rollouts the PRM passes whole
    f1: float | None  # harmonic mean of the two (None when either is undefined)
    num_erroneous: int
    num_correct: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def processbench_scores(reference: Sequence[int], predicted: Sequence[int]) -> ProcessBenchResult:
    """Score predicted first-error indices against the reference ones (same order, same length)."""
    if len(reference) != len(predicted):
        raise ValueError(f"{len(reference)} reference indices but {len(predicted)} predicted ones")
    erroneous = [(r, p) for r, p in zip(reference, predicted, strict=True) if r != NO_ERROR]
    correct = [(r, p) for r, p in zip(reference, predicted, strict=True) if r == NO_ERROR]
    error_accuracy = sum(r == p for r, p in erroneous) / len(erroneous) if erroneous else None
    correct_accuracy = sum(p == NO_ERROR for _, p in correct) / len(correct) if correct else None
    f1 = None
    if error_accuracy is not None and correct_accuracy is not None:
        total = error_accuracy + correct_accuracy
        f1 = 2 * error_accuracy * correct_accuracy / total if total else 0.0
    return ProcessBenchResult(
        error_accuracy=error_accuracy,
        correct_accuracy=correct_accuracy,
        f1=f1,
        num_erroneous=len(erroneous),
        num_correct=len(correct),
    )
