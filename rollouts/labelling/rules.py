"""How a person's ratings become a stored label. Pure: no Django.

A person rates each step -1 (wrong), 0 (neutral: not wrong, no progress) or +1 (right), as PRM800K's labellers did.
Ratings are stored as the step label codes of the webserver specification (``prmsite.core.domain``): -1 as 0 (not
preferred), 0 as 2 (neutral), +1 as 1 (preferred).

A label holds one value per step, but a person need not rate every step:

- The rated steps are a prefix: steps ``0 … rated_steps-1`` carry ratings, the steps after them none. A rating after
  an unrated step is refused, so "where the person stopped" is always one number, ``rated_steps``.
- Unrated steps are stored as the neutral code 2, and ``rated_steps`` is stored beside the label
  (``attributes["rated_steps"]``): a reader that needs to know tells a real 0 rating from "not rated" by it.
- In stop-at-first-error mode (PRM800K's phase 2) a rollout ends at its first -1: ratings after it are dropped, so
  ``rated_steps`` is the index of the first -1 plus one.

Finish reasons are PRM800K's: ``found_error`` (a step is rated -1; in stop-at-first-error mode every step before it
is rated, otherwise every step is), ``solution`` (every step rated, none -1), ``bad_problem`` (the problem itself is
broken) and ``give_up`` (the labeller stopped); the last two accept any rated prefix. Left blank, the finish reason
follows from the ratings: ``found_error`` when a step is rated -1, ``solution`` when every step is rated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prmsite.core.domain import LABEL_NEUTRAL, LABEL_NOT_PREFERRED, LABEL_PREFERRED, not_a_label_code

RATING_WRONG = -1
RATING_NEUTRAL = 0
RATING_RIGHT = 1
RATINGS = (RATING_WRONG, RATING_NEUTRAL, RATING_RIGHT)
RATING_CODES: dict[int, int] = {
    RATING_WRONG: LABEL_NOT_PREFERRED,
    RATING_NEUTRAL: LABEL_NEUTRAL,
    RATING_RIGHT: LABEL_PREFERRED,
}
CODE_RATINGS: dict[int, int] = {code: rating for rating, code in RATING_CODES.items()}
# What an unrated step is stored as; attributes["rated_steps"] says which steps are unrated.
UNRATED_CODE = LABEL_NEUTRAL

FINISH_FOUND_ERROR = "found_error"
FINISH_SOLUTION = "solution"
FINISH_BAD_PROBLEM = "bad_problem"
FINISH_GIVE_UP = "give_up"
FINISH_REASONS = (FINISH_FOUND_ERROR, FINISH_SOLUTION, FINISH_BAD_PROBLEM, FINISH_GIVE_UP)
# Finish reasons that accept any rated prefix: the labeller stopped early on purpose.
FINISH_EARLY = (FINISH_BAD_PROBLEM, FINISH_GIVE_UP)

MODE_ALL_STEPS = "all_steps"
MODE_STOP_AT_FIRST_ERROR = "stop_at_first_error"

NO_STEPS = "The rollout has no steps."
LENGTHS_DIFFER = "{ratings} ratings and {notes} notes for {steps} steps."
NOT_A_RATING = "Step {step}: {value!r} is not a rating (-1, 0 or +1)."
NOT_A_FINISH_REASON = "{value!r} is not a finish reason ({choices})."
GAP = "Step {gap} is not rated but step {later} is: rate step {gap}, or clear the ratings after it."
RATE_EVERY_STEP = "Rate every step (steps {missing} are not rated), or choose the finish reason give_up or bad_problem."
RATE_UP_TO_ERROR = "Rate every step up to the first -1 (steps {missing} are not rated)."
FOUND_ERROR_WITHOUT_ERROR = "The finish reason found_error needs a step rated -1."
SOLUTION_WITH_ERROR = "Step {step} is rated -1: the finish reason is found_error, not solution."


class RatingsInvalid(ValueError):
    """The ratings cannot be stored as a label; ``str()`` says why, in words for the labeller."""


@dataclass(frozen=True)
class StepLabel:
    """What the labelling page stores for one rollout: one code per step, one note per step, and how far it got."""

    prm_output: list[int]
    explanations: list[str]
    rated_steps: int
    finish_reason: str
    mode: str

    @property
    def ratings(self) -> list[int | None]:
        return ratings_of(self.prm_output, self.rated_steps)


def _steps(indices: Sequence[int]) -> str:
    return ", ".join(str(i + 1) for i in indices)


def rated_prefix(ratings: Sequence[int | None]) -> int:
    """How many leading steps are rated."""
    for index, rating in enumerate(ratings):
        if rating is None:
            return index
    return len(ratings)


def first_wrong(ratings: Sequence[int | None]) -> int | None:
    """Index of the first step rated -1, or None."""
    return next((i for i, rating in enumerate(ratings) if rating == RATING_WRONG), None)


def ratings_truncated(ratings: Sequence[int | None], *, stop_at_first_error: bool) -> list[int | None]:
    """The ratings a label keeps: in stop-at-first-error mode nothing after the first -1."""
    kept = list(ratings)
    wrong = first_wrong(kept)
    if stop_at_first_error and wrong is not None:
        kept[wrong + 1 :] = [None] * (len(kept) - wrong - 1)
    return kept


def label_from_ratings(
    ratings: Sequence[int | None],
    notes: Sequence[str],
    *,
    finish_reason: str | None,
    stop_at_first_error: bool,
) -> StepLabel:
    """The label for these per-step ratings (-1/0/+1, None: unrated) and notes; ``RatingsInvalid`` says what to fix.

    The rules are the module's: a rated prefix, unrated steps stored as neutral, stop-at-first-error drops what follows
    the first -1, and the finish reason (inferred when blank) must match the ratings.
    """
    steps = len(ratings)
    if steps == 0:
        raise RatingsInvalid(NO_STEPS)
    if len(notes) != steps:
        raise RatingsInvalid(LENGTHS_DIFFER.format(ratings=steps, notes=len(notes), steps=steps))
    for index, rating in enumerate(ratings):
        if rating is not None and (isinstance(rating, bool) or rating not in RATINGS):
            raise RatingsInvalid(NOT_A_RATING.format(step=index + 1, value=rating))
    if finish_reason and finish_reason not in FINISH_REASONS:
        raise RatingsInvalid(NOT_A_FINISH_REASON.format(value=finish_reason, choices=", ".join(FINISH_REASONS)))
    kept = ratings_truncated(ratings, stop_at_first_error=stop_at_first_error)
    rated = rated_prefix(kept)
    later = next((i for i in range(rated, steps) if kept[i] is not None), None)
    if later is not None:
        raise RatingsInvalid(GAP.format(gap=rated + 1, later=later + 1))
    wrong = first_wrong(kept)
    unrated = list(range(rated, steps))
    if not finish_reason:
        if wrong is not None:
            finish_reason = FINISH_FOUND_ERROR
        elif not unrated:
            finish_reason = FINISH_SOLUTION
        else:
            raise RatingsInvalid(RATE_EVERY_STEP.format(missing=_steps(unrated)))
    if finish_reason == FINISH_FOUND_ERROR:
        if wrong is None:
            raise RatingsInvalid(FOUND_ERROR_WITHOUT_ERROR)
        if unrated and not stop_at_first_error:
            raise RatingsInvalid(RATE_EVERY_STEP.format(missing=_steps(unrated)))
    elif finish_reason == FINISH_SOLUTION:
        if wrong is not None:
            raise RatingsInvalid(SOLUTION_WITH_ERROR.format(step=wrong + 1))
        if unrated:
            raise RatingsInvalid(RATE_EVERY_STEP.format(missing=_steps(unrated)))
    prm_output = [RATING_CODES[r] for r in kept[:rated]] + [UNRATED_CODE] * (steps - rated)
    return StepLabel(
        prm_output=prm_output,
        explanations=[note.strip() for note in notes],
        rated_steps=rated,
        finish_reason=finish_reason,
        mode=MODE_STOP_AT_FIRST_ERROR if stop_at_first_error else MODE_ALL_STEPS,
    )


def ratings_of(prm_output: Sequence[float | int], rated_steps: int | None = None) -> list[int | None]:
    """The ratings (-1/0/+1, None: unrated) a label's codes stand for; every step counts as rated when
    ``rated_steps`` is None (a label posted through the API). ``ValueError`` for a value that is not a code."""
    count = len(prm_output) if rated_steps is None else max(0, min(int(rated_steps), len(prm_output)))
    ratings: list[int | None] = []
    for index, code in enumerate(prm_output):
        if index >= count:
            ratings.append(None)
            continue
        if isinstance(code, bool) or code not in CODE_RATINGS:
            raise ValueError(not_a_label_code(code))
        ratings.append(CODE_RATINGS[int(code)])
    return ratings
