"""Accuracy by N and the baselines on hand-built forests with known figures, tokens per tree included."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from forests.metrics.forest import forest_arrays
from forests.metrics.search import format_report, parse_num_beam_values, search_report
from forests.metrics.stats import Z95
from forests.metrics.values import labelled_values

# Tree 1 (ground truth 1): leaf 3 predicts 1 (two identical rollouts), leaf 4 predicts 0, leaf 6 predicts 0 (below
# node 5), leaf 7 has no prediction. Tree 10 (ground truth 0): one rollout predicting 1. Tree 20: no rollout.
NODES = [
    (1, None, 0, False, None, 1),
    (2, 1, 1, False, None, None),
    (3, 2, 2, True, 1, None),
    (4, 2, 2, True, 0, None),
    (5, 1, 1, False, None, None),
    (6, 5, 2, True, 0, None),
    (7, 1, 1, True, None, None),
    (10, None, 0, False, None, 0),
    (11, 10, 1, True, 1, None),
    (20, None, 0, False, None, 0),
]
ROLLOUTS = [
    (100, 3, 1, 100),
    (101, 3, 1, 100),
    (102, 4, 0, 200),
    (103, 6, 0, None),
    (104, 7, None, 300),
    (110, 11, 1, 50),
]


def report(values=None, aggregation="last", beams=(1, 2)):
    forest = forest_arrays(NODES, ROLLOUTS)
    if values is None:
        values = labelled_values(forest).value
    return forest, search_report(
        forest,
        values,
        forest_name="f",
        value_function_option="labelled",
        aggregation=aggregation,
        num_beam_values=list(beams),
    )


def test_only_trees_with_rollouts_count():
    _, result = report()
    assert result.num_trees == 2
    assert [r.num_trees for r in result.results] == [2, 2]


def test_beam_search_with_exact_values_finds_the_correct_leaf():
    _, result = report()
    # Tree 1: node 2 (2 of 3 rollouts correct) beats 5 and 7 (none); then leaf 3 (2 of 2). Tree 10: only a wrong answer.
    assert [r.accuracy for r in result.results] == [0.5, 0.5]
    assert result.results[0].ci95 == pytest.approx(Z95 * np.std([1, 0], ddof=1) / math.sqrt(2))


def test_the_baselines_on_the_same_trees():
    _, result = report()
    b = {name: baseline.accuracy for name, baseline in result.baselines.items()}
    assert b["random_rollout"] == pytest.approx((2 / 5 + 0) / 2)  # 2 of 5 rollouts right in tree 1
    assert b["majority_vote"] == pytest.approx((0.5 + 0) / 2)  # 1 and 0 both have two votes: a coin flip
    assert b["best_of_n"] == pytest.approx((1 + 0) / 2)  # exact leaf values: the two correct rollouts score 1
    assert b["weighted_best_of_n"] == pytest.approx((1 + 0) / 2)
    assert b["oracle"] == pytest.approx((1 + 0) / 2)
    assert all(baseline.num_trees == 2 for baseline in result.baselines.values())


def test_best_of_n_and_weighted_best_of_n_differ_as_they_should():
    forest = forest_arrays(NODES, ROLLOUTS)
    values = np.full(forest.size, np.nan)
    for node_id, value in [(2, 0.5), (3, 0.6), (4, 0.9), (5, 0.5), (6, 0.1), (7, 0.3), (11, 0.4)]:
        values[forest.index_of(node_id)] = value
    _, result = report(values)
    b = {name: baseline.accuracy for name, baseline in result.baselines.items()}
    # Tree 1, last: best single rollout is leaf 4 (0.9, predicts 0: wrong); summed, answer 1 has 0.6 + 0.6 = 1.2
    # against 0.9 + 0.1 = 1.0 for answer 0: right.
    assert b["best_of_n"] == 0.0
    assert b["weighted_best_of_n"] == 0.5


def test_tied_best_scores_give_the_expected_score_of_a_random_pick():
    forest = forest_arrays(NODES, ROLLOUTS)
    values = np.full(forest.size, 0.5)
    _, result = report(values)
    # Every rollout of tree 1 ties: a random pick is right 2 times in 5.
    assert result.baselines["best_of_n"].accuracy == pytest.approx((2 / 5 + 0) / 2)


def test_tokens_per_tree_where_usage_was_recorded():
    _, result = report()
    assert result.rollouts_per_tree == 3.0  # 5 and 1
    assert result.tokens_coverage == pytest.approx(5 / 6)
    every = result.baselines["majority_vote"]
    assert every.rollouts_per_tree == 3.0
    assert every.tokens_per_tree == pytest.approx((700 + 50) / 2)
    one = result.baselines["random_rollout"]
    assert one.rollouts_per_tree == 1.0
    assert one.tokens_per_tree == pytest.approx((700 / 4 + 50) / 2)


def test_tokens_are_none_when_no_rollout_recorded_usage():
    forest = forest_arrays(NODES, [(r[0], r[1], r[2], None) for r in ROLLOUTS])
    result = search_report(
        forest, labelled_values(forest).value, forest_name="f", value_function_option="labelled",
        aggregation="last", num_beam_values=[1],
    )  # fmt: skip
    assert result.baselines["oracle"].tokens_per_tree is None
    assert result.tokens_coverage == 0.0


def test_the_report_has_the_documented_json_shape_and_prints_a_table():
    _, result = report()
    data = result.as_dict()
    assert {"forest_name", "value_function_option", "aggregation", "results", "baselines"} <= set(data)
    assert data["results"][0] == {"num_beams": 1, "accuracy": 0.5, "ci95": pytest.approx(Z95 * 0.5), "num_trees": 2}
    assert set(data["baselines"]) == {"random_rollout", "majority_vote", "best_of_n", "weighted_best_of_n", "oracle"}
    table = format_report(result)
    assert re.search(r"^ +1 +0\.500 ± 0\.980 +2$", table, re.M)  # N, accuracy ± CI, trees
    assert "oracle (any rollout correct)" in table


def test_num_beam_values_parse_to_sorted_distinct_positive_integers():
    assert parse_num_beam_values("5,1, 5") == [1, 5]
    for bad in ("0", "1,x", "", "-1", "1.5"):
        with pytest.raises(ValueError):
            parse_num_beam_values(bad)
