"""The adaptive policy's stopping rules and order of service, on hand-computed cases (pure: no database)."""

from __future__ import annotations

import pytest

from forests.metrics.stats import wilson_interval as metrics_wilson
from prmsite.core.adaptive import (
    AdaptiveRule,
    StepState,
    dropped,
    next_rounds,
    service_order,
    tree_steps,
    wilson_interval,
    wilson_width,
)

HARD = AdaptiveRule(estimate="hard", max_completions=4, round_size=2)


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (1, 1), (3, 7), (10, 10), (0, 25)])
def test_the_interval_is_the_forest_pages_wilson_interval(successes, trials):
    assert wilson_interval(successes, trials) == pytest.approx(metrics_wilson(successes, trials))


def test_hard_is_decided_at_the_first_success_and_bad_only_at_the_cap():
    assert not HARD.decided(0, 1) and not HARD.decided(0, 3)
    assert HARD.decided(1, 1) and HARD.decided(1, 2)  # one correct completion: good, stop at once
    assert HARD.decided(0, 4)  # four without one: bad
    assert HARD.label(1, 4) and not HARD.label(0, 4)


def test_soft_stops_when_the_interval_is_narrower_than_the_precision():
    rule = AdaptiveRule(estimate="soft", precision=0.5, max_completions=100)
    # Wilson widths of k/k: 3/3 0.561, 4/4 0.490: the first under 0.5 is 4 of 4.
    assert wilson_width(3, 3) > 0.5 > wilson_width(4, 4)
    assert not rule.decided(3, 3) and rule.decided(4, 4)
    # 5/10 is 0.527 wide, 6/12 0.488: a step right half of the time needs 12.
    assert not rule.decided(5, 10) and rule.decided(6, 12)
    assert AdaptiveRule(estimate="soft", precision=0.01, max_completions=6).decided(3, 6)  # the cap still holds
    assert rule.label(6, 12) and not rule.label(5, 11)


def test_bad_rules_are_refused():
    for bad in (
        {"estimate": "medium"},
        {"precision": 0},
        {"precision": 1.5},
        {"max_completions": 0},
        {"round_size": 0},
    ):
        with pytest.raises(ValueError):
            AdaptiveRule(**bad)


def test_the_expected_change_of_a_label():
    # Hard, no success in n: one more completion is correct (and flips the label) with chance 1 / (n + 2).
    assert HARD.label_change(0, 0) == pytest.approx(1 / 2)
    assert HARD.label_change(0, 2) == pytest.approx(1 / 4)
    assert HARD.label_change(1, 1) == 0  # good stays good
    soft = AdaptiveRule(estimate="soft", precision=0.1, max_completions=50)
    # 1 of 2 (good at 0.5): a failure (chance 1/2) makes it 1 of 3, bad.
    assert soft.label_change(1, 2) == pytest.approx(0.5)
    assert soft.label_change(9, 10) == 0  # 9/10 and 10/11 and 9/11 are all good


def test_service_order_uncertain_steps_first_then_nearest_the_first_error():
    steps = [
        StepState(node_id=1, depth=1, trials=3, successes=0),  # change 1/5
        StepState(node_id=2, depth=2, trials=1, successes=0, frontier_depth=0),  # change 1/3, 2 below the frontier
        StepState(node_id=3, depth=3, trials=1, successes=0, frontier_depth=2),  # change 1/3, 1 below the frontier
        StepState(node_id=4, depth=1, trials=2, successes=1),  # decided good: never served
        StepState(node_id=5, depth=4, trials=4, successes=0),  # decided bad (the cap)
    ]
    assert [s.node_id for s in service_order(HARD, steps)] == [3, 2, 1]


def test_next_rounds_skip_steps_with_work_asked_and_keep_within_the_cap_and_the_budget():
    steps = [
        StepState(node_id=1, depth=1, trials=3, successes=0),  # one left before the cap of 4
        StepState(node_id=2, depth=2, trials=1, successes=0, pending=2),  # its round is out: nothing more
        StepState(node_id=3, depth=3, trials=1, successes=0),
        StepState(node_id=4, depth=1, trials=1, successes=1, pending=1),  # decided with work still asked: dropped
    ]
    assert next_rounds(HARD, steps) == [(3, 2), (1, 1)]
    assert next_rounds(HARD, steps, budget=2) == [(3, 2)]
    assert dropped(HARD, steps) == [4]


def test_tree_steps_are_the_non_leaf_steps_of_the_base_paths_with_their_frontier():
    # Two base paths 0-1-2-3 (correct through 1 only: 1 has a success) and 0-1-4-5.
    through = {0: (4, 1), 1: (4, 1), 2: (2, 0), 3: (1, 0), 4: (2, 1), 5: (1, 1)}
    steps = tree_steps(base_paths=[[0, 1, 2, 3], [0, 1, 4, 5]], through=through, has_children={0, 1, 2, 4})
    by_id = {s.node_id: s for s in steps}
    assert sorted(by_id) == [1, 2, 4]  # no root, no leaf
    assert by_id[2].frontier_depth == 1 and by_id[1].frontier_depth == 0
    assert (by_id[2].trials, by_id[2].successes) == (2, 0)
    assert [
        s.node_id for s in tree_steps(base_paths=[[0, 1, 2, 3]], through=through, has_children={1, 2}, max_depth=1)
    ] == [1]
