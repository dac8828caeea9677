"""Exact node values count rollouts, not leaves; label values average step outputs; values carry Wilson intervals."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from forests.metrics.forest import (
    DEPTH_BROKEN,
    NO_ROLLOUT_ROW,
    NODE_TWICE,
    PARENT_MISSING,
    ROLLOUT_NODE_MISSING,
    forest_arrays,
)
from forests.metrics.stats import accuracy_of, wilson_interval
from forests.metrics.values import NodeValues, ValueFunction, label_values, labelled_values

# Ground truth 1.
# root 1 ─ 2 ─ 3 (leaf: 3 identical rollouts predicting 1, correct)
#        │   └ 4 (leaf: 1 rollout predicting 0, wrong)
#        ├ 5 (leaf, 1 rollout with no prediction: wrong) ─ 6 (leaf, no rollout row, predicts 1: counts once, correct)
#        └ 7 (no rollout below: no value)
NODES = [
    (1, None, 0, False, None, 1),
    (2, 1, 1, False, None, None),
    (3, 2, 2, True, 1, None),
    (4, 2, 2, True, 0, None),
    (5, 1, 1, True, None, None),
    (6, 5, 2, True, 1, None),
    (7, 1, 1, False, None, None),
]
ROLLOUTS = [(10, 3, 1, 100), (11, 3, 1, 120), (12, 3, 1, None), (13, 4, 0, 90), (14, 5, None, 50)]


def values_by_id(nodes=NODES, rollouts=ROLLOUTS):
    forest = forest_arrays(nodes, rollouts)
    return forest, labelled_values(forest).by_id(forest.ids)


def test_a_leaf_reached_by_identical_rollouts_counts_each_of_them():
    _, values = values_by_id()
    assert (values[3].count, values[3].correct) == (3, 3)
    assert (values[2].count, values[2].correct) == (4, 3)
    assert values[2].value == 0.75
    assert values[4].value == 0.0


def test_the_root_counts_every_rollout_of_the_tree():
    _, values = values_by_id()
    assert (values[1].count, values[1].correct) == (6, 4)  # 3 + 1 + 1 rollouts, plus one for the row-less leaf


def test_a_leaf_without_a_rollout_row_counts_once_with_its_own_prediction():
    forest, values = values_by_id()
    assert (values[6].count, values[6].correct) == (1, 1)
    index = forest.index_of(6)
    assert NO_ROLLOUT_ROW in forest.rollout_id[forest.rollout_node == index]


def test_a_missing_prediction_is_wrong_and_a_rollout_ending_inside_a_path_counts_there():
    _, values = values_by_id()
    assert (values[5].count, values[5].correct) == (2, 1)  # its own rollout (no prediction) and node 6's


def test_a_node_no_rollout_reaches_has_no_value():
    _, values = values_by_id()
    assert values[7].count == 0 and values[7].value is None and values[7].low is None


def test_the_rollouts_prediction_is_what_is_judged_not_the_leafs():
    # Node 3 says 1, but one rollout ending there parsed to 0: that rollout is wrong.
    _, values = values_by_id(rollouts=[(10, 3, 1, None), (11, 3, 0, None)])
    assert (values[3].count, values[3].correct) == (2, 1)


def test_values_do_not_depend_on_row_order():
    shuffled_nodes, shuffled_rollouts = NODES[:], ROLLOUTS[:]
    random.Random(4).shuffle(shuffled_nodes)
    random.Random(5).shuffle(shuffled_rollouts)
    assert values_by_id(shuffled_nodes, shuffled_rollouts)[1] == values_by_id()[1]


def test_several_trees_keep_their_own_ground_truth():
    other = [(20, None, 0, False, None, 0), (21, 20, 1, True, 0, None), (22, 20, 1, True, 1, None)]
    _, values = values_by_id(NODES + other, ROLLOUTS)
    assert (values[20].count, values[20].correct) == (2, 1)
    assert (values[21].correct, values[22].correct) == (1, 0)


def test_a_deep_chain_is_computed_without_recursion():
    depth = 50_000
    nodes = [(1, None, 0, False, None, 1)] + [
        (i, i - 1, i - 1, i == depth, 1 if i == depth else None, None) for i in range(2, depth + 1)
    ]
    _, values = values_by_id(nodes, [])
    assert (values[1].count, values[1].correct) == (1, 1)


def test_rows_that_are_not_whole_trees_are_refused():
    with pytest.raises(ValueError) as refused:
        forest_arrays([(1, None, 0, False, None, 1), (3, 2, 1, True, 1, None)])
    assert str(refused.value) == PARENT_MISSING.format(node=3, parent=2)
    with pytest.raises(ValueError) as refused:
        forest_arrays([(1, None, 0, False, None, 1), (2, 3, 1, False, None, None), (3, 2, 2, True, 1, None)])
    assert str(refused.value) == DEPTH_BROKEN.format(node=2)
    with pytest.raises(ValueError) as refused:
        forest_arrays([(1, None, 0, False, None, 1)], [(5, 99, 1, None)])
    assert str(refused.value) == ROLLOUT_NODE_MISSING.format(rollout=5, node=99)
    with pytest.raises(ValueError) as refused:
        forest_arrays([(1, None, 0, False, None, 1), (1, None, 0, False, None, 1)])
    assert str(refused.value) == NODE_TWICE.format(node=1)


def test_label_values_average_every_output_reaching_a_step_node():
    forest = forest_arrays(NODES, ROLLOUTS)
    leaf3, leaf4, leaf6 = forest.index_of(3), forest.index_of(4), forest.index_of(6)
    values = label_values(forest, [(leaf3, [0.8, 0.6]), (leaf4, [0.4, 0.2]), (leaf6, [0.5, 1.0, 7.0])])
    by_id = values.by_id(forest.ids)
    assert by_id[2].count == 2 and by_id[2].value == pytest.approx(0.6)  # step 1 of two labels
    assert by_id[3].value == pytest.approx(0.6)
    assert by_id[4].value == pytest.approx(0.2)
    assert by_id[5].value == 0.5 and by_id[6].value == 1.0  # the third output lies beyond the leaf: ignored
    assert by_id[1].count == 0 and by_id[7].count == 0  # roots and unreached nodes get nothing


def test_value_function_options_parse_or_say_what_is_allowed():
    assert ValueFunction.parse("labelled") == ValueFunction(kind="labelled")
    assert ValueFunction.parse("prm:v2") == ValueFunction(kind="prm", version="v2")
    assert str(ValueFunction.parse("labels:gpt-judge-1")) == "labels:gpt-judge-1"
    for bad in ("exact", "prm:", "labels", ""):
        with pytest.raises(ValueError, match="labelled, prm:VERSION"):
            ValueFunction.parse(bad)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson, no continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
    ],
)
def test_wilson_intervals_match_published_figures(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_of_nothing_is_none_and_one_of_one_is_wide():
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(1, 1)
    assert high == 1.0 and low == pytest.approx(0.2065, abs=5e-5)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_every_labelled_value_carries_its_interval():
    _, values = values_by_id()
    assert (values[2].low, values[2].high) == pytest.approx(wilson_interval(3, 4))


def test_accuracy_interval_is_196_standard_errors_across_trees():
    scores = [1, 0, 1, 1, 0.5]
    result = accuracy_of(scores)
    assert result.accuracy == pytest.approx(0.7)
    assert result.ci95 == pytest.approx(1.959963984540054 * np.std(scores, ddof=1) / math.sqrt(5))
    assert accuracy_of([1]).ci95 is None and accuracy_of([]).accuracy is None


def test_a_forest_without_rollouts_has_float_values_and_no_value_anywhere():
    # A freshly seeded tree: a root alone, no rollout. numpy's bincount of an empty input with weights is an int64
    # array; NodeValues promises float64, and by_id must not call float methods on ints (issue 17, item 1).
    forest = forest_arrays([(1, None, 0, False, None, 1), (2, None, 0, False, None, 0)], [])
    node_values = labelled_values(forest)
    assert node_values.count.dtype == np.float64 and node_values.total.dtype == np.float64
    values = node_values.by_id(forest.ids)
    assert values[1].count == 0 and values[1].value is None and values[1].low is None
    assert values[2].correct == 0


def test_by_id_accepts_integer_arrays():
    values = NodeValues(count=np.array([2, 0]), total=np.array([1, 0])).by_id(np.array([7, 8]))
    assert (values[7].count, values[7].correct, values[7].value) == (2, 1, 0.5)
    assert values[8].value is None
