"""ProcessBench's measure of a process reward model (Zheng et al., 2024). Pure: no Django.

Each rollout has a reference index of its first wrong step (-1 when every step is right) and a predicted one (the
first step the PRM scores below a threshold, -1 when none). A prediction is right when the two indices are equal.
The score is the accuracy on erroneous rollouts (reference >= 0), the accuracy on correct ones (reference == -1),
and their harmonic mean, F1.
"""

from __future__ import annotations

import math
from bisect import bisect_right
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


# ProcessBench's per-subset protocol (its evaluation scripts, ``code/run_eval_prm_*.py``): each subset is scored on its
# own, as above, and the headline is the plain mean of the subsets' F1 ("Average F1"), not the F1 of the pooled
# samples. The scripts print percentages; here every figure is a fraction in [0, 1].

SUBSET_FIELDS = ("subset", "source")  # the item fields naming a sample's subset, in order of preference


def subset_name(*values: object) -> str | None:
    """A sample's subset from its item's ``SUBSET_FIELDS`` values (in that order): the first one present and not
    empty, as text; ``None`` when there is none."""
    for value in values:
        if value is None:
            continue
        text = value if isinstance(value, str) else str(value)
        if text:
            return text
    return None


def _subset_order(subset: str | None) -> tuple[bool, str]:
    return (subset is None, subset or "")


def processbench_by_subset(
    subsets: Sequence[str | None], reference: Sequence[int], predicted: Sequence[int]
) -> list[tuple[str | None, ProcessBenchResult]]:
    """``processbench_scores`` of each subset's samples (three parallel sequences), subsets in name order and the
    samples without one (``None``) last."""
    if not len(subsets) == len(reference) == len(predicted):
        raise ValueError(f"{len(subsets)} subsets, {len(reference)} reference and {len(predicted)} predicted indices")
    grouped: dict[str | None, tuple[list[int], list[int]]] = {}
    for subset, r, p in zip(subsets, reference, predicted, strict=True):
        group = grouped.setdefault(subset, ([], []))
        group[0].append(r)
        group[1].append(p)
    return [(subset, processbench_scores(*grouped[subset])) for subset in sorted(grouped, key=_subset_order)]


def mean_f1(results: Iterable[ProcessBenchResult]) -> float | None:
    """ProcessBench's average: the mean of the subsets' F1. ``None`` when there is no subset or some subset's F1 is
    undefined (it lacks erroneous or correct samples), where ProcessBench's own mean would be NaN."""
    f1s = [result.f1 for result in results]
    if not f1s or any(f1 is None for f1 in f1s):
        return None
    return sum(f1s) / len(f1s)  # type: ignore[arg-type]


TUNE_NO_SAMPLES = "no sample to tune the threshold on"
TUNE_F1_UNDEFINED = (
    "F1 is undefined without both erroneous and correct samples ({erroneous} erroneous, {correct} correct)"
)


@dataclass(frozen=True)
class TunedThreshold:
    threshold: float  # the lowest of the score values that give the best F1
    result: ProcessBenchResult  # the samples' figures at that threshold
    candidates: int  # distinct score values tried


def tune_threshold(reference: Sequence[int], scores: Sequence[Sequence[float]]) -> TunedThreshold:
    """The threshold, among the distinct score values of ``scores``, that maximises the F1 of these samples
    (``reference``: each sample's first wrong step or -1; ``scores``: its steps' PRM scores, as far as the reference
    goes). Ties go to the lowest threshold. Raises ``ValueError`` without samples or without both kinds.

    Exact and in O((samples + steps) log steps): a sample's prediction matches its reference for the thresholds of
    one interval. With step ``i`` judged wrong when its score is below ``t``, a correct sample (-1) matches while
    ``t <= min(scores)``; an erroneous one with first error ``L`` while ``scores[L] < t <= min(scores[:L])``
    (``min`` of nothing is +inf); a reference past the last score never matches. Counting the intervals that hold
    each candidate gives every candidate's two accuracies at once.
    """
    if len(reference) != len(scores):
        raise ValueError(f"{len(reference)} reference indices but {len(scores)} score lists")
    if not reference:
        raise ValueError(TUNE_NO_SAMPLES)
    num_erroneous = sum(r != NO_ERROR for r in reference)
    num_correct = len(reference) - num_erroneous
    if not num_erroneous or not num_correct:
        raise ValueError(TUNE_F1_UNDEFINED.format(erroneous=num_erroneous, correct=num_correct))
    candidates = sorted({float(s) for sample in scores for s in sample})
    if not candidates:
        raise ValueError(TUNE_NO_SAMPLES)
    # delta[k]: change in the count of matching samples from candidate k-1 to candidate k (one array per kind).
    erroneous_delta = [0] * (len(candidates) + 1)
    correct_delta = [0] * (len(candidates) + 1)
    for label, sample in zip(reference, scores, strict=True):
        if label == NO_ERROR:
            upper = min(sample) if sample else math.inf
            correct_delta[0] += 1
            correct_delta[bisect_right(candidates, upper)] -= 1
            continue
        if not 0 <= label < len(sample):
            continue  # never predicted
        upper = min(sample[:label]) if label else math.inf
        start, stop = bisect_right(candidates, sample[label]), bisect_right(candidates, upper)
        if start < stop:
            erroneous_delta[start] += 1
            erroneous_delta[stop] -= 1
    best: tuple[int, int] | None = None  # F1 as an exact fraction: 2*E*C / (E*num_correct + C*num_erroneous)
    best_index = 0
    erroneous_matches = correct_matches = 0
    for index in range(len(candidates)):
        erroneous_matches += erroneous_delta[index]
        correct_matches += correct_delta[index]
        numerator = 2 * erroneous_matches * correct_matches
        denominator = erroneous_matches * num_correct + correct_matches * num_erroneous
        if best is None or numerator * best[1] > best[0] * denominator:
            best, best_index = (numerator, denominator or 1), index
    threshold = candidates[best_index]
    predicted = [first_below(sample, threshold) for sample in scores]
    return TunedThreshold(
        threshold=threshold, result=processbench_scores(reference, predicted), candidates=len(candidates)
    )
