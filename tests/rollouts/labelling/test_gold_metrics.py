"""Gold figures and the gold mix, against hand-computed cases (pure: no database)."""

from __future__ import annotations

import pytest

from rollouts.labelling.gold_metrics import (
    NO_ERROR,
    GoldCheck,
    check_result,
    first_error_of,
    gold_due,
    gold_scores,
    labellers_below,
)


def test_first_error_of_names_the_first_wrong_step_none_or_unknown():
    assert first_error_of([1, 0, -1, -1]) == 2
    assert first_error_of([1, 0, 1]) == NO_ERROR
    assert first_error_of([1, None, None]) is None  # stopped early without a -1
    assert first_error_of([-1, None]) == 0


def test_one_answer_against_its_gold():
    # Every step rated in both: 2 of 3 the same (0 is not +1); both name step 3 as the first error.
    result = check_result([1, 1, -1], [1, 0, -1])
    assert (result.steps, result.steps_agreeing, result.first_error_known, result.first_error_agrees) == (
        3,
        2,
        True,
        True,
    )
    # Stop-at-first-error gold (2 steps rated): only steps 1-2 compared, 1 agrees; first errors 2 and 3 differ.
    result = check_result([1, -1, None], [1, 1, -1])
    assert (result.steps, result.steps_agreeing, result.first_error_known, result.first_error_agrees) == (
        2,
        1,
        True,
        False,
    )
    # An answer that gave up after step 1 names no first error: compared on step 1 only.
    result = check_result([1, 1], [1, None])
    assert (result.steps, result.steps_agreeing, result.first_error_known) == (1, 1, False)
    with pytest.raises(ValueError, match="steps"):
        check_result([1, 1], [1])


def test_each_labellers_accuracy_and_counts():
    scores = {
        score.labeller: score
        for score in gold_scores(
            [
                GoldCheck("ann", [1, 1, -1], [1, 0, -1]),
                GoldCheck("ann", [1, -1, None], [1, 1, -1]),
                GoldCheck("bob", [1, 1], [1, None]),
            ]
        )
    }
    ann, bob = scores["ann"], scores["bob"]
    # ann: steps 3 of 5 agree; first errors 1 of 2.
    assert (ann.answers, ann.steps, ann.steps_agreeing) == (2, 5, 3)
    assert ann.step_accuracy == pytest.approx(0.6)
    assert (ann.first_errors, ann.first_errors_agreeing, ann.first_error_accuracy) == (2, 1, 0.5)
    # bob: 1 of 1 step; no answer comparable on the first error.
    assert (bob.answers, bob.step_accuracy, bob.first_errors, bob.first_error_accuracy) == (1, 1.0, 0, None)


def test_labellers_below_a_threshold_need_enough_answers():
    scores = gold_scores(
        [
            GoldCheck("ann", [1, 1, -1], [1, 0, -1]),
            GoldCheck("ann", [1, -1, None], [1, 1, -1]),  # ann 0.6 over 2 answers
            GoldCheck("bob", [1, 1], [-1, None]),  # bob 0.0 over 1 answer
            GoldCheck("cat", [1, 1], [1, 1]),
            GoldCheck("cat", [1, -1], [1, -1]),  # cat 1.0 over 2
        ]
    )
    assert labellers_below(scores, min_accuracy=0.7, min_answers=2) == ["ann"]
    assert labellers_below(scores, min_accuracy=0.7, min_answers=1) == ["ann", "bob"]
    assert labellers_below(scores, min_accuracy=0.6, min_answers=1) == ["bob"]  # 0.6 is not below 0.6


def _mix(rate: float, handouts: int) -> list[int]:
    """The positions (1-based) of the gold items among a person's first ``handouts`` rollouts."""
    labels = served = 0
    positions = []
    for n in range(1, handouts + 1):
        if gold_due(rate=rate, labels=labels, gold_served=served):
            served += 1
            positions.append(n)
        else:
            labels += 1
    return positions


def test_the_mix_serves_gold_at_the_rate_as_a_running_share():
    assert _mix(0.25, 12) == [4, 8, 12]
    assert _mix(0.5, 6) == [2, 4, 6]
    assert _mix(1 / 3, 9) == [3, 6, 9]
    assert _mix(0.0, 50) == []
    assert len(_mix(0.29, 100)) == 29  # 0.29 * 100 is 28.999... in floats
    for rate in (0.05, 0.1, 0.2, 0.3, 0.5):
        for handouts in range(1, 60):
            assert len(_mix(rate, handouts)) == int(rate * handouts + 1e-9)
