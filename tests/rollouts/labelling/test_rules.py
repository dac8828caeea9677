"""A person's ratings become a label: codes 0/2/1 for -1/0/+1, a rated prefix, unrated steps neutral, the
stop-at-first-error rule and PRM800K's finish reasons."""

from __future__ import annotations

import pytest

from prmsite.core.domain import LABEL_NEUTRAL, LABEL_NOT_PREFERRED, LABEL_PREFERRED
from rollouts.labelling.rules import (
    FINISH_BAD_PROBLEM,
    FINISH_FOUND_ERROR,
    FINISH_GIVE_UP,
    FINISH_SOLUTION,
    MODE_ALL_STEPS,
    MODE_STOP_AT_FIRST_ERROR,
    RatingsInvalid,
    label_from_ratings,
    ratings_of,
)


def label(ratings, *, finish_reason=None, stop=False, notes=None):
    return label_from_ratings(
        ratings,
        notes if notes is not None else [""] * len(ratings),
        finish_reason=finish_reason,
        stop_at_first_error=stop,
    )


def test_ratings_are_stored_as_the_specifications_codes():
    result = label([1, 0, -1])
    assert result.prm_output == [LABEL_PREFERRED, LABEL_NEUTRAL, LABEL_NOT_PREFERRED] == [1, 2, 0]
    assert result.rated_steps == 3
    assert result.mode == MODE_ALL_STEPS


def test_the_finish_reason_follows_from_the_ratings_when_left_blank():
    assert label([1, 1, 0]).finish_reason == FINISH_SOLUTION
    assert label([1, -1, 1]).finish_reason == FINISH_FOUND_ERROR


def test_every_step_must_be_rated_unless_the_labeller_gives_up_or_flags_a_bad_problem():
    with pytest.raises(RatingsInvalid, match="steps 3, 4 are not rated"):
        label([1, 1, None, None])
    with pytest.raises(RatingsInvalid, match="not rated"):
        label([1, 1, None], finish_reason=FINISH_SOLUTION)
    gave_up = label([1, 1, None], finish_reason=FINISH_GIVE_UP)
    assert (gave_up.prm_output, gave_up.rated_steps) == ([1, 1, LABEL_NEUTRAL], 2)
    broken = label([None, None], finish_reason=FINISH_BAD_PROBLEM)
    assert (broken.prm_output, broken.rated_steps) == ([LABEL_NEUTRAL, LABEL_NEUTRAL], 0)


def test_rated_steps_are_a_prefix_a_rating_after_a_gap_is_refused():
    with pytest.raises(RatingsInvalid, match="Step 2 is not rated but step 3 is"):
        label([1, None, 1], finish_reason=FINISH_GIVE_UP)


def test_stop_at_first_error_drops_the_ratings_after_the_first_wrong_step_and_stores_them_neutral():
    result = label([1, -1, 1, -1], stop=True)
    assert result.prm_output == [1, 0, LABEL_NEUTRAL, LABEL_NEUTRAL]
    assert result.rated_steps == 2
    assert result.finish_reason == FINISH_FOUND_ERROR
    assert result.mode == MODE_STOP_AT_FIRST_ERROR
    assert result.ratings == [1, -1, None, None]
    # Unrated steps after the error are what the mode expects, not a gap.
    assert label([0, -1, None, None], stop=True).rated_steps == 2


def test_stop_at_first_error_still_needs_every_step_before_the_error():
    with pytest.raises(RatingsInvalid, match="Step 2 is not rated but step 3 is"):
        label([1, None, -1], stop=True)
    assert label([1, 1, 1], stop=True).finish_reason == FINISH_SOLUTION


def test_a_finish_reason_that_contradicts_the_ratings_is_refused():
    with pytest.raises(RatingsInvalid, match="found_error needs a step rated -1"):
        label([1, 1], finish_reason=FINISH_FOUND_ERROR)
    with pytest.raises(RatingsInvalid, match="Step 2 is rated -1"):
        label([1, -1], finish_reason=FINISH_SOLUTION)
    with pytest.raises(RatingsInvalid, match="not rated"):
        label([1, -1, None], finish_reason=FINISH_FOUND_ERROR)  # every step, outside stop-at-first-error mode


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(RatingsInvalid, match="no steps"):
        label([])
    with pytest.raises(RatingsInvalid, match="not a rating"):
        label([1, 2])
    with pytest.raises(RatingsInvalid, match="not a rating"):
        label([True])
    with pytest.raises(RatingsInvalid, match="not a finish reason"):
        label([1], finish_reason="done")
    with pytest.raises(RatingsInvalid, match="2 notes"):
        label([1], notes=["a", "b"])


def test_notes_become_the_explanations_one_per_step():
    result = label([1, 1], notes=["  checks out \n", ""])
    assert result.explanations == ["checks out", ""]


def test_codes_read_back_as_ratings_and_unrated_steps_as_none():
    assert ratings_of([1, 2, 0, 2], 3) == [1, 0, -1, None]
    assert ratings_of([1.0, 0.0]) == [1, -1]  # an AI judge's codes, every step rated
    with pytest.raises(ValueError, match="not a step label code"):
        ratings_of([0.7, 1])
