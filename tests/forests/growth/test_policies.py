"""The growth policies' decisions, tested directly (no database)."""

from __future__ import annotations

import pytest

from forests.growth.policies import (
    STAGE_MC,
    GrowthOptions,
    GrowthOptionsError,
    TreeNode,
    TreeRollout,
    TreeSnapshot,
    branching_wanted,
    chunk_counts,
    mc_plan,
    repeats_needed,
    tree_budget,
    wrong_rollouts,
)
from prmsite.core.growth import omega_probes_max, omega_record, omega_start


def chain_tree(root: int, paths: list[list[int]]) -> list[TreeNode]:
    """Nodes of a tree given as id paths below the root (ids unique per position)."""
    nodes = {root: TreeNode(root, None, 0)}
    for path in paths:
        parent = root
        for depth, node_id in enumerate(path, start=1):
            nodes.setdefault(node_id, TreeNode(node_id, parent, depth))
            parent = node_id
    return list(nodes.values())


def test_options_refuse_unknown_policies_names_and_bad_values():
    with pytest.raises(GrowthOptionsError, match="policy must be one of"):
        GrowthOptions(policy="beam")
    with pytest.raises(GrowthOptionsError, match="unknown growth option"):
        GrowthOptions.from_dict({"num_repeat": 3})
    with pytest.raises(GrowthOptionsError, match="num_repeats"):
        GrowthOptions(num_repeats=-1)
    with pytest.raises(GrowthOptionsError, match="max_branch_depth"):
        GrowthOptions(max_branch_depth=0)
    with pytest.raises(GrowthOptionsError, match="needs num_repeats >= 1"):
        GrowthOptions(policy="repeats", num_repeats=0)
    with pytest.raises(GrowthOptionsError, match="skip_uniform"):
        GrowthOptions(skip_uniform="yes")


def test_options_round_trip_and_report_their_differences():
    options = GrowthOptions(policy="omega", num_repeats=8, max_forest_tokens=10_000)
    assert GrowthOptions.from_dict(options.to_dict()) == options
    assert options.differences({"policy": "omega", "num_repeats": 4}) == {"num_repeats": (8, 4)}


def test_chunks_cover_the_count_with_pieces_no_bigger_than_the_size():
    assert chunk_counts(0, 8) == []
    assert chunk_counts(8, 8) == [8]
    assert chunk_counts(19, 8) == [8, 8, 3]
    assert sum(chunk_counts(1001, 7)) == 1001


def test_repeats_need_only_what_is_missing_and_the_tree_cap_clips_it():
    options = GrowthOptions(num_repeats=4, max_rollouts_per_tree=6)
    assert repeats_needed(rollouts=1, options=options) == 3
    assert repeats_needed(rollouts=9, options=options) == 0
    assert tree_budget(options=options, rollouts=4, queued=1) == 1
    assert tree_budget(options=GrowthOptions(), rollouts=100, queued=100) is None


def test_uniform_trees_are_skipped_only_when_asked():
    nodes = chain_tree(1, [[2], [3]])
    right = TreeSnapshot(1, nodes, [TreeRollout(10, 2, True), TreeRollout(11, 3, True)])
    mixed = TreeSnapshot(1, nodes, [TreeRollout(10, 2, True), TreeRollout(11, 3, False)])
    assert branching_wanted(right, GrowthOptions(num_repeats=2))
    assert not branching_wanted(right, GrowthOptions(num_repeats=2, skip_uniform=True))
    assert branching_wanted(mixed, GrowthOptions(num_repeats=2, skip_uniform=True))
    assert not branching_wanted(mixed, GrowthOptions(policy="repeats", num_repeats=2))


def test_through_counts_every_rollout_on_every_node_of_its_path():
    # root 1 -> 2 -> 3 (leaf, wrong) and 2 -> 4 (leaf, right twice)
    snapshot = TreeSnapshot(
        1, chain_tree(1, [[2, 3], [2, 4]]), [TreeRollout(1, 3, False), TreeRollout(2, 4, True), TreeRollout(3, 4, True)]
    )
    assert snapshot.through() == {1: (3, 2), 2: (3, 2), 3: (1, 0), 4: (2, 2)}
    assert snapshot.path(4) == [1, 2, 4]
    assert snapshot.children(2) == 2


def test_mc_asks_each_non_leaf_node_for_what_it_lacks_shallow_first():
    # root 1 -> 2 -> 3 -> 4 (one rollout)
    snapshot = TreeSnapshot(1, chain_tree(1, [[2, 3, 4]]), [TreeRollout(1, 4, False)])
    plan = mc_plan(snapshot, GrowthOptions(completions_per_step=3))
    assert [(e.node_id, e.count, e.path) for e in plan] == [(1, 2, (1,)), (2, 2, (1, 2)), (3, 2, (1, 2, 3))]
    assert all(e.stage == STAGE_MC for e in plan)
    # The leaf is not expanded; depth caps and budgets hold.
    assert [e.node_id for e in mc_plan(snapshot, GrowthOptions(completions_per_step=3, max_branch_depth=1))] == [1, 2]
    budgeted = mc_plan(snapshot, GrowthOptions(completions_per_step=3), budget=3)
    assert sum(e.count for e in budgeted) == 3


def test_mc_skips_nodes_that_already_have_enough_rollouts_or_children():
    snapshot = TreeSnapshot(
        1,
        chain_tree(1, [[2, 3], [2, 5]]),
        [TreeRollout(1, 3, False), TreeRollout(2, 5, True), TreeRollout(3, 5, True)],
    )
    assert mc_plan(snapshot, GrowthOptions(completions_per_step=3)) == []
    capped = mc_plan(snapshot, GrowthOptions(completions_per_step=5, max_children_per_node=2))
    assert [e.node_id for e in capped] == [1]  # node 2 has its 2 children already


def run_search(path, first_error_depth, through=None, k=4):
    """Drive a search whose model reaches the right answer from every step before ``first_error_depth``."""
    search = omega_start(path, through or {})
    probes = []
    while not search.done:
        probes.append(search.probe)
        search = omega_record(search, positive=search.probe < first_error_depth)
    return search, probes


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 16, 33])
def test_omega_finds_the_planted_first_error_with_logarithmically_many_probes(steps):
    path = list(range(100, 100 + steps + 1))  # root, then `steps` steps; the last one is the wrong leaf
    for first_error in range(1, steps + 1):
        search, probes = run_search(path, first_error)
        assert search.first_error == first_error
        assert len(probes) <= omega_probes_max(steps)
        assert len(set(probes)) == len(probes)


def test_omega_starts_above_steps_known_to_have_a_correct_continuation():
    path = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    through = {1: (5, 2), 2: (4, 2), 3: (3, 1), 4: (2, 1)}  # a correct rollout passes through depth 3 (node 4)
    search = omega_start(path, through)
    assert search.lo == 3 and search.probe == 5
    search, probes = run_search(path, 6, through)
    assert search.first_error == 6 and all(p > 3 for p in probes)


def test_omega_reports_no_error_when_the_wrong_leaf_itself_has_a_correct_continuation():
    path = [1, 2, 3]
    search = omega_start(path, {3: (2, 1), 2: (2, 1), 1: (2, 1)})
    assert search.done and search.first_error is None


def test_wrong_rollouts_are_searched_once_per_distinct_path():
    snapshot = TreeSnapshot(
        1,
        chain_tree(1, [[2], [3]]),
        [TreeRollout(1, 2, False), TreeRollout(2, 2, False), TreeRollout(3, 3, True)],
    )
    assert [r.id for r in wrong_rollouts(snapshot)] == [1]
