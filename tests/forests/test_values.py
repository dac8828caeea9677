"""Exact node values: the share of the leaves below a node whose prediction is the ground truth."""

from __future__ import annotations

import random

import pytest

from forests.values import NodeValue, node_values

# root 1 ─ 2 ─ 3 (leaf, predicts 1: correct)
#        │   └ 4 (leaf, predicts 0: wrong)
#        └ 5 (leaf with no parsable prediction: wrong) ─ 6 (leaf, predicts 1: correct)
#        └ 7 (no leaf below: no value)
ROWS = [
    (1, None, False, None),
    (2, 1, False, None),
    (3, 2, True, 1),
    (4, 2, True, 0),
    (5, 1, True, None),
    (6, 5, True, 1),
    (7, 1, False, None),
]


def test_values_count_correct_leaves_below_each_node():
    values = node_values(ROWS, ground_truth=1)
    assert values[1] == NodeValue(leaves=4, correct=2)
    assert values[2] == NodeValue(leaves=2, correct=1)
    assert values[2].value == 0.5
    assert values[3].value == 1.0
    assert values[4].value == 0.0


def test_a_leaf_without_a_prediction_counts_as_wrong_and_an_internal_leaf_counts_too():
    values = node_values(ROWS, ground_truth=1)
    assert values[5] == NodeValue(leaves=2, correct=1)  # itself (wrong) and node 6 (correct)
    assert values[6] == NodeValue(leaves=1, correct=1)


def test_a_node_with_no_leaf_below_has_no_value():
    assert node_values(ROWS, ground_truth=1)[7].value is None


def test_values_do_not_depend_on_row_order():
    shuffled = ROWS[:]
    random.Random(4).shuffle(shuffled)
    assert node_values(shuffled, ground_truth=0) == node_values(ROWS, ground_truth=0)


def test_values_with_another_ground_truth():
    values = node_values(ROWS, ground_truth=0)
    assert values[1] == NodeValue(leaves=4, correct=1)


def test_a_deep_chain_is_computed_without_recursion():
    depth = 50_000
    rows = [(1, None, False, None)] + [(i, i - 1, i == depth, 1 if i == depth else None) for i in range(2, depth + 1)]
    values = node_values(rows, ground_truth=1)
    assert values[1] == NodeValue(leaves=1, correct=1)


def test_rows_that_are_not_a_whole_tree_are_refused():
    with pytest.raises(ValueError, match="not among the rows"):
        node_values([(1, None, False, None), (3, 2, True, 1)], ground_truth=1)


def test_a_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        node_values([(1, None, False, None), (2, 3, False, None), (3, 2, True, 1)], ground_truth=1)
