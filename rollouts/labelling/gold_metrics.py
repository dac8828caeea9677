"""Gold checks: how a labeller's answers to gold items compare with the gold, and when the queue mixes one in. Pure: no
Django.

Ratings are a person's -1 / 0 / +1 per step, ``None`` for a step not rated (``rules.ratings_of`` reads them from
stored codes and ``rated_steps``).

- **Step accuracy**: over the steps rated both in the gold and in the answer, the share where the rating is the same
  (-1, 0 and +1 are three answers: a 0 where the gold says +1 is a miss).
- **First-error accuracy**: over the answers where both the gold and the answer name a first wrong step (or, every
  step rated, none), the share that name the same one. An answer or a gold that stopped early without a -1 names
  none and is left out, as in the agreement among labellers.

The mix (``gold_due``): the n-th rollout handed to a person in a scheme is a gold item when ``floor(rate * n)`` is more
than the gold items handed to them so far, so after any number of rollouts the share of gold is the rate, rounded
down: at rate 0.25 the 4th, 8th, 12th … are gold; at 0.5 every second one. A rate of 0 never serves gold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rollouts.labelling.rules import RATING_WRONG

# First-error value of a rollout whose every step is rated and none is wrong.
NO_ERROR = -1
# Room for the float product rate * n (0.29 * 100 is 28.999…): a share this close to a whole number counts as it.
_EPSILON = 1e-9

Ratings = Sequence[int | None]


def gold_due(*, rate: float, labels: int, gold_served: int) -> bool:
    """Whether the next rollout handed to a person is a gold item: they have ``labels`` labels in the scheme and were
    handed ``gold_served`` gold items (answered or not), so the next one is their ``labels + gold_served + 1``-th."""
    if rate <= 0:
        return False
    handed = labels + gold_served + 1
    return gold_served < math.floor(rate * handed + _EPSILON)


def first_error_of(ratings: Ratings) -> int | None:
    """Index of the first step rated -1; ``NO_ERROR`` when every step is rated and none is -1; ``None`` when the
    ratings stop (an unrated step) before any -1."""
    for index, rating in enumerate(ratings):
        if rating is None:
            return None
        if rating == RATING_WRONG:
            return index
    return NO_ERROR


@dataclass(frozen=True)
class GoldCheck:
    """One answered gold item: the gold's ratings and the labeller's, one per step of the rollout."""

    labeller: str
    expected: Ratings
    given: Ratings


@dataclass(frozen=True)
class CheckResult:
    steps: int  # steps rated in both
    steps_agreeing: int
    first_error_known: bool  # both name a first error (or none)
    first_error_agrees: bool


def check_result(expected: Ratings, given: Ratings) -> CheckResult:
    """How one answer compares with its gold; ``ValueError`` when they are not of the same rollout's length."""
    if len(expected) != len(given):
        raise ValueError(f"the gold has {len(expected)} steps and the answer {len(given)}")
    both = [(e, g) for e, g in zip(expected, given, strict=True) if e is not None and g is not None]
    gold_first, given_first = first_error_of(expected), first_error_of(given)
    known = gold_first is not None and given_first is not None
    return CheckResult(
        steps=len(both),
        steps_agreeing=sum(e == g for e, g in both),
        first_error_known=known,
        first_error_agrees=known and gold_first == given_first,
    )


@dataclass
class GoldScore:
    """A labeller's figures against the gold."""

    labeller: str
    answers: int = 0  # gold items answered
    steps: int = 0  # steps rated in both the gold and the answer
    steps_agreeing: int = 0
    first_errors: int = 0  # answers where both name a first error (or none)
    first_errors_agreeing: int = 0

    @property
    def step_accuracy(self) -> float | None:
        return self.steps_agreeing / self.steps if self.steps else None

    @property
    def first_error_accuracy(self) -> float | None:
        return self.first_errors_agreeing / self.first_errors if self.first_errors else None

    def add(self, result: CheckResult) -> None:
        self.answers += 1
        self.steps += result.steps
        self.steps_agreeing += result.steps_agreeing
        self.first_errors += result.first_error_known
        self.first_errors_agreeing += result.first_error_agrees


def gold_scores(checks: Iterable[GoldCheck]) -> list[GoldScore]:
    """Each labeller's figures, by labeller name."""
    scores: dict[str, GoldScore] = {}
    for check in checks:
        scores.setdefault(check.labeller, GoldScore(labeller=check.labeller)).add(
            check_result(check.expected, check.given)
        )
    return [scores[name] for name in sorted(scores)]


def labellers_below(scores: Iterable[GoldScore], *, min_accuracy: float, min_answers: int) -> list[str]:
    """The labellers whose step accuracy is below ``min_accuracy`` over at least ``min_answers`` gold answers (fewer
    answers, or no step to compare: not enough evidence, so they stay in)."""
    return sorted(
        score.labeller
        for score in scores
        if score.answers >= min_answers and score.step_accuracy is not None and score.step_accuracy < min_accuracy
    )
