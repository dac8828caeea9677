"""The budget replay on hand-built trees (pure: no database)."""

from __future__ import annotations

import pytest

from prmsite.core.mc_budget import (
    ReplayPolicy,
    ReplayRollout,
    ReplayTree,
    cheapest_reaching,
    policies_series,
    replay_forest,
    results_table,
)

# Root 0; base paths 0-1-2-3 (right) and 0-1-4-5 (wrong, the wrong step is 4). Completions: from 2 (leaves 20, 21),
# from 4 (leaves 40..43, all wrong), from 1 (leaves 10, 11: wrong, right).
NODES = [(0, None, 0), (1, 0, 1), (2, 1, 2), (3, 2, 3), (4, 1, 2), (5, 4, 3)]
NODES += [(20, 2, 3), (21, 2, 3), (10, 1, 2), (11, 1, 2)] + [(40 + i, 4, 3) for i in range(4)]
ROLLOUTS = [
    ReplayRollout(100, 3, True, 10),
    ReplayRollout(101, 5, False, 10),
    ReplayRollout(102, 20, True, 1),
    ReplayRollout(103, 40, False, 1),
    ReplayRollout(104, 41, False, 1),
    ReplayRollout(105, 10, False, 1),
    ReplayRollout(106, 42, False, 1),
    ReplayRollout(107, 43, False, 1),
    ReplayRollout(108, 11, True, 1),
    ReplayRollout(109, 21, True, 1),
]
TREE = ReplayTree(root_id=0, nodes=NODES, rollouts=ROLLOUTS)


def run(*policies: ReplayPolicy):
    return replay_forest([TREE], list(policies), num_repeats=2)


def test_mc_asks_each_non_leaf_base_node_up_to_its_budget_counting_what_passes_through():
    (result,) = run(ReplayPolicy("mc", "hard", 3))
    # Node 1 has 2 base rollouts through it: 1 more (105); node 2 has 1: 2 more (102, 109); node 4 has 1: 2 more
    # (103, 104); the root would want 1 more but the forest has no completion of the root.
    assert result.generations == 2 + 1 + 2 + 2
    assert result.tokens == 20 + 5
    assert result.step_accuracy == 1.0  # the whole forest: 4 is bad (4 wrong completions), 1 and 2 good


def test_adaptive_hard_serves_only_the_unknown_step_and_stops_at_the_budget():
    (result,) = run(ReplayPolicy("adaptive", "hard", 5, round_size=2))
    # Steps 1 and 2 have the right base rollout through them: known good. Step 4 (1 trial) gets rounds of 2 and 2
    # (103, 104, 106, 107): 5 trials, none right: bad. Nothing else is asked.
    assert result.generations == 2 + 4
    assert result.step_accuracy == 1.0 and result.first_error_agreement == 1.0


def test_budget_one_is_the_base_alone_and_agreement_counts_steps_and_first_errors():
    (result,) = run(ReplayPolicy("adaptive", "hard", 1))
    assert result.generations == 2 and result.steps == 3 + 3
    # With the base alone, hard labels are right everywhere except step 4's leaf 5 ... which the whole forest also
    # has bad: every label agrees; the first error of the wrong path (step 4, index 1) is found.
    assert result.step_accuracy == 1.0


def test_omega_probes_the_middle_of_the_wrong_path():
    (result,) = run(ReplayPolicy("omega", "hard", 2))
    # The search over 0-1-4-5: lo = 1 (the right rollout passes through it), hi = 3 (the leaf); probe 4: 2 wrong.
    assert result.generations == 2 + 2 and result.first_error_agreement == 1.0


def test_the_series_and_the_table():
    policies = policies_series((1, 2), (0.5,))
    assert [p.name for p in policies[:5]] == [
        "mc hard",
        "mc soft",
        "omega hard",
        "adaptive hard",
        "adaptive soft p=0.5",
    ]
    results = replay_forest([TREE], policies, num_repeats=2)
    table = results_table(results)
    assert table.splitlines()[0].split()[:3] == ["name", "budget", "trees"] and len(table.splitlines()) == 2 + 10
    assert cheapest_reaching(results, name="mc hard", accuracy=0.99).budget in (1, 2)
    with pytest.raises(ValueError):
        ReplayPolicy("beam", "hard", 2)
