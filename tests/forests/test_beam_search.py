"""Beam search over hand-built trees with known answers: each aggregation, ties, unequal depths, unscored nodes and
rollouts that end inside another rollout's path."""

from __future__ import annotations

import math

import numpy as np
import pytest

from forests.metrics.beam import Aggregation, beam_search, path_scores, score_ranks
from forests.metrics.forest import forest_arrays


def build(spec: list[tuple[int, int | None, float | None, int | None]], *, leaves: set[int] | None = None):
    """``spec`` rows are ``(id, parent_id, value, prediction)``; nodes without children are leaves unless ``leaves``
    says which are. Returns the forest and its value array (NaN for ``None``)."""
    parents = {parent for _, parent, _, _ in spec if parent is not None}
    depth: dict[int, int] = {}
    rows = []
    for node_id, parent_id, _, prediction in spec:
        depth[node_id] = 0 if parent_id is None else depth[parent_id] + 1
        is_leaf = node_id in leaves if leaves is not None else node_id not in parents and parent_id is not None
        rows.append((node_id, parent_id, depth[node_id], is_leaf, prediction, 1 if parent_id is None else None))
    forest = forest_arrays(rows)
    values = np.full(forest.size, np.nan)
    for node_id, _, value, _ in spec:
        if value is not None:
            values[forest.index_of(node_id)] = value
    return forest, values


def answer(forest, values, aggregation, num_beams) -> int:
    ranks = score_ranks(path_scores(forest, values, aggregation))
    (index,) = beam_search(forest, ranks, num_beams, forest.roots)
    return int(forest.ids[index])


# Five branches below root 1 (values of the steps in order; the last one is a leaf):
#   a: 0.9, 0.4          last .4   min .4  mean .65   product .36
#   c: 0.3, 0.95         last .95  min .3  mean .625  product .285
#   k: 0.8, 0.8, 0.8     last .8   min .8  mean .8    product .512
#   m: 0.75, 0.75        last .75  min .75 mean .75   product .5625
#   n: 1.0, 1.0, 0.5     last .5   min .5  mean .833  product .5
BRANCHES = [
    (1, None, None, None),
    (10, 1, 0.9, None),
    (11, 10, 0.4, 0),
    (20, 1, 0.3, None),
    (21, 20, 0.95, 1),
    (30, 1, 0.8, None),
    (31, 30, 0.8, None),
    (32, 31, 0.8, 2),
    (40, 1, 0.75, None),
    (41, 40, 0.75, 3),
    (50, 1, 1.0, None),
    (51, 50, 1.0, None),
    (52, 51, 0.5, 4),
]


def test_path_scores_aggregate_the_values_below_the_root():
    forest, values = build(BRANCHES)
    scores = {
        aggregation: dict(zip(forest.ids.tolist(), path_scores(forest, values, aggregation).tolist(), strict=True))
        for aggregation in Aggregation
    }
    assert math.isnan(scores["last"][1]) and math.isnan(scores["min"][1])  # the root is never part of a score
    assert scores["last"][32] == 0.8
    assert scores["min"][52] == 0.5
    assert scores["mean"][52] == pytest.approx(2.5 / 3)
    assert scores["product"][41] == pytest.approx(0.5625)
    assert scores["mean"][10] == 0.9


@pytest.mark.parametrize(
    ("aggregation", "expected_leaf"),
    [("last", 21), ("min", 32), ("mean", 52), ("product", 41)],
)
def test_with_beams_for_every_branch_each_aggregation_finds_its_own_best_leaf(aggregation, expected_leaf):
    forest, values = build(BRANCHES)
    assert answer(forest, values, aggregation, 5) == expected_leaf
    assert answer(forest, values, aggregation, 50) == expected_leaf


def test_one_beam_is_greedy_and_more_beams_look_past_a_weak_first_step():
    # root → a (0.6) → a1 (0.1); root → b (0.5) → b1 (0.9)
    forest, values = build(
        [(1, None, None, None), (2, 1, 0.6, None), (3, 2, 0.1, 0), (4, 1, 0.5, None), (5, 4, 0.9, 1)]
    )
    assert answer(forest, values, "last", 1) == 3
    assert answer(forest, values, "last", 2) == 5


def test_a_finished_beam_stays_and_competes_with_deeper_ones():
    # root → s (0.7, a leaf) ; root → t (0.9) → t1 (0.6) → t2 (0.65). Two beams: s waits while t grows; last wins s.
    spec = [(1, None, None, None), (2, 1, 0.7, 0), (3, 1, 0.9, None), (4, 3, 0.6, None), (5, 4, 0.65, 1)]
    forest, values = build(spec)
    assert answer(forest, values, "last", 2) == 2
    assert answer(forest, values, "last", 1) == 5  # one beam: t is better than s at the first step


def test_ties_go_to_the_lower_node_id():
    forest, values = build([(1, None, None, None), (7, 1, 0.5, 1), (3, 1, 0.5, 0), (9, 1, 0.5, 1)])
    assert answer(forest, values, "last", 1) == 3
    assert answer(forest, values, "min", 2) == 3


def test_a_rollout_ending_inside_another_path_is_never_the_answer():
    # p (value 1.0) is a leaf with a child q (0.0): beam search walks past p; r (0.5) is the other branch.
    spec = [(1, None, None, None), (2, 1, 1.0, 1), (3, 2, 0.0, 0), (4, 1, 0.5, 1)]
    forest, values = build(spec, leaves={2, 3, 4})
    assert answer(forest, values, "last", 1) == 3
    assert answer(forest, values, "last", 2) == 4


def test_a_beam_through_a_node_without_a_value_ranks_below_every_scored_beam():
    # u has no value (no label reached it); its child is perfect, but min/mean/product cannot score that path.
    spec = [(1, None, None, None), (2, 1, None, None), (3, 2, 1.0, 1), (4, 1, 0.1, None), (5, 4, 0.2, 0)]
    forest, values = build(spec)
    for aggregation in ("min", "mean", "product"):
        assert answer(forest, values, aggregation, 2) == 5
    assert answer(forest, values, "last", 2) == 3  # last only needs the last node's value
    assert answer(forest, values, "last", 1) == 5  # one beam: w (0.1) beats the unscored u at the first step


def test_every_tree_is_searched_on_its_own():
    spec = [
        (1, None, None, None),
        (2, 1, 0.2, 0),
        (3, 1, 0.8, 1),
        (4, None, None, None),
        (5, 4, 0.9, 0),
        (6, 4, 0.1, 1),
    ]
    forest, values = build(spec)
    ranks = score_ranks(path_scores(forest, values, "last"))
    answers = beam_search(forest, ranks, 1, forest.roots)
    assert forest.ids[answers].tolist() == [3, 5]


def test_zero_beams_is_refused():
    forest, values = build([(1, None, None, None), (2, 1, 0.5, 1)])
    with pytest.raises(ValueError):
        beam_search(forest, score_ranks(values), 0, forest.roots)
