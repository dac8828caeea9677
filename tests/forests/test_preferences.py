"""Sibling preference pairs and export paths on a hand-built forest (pure: no database)."""

from __future__ import annotations

import numpy as np
import pytest

from forests.metrics.forest import forest_arrays
from forests.metrics.preferences import (
    MAX_PAIRS_INVALID,
    MIN_MARGIN_INVALID,
    PATHS_UNKNOWN,
    PREFERENCE_CHOSEN,
    PREFERENCE_NEUTRAL,
    ancestors,
    path_table,
    sibling_pairs,
)

# root 1 with children 2 (0.9), 3 (0.5), 4 (0.5), 5 (no value); node 2 with children 6 (1.0) and 7 (1.0).
NODES = [
    (1, None, 0, False, None, 1),
    (2, 1, 1, False, None, None),
    (3, 1, 1, True, 0, None),
    (4, 1, 1, True, 0, None),
    (5, 1, 1, False, None, None),
    (6, 2, 2, True, 1, None),
    (7, 2, 2, True, 1, None),
]
VALUES = {2: 0.9, 3: 0.5, 4: 0.5, 6: 1.0, 7: 1.0}


@pytest.fixture
def forest():
    return forest_arrays(NODES, [(10, 6, 1, None), (11, 6, 1, None), (12, 7, 1, None), (13, 3, 0, None)])


def values_of(forest) -> np.ndarray:
    values = np.full(forest.size, np.nan)
    for node_id, value in VALUES.items():
        values[forest.index_of(node_id)] = value
    return values


def as_ids(forest, pairs):
    return [
        (int(forest.ids[p.parent]), int(forest.ids[p.chosen]), int(forest.ids[p.rejected]), p.margin, p.preference)
        for p in pairs
    ]


def test_siblings_with_different_values_make_pairs_and_unvalued_ones_none(forest):
    pairs = as_ids(forest, sibling_pairs(forest, values_of(forest)))
    assert pairs == [
        (1, 2, 3, pytest.approx(0.4), PREFERENCE_CHOSEN),
        (1, 2, 4, pytest.approx(0.4), PREFERENCE_CHOSEN),
    ]


def test_neutral_pairs_mark_equal_siblings_2(forest):
    pairs = as_ids(forest, sibling_pairs(forest, values_of(forest), neutral=True))
    assert (1, 3, 4, 0.0, PREFERENCE_NEUTRAL) in pairs
    assert (2, 6, 7, 0.0, PREFERENCE_NEUTRAL) in pairs
    assert len(pairs) == 4


def test_min_margin_and_cap(forest):
    assert list(sibling_pairs(forest, values_of(forest), min_margin=0.5)) == []
    capped = as_ids(forest, sibling_pairs(forest, values_of(forest), neutral=True, max_pairs_per_node=1))
    assert [(p[0], p[1], p[2]) for p in capped] == [(1, 2, 3), (2, 6, 7)]  # decisive first; ties by node ids
    with pytest.raises(ValueError) as refused:
        list(sibling_pairs(forest, values_of(forest), min_margin=-1))
    assert str(refused.value) == MIN_MARGIN_INVALID.format(value=-1)
    with pytest.raises(ValueError) as refused:
        list(sibling_pairs(forest, values_of(forest), max_pairs_per_node=0))
    assert str(refused.value) == MAX_PAIRS_INVALID.format(value=0)


def test_distinct_paths_end_where_rollouts_end_and_per_rollout_paths_repeat_them(forest):
    distinct = path_table(forest, "distinct")
    assert forest.ids[distinct.leaf].tolist() == [3, 4, 6, 7]  # 4 is a leaf with no rollout row: it counts once
    assert distinct.rollouts.tolist() == [1, 1, 2, 1]
    every = path_table(forest, "rollouts")
    assert forest.ids[every.leaf].tolist() == [3, 4, 6, 6, 7]
    assert forest.rollout_id[every.rollout].tolist() == [13, -1, 10, 11, 12]
    with pytest.raises(ValueError) as refused:
        path_table(forest, "some")
    assert str(refused.value) == PATHS_UNKNOWN.format(modes="distinct, rollouts", paths="some")


def test_ancestors_are_flattened_root_side_first(forest):
    leaves = np.array([forest.index_of(6), forest.index_of(3)])
    offsets, nodes = ancestors(forest, leaves)
    assert offsets.tolist() == [0, 2, 3]
    assert forest.ids[nodes].tolist() == [2, 6, 3]
