"""Cohen's and Fleiss' kappa and first-error agreement against figures computed by hand (and the textbook examples)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rollouts.labelling.agreement import (
    LabelRatings,
    agreement_report,
    cohen_kappa,
    first_error_agreement,
    fleiss_kappa,
    label_first_error,
    source_agreement,
)


def test_cohens_kappa_of_the_textbook_yes_no_example_is_0_4():
    # 50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15. p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    result = cohen_kappa(pairs)
    assert result.observed == pytest.approx(0.7)
    assert result.expected == pytest.approx(0.5)
    assert result.kappa == pytest.approx(0.4)
    assert result.items == 50


def test_cohens_kappa_on_three_ratings_by_hand():
    # p_o = 6/10; A's shares (+1, 0, -1) = 5, 3, 2; B's = 4, 4, 2; p_e = (20 + 12 + 4) / 100 = 0.36.
    pairs = [(1, 1)] * 3 + [(0, 0)] * 2 + [(-1, -1)] + [(1, 0)] * 2 + [(0, -1)] + [(-1, 1)]
    assert cohen_kappa(pairs).kappa == pytest.approx((0.6 - 0.36) / (1 - 0.36)) == pytest.approx(0.375)


def test_cohens_kappa_is_undefined_when_every_rating_is_the_same_and_zero_without_items():
    same = cohen_kappa([(1, 1)] * 4)
    assert same.kappa is None and same.observed == 1.0
    empty = cohen_kappa([])
    assert empty.kappa is None and empty.items == 0


FLEISS_1971 = [  # Wikipedia's worked example: 10 items, 14 raters each, 5 categories; kappa = 0.210
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_of_the_worked_example_is_0_210():
    items = [[category for category, n in enumerate(row) for _ in range(n)] for row in FLEISS_1971]
    result = fleiss_kappa(items)
    assert result.observed == pytest.approx(0.378, abs=5e-4)
    assert result.expected == pytest.approx(0.213, abs=5e-4)
    assert result.kappa == pytest.approx(0.210, abs=5e-4)
    assert result.items == 10


def test_fleiss_kappa_of_three_raters_by_hand():
    # P_i = 1, 1/3, 1, 0 -> P = 7/12; shares of +1, 0, -1 = 6/12, 5/12, 1/12 -> P_e = 62/144; kappa = 22/82 = 11/41.
    items = [[1, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, -1]]
    assert fleiss_kappa(items).kappa == pytest.approx(float(Fraction(11, 41)))


def test_fleiss_kappa_with_different_numbers_of_ratings_per_item_and_single_ratings_left_out():
    # P_i = 1, 1/3 -> P = 2/3; shares 4/5, 1/5 -> P_e = 17/25; kappa = (2/3 - 17/25) / (8/25) = -1/24.
    result = fleiss_kappa([[1, 1], [1, 1, 0], [0]])
    assert result.items == 2
    assert result.kappa == pytest.approx(-1 / 24)
    assert fleiss_kappa([[1], [0]]).kappa is None


def test_the_first_error_of_a_label_and_none_when_it_stopped_early_without_one():
    assert label_first_error([True, True, False, None]) == 2
    assert label_first_error([True, True, True]) == -1
    assert label_first_error([True, None, None]) is None


def test_first_error_agreement_counts_pairs_and_unanimous_rollouts():
    result = first_error_agreement([[1, 1, 2], [0, None], [-1, -1]])
    assert (result.pairs, result.agreeing_pairs) == (4, 2)
    assert (result.rollouts, result.unanimous_rollouts) == (2, 1)
    assert result.pair_rate == 0.5 and result.unanimous_rate == 0.5
    assert first_error_agreement([]).pair_rate is None


def labels_of(rollout_id, **by_labeller):
    out = []
    for name, ratings in by_labeller.items():
        first = next((i for i, r in enumerate(ratings) if r == -1), -1)
        out.append(LabelRatings(rollout_id=rollout_id, labeller=name, ratings=ratings, first_error=first))
    return out


def test_the_agreement_report_of_three_labellers_by_hand():
    labels = labels_of(1, ann=[1, 1, -1], bob=[1, 0, -1], cat=[1, 1, 1]) + labels_of(2, ann=[1, -1], bob=[1, -1])
    report = agreement_report(labels)
    pairs = {(pair.a, pair.b): pair for pair in report.pairs}
    assert [(p.a, p.b) for p in report.pairs] == [("ann", "bob"), ("ann", "cat"), ("bob", "cat")]
    # ann·bob: 5 steps, 4 alike; ann (+1: 3, -1: 2), bob (+1: 2, 0: 1, -1: 2) -> p_e = 10/25; kappa = 0.4 / 0.6.
    assert pairs[("ann", "bob")].steps.kappa == pytest.approx((0.8 - 0.4) / 0.6)
    assert pairs[("ann", "bob")].rollouts == 2
    assert pairs[("ann", "bob")].first_error.pair_rate == 1.0
    # ann·cat: 2 of 3 alike, p_e = 6/9: kappa 0. bob·cat: 1 of 3 alike, p_e = 3/9: kappa 0.
    assert pairs[("ann", "cat")].steps.kappa == pytest.approx(0.0)
    assert pairs[("bob", "cat")].steps.kappa == pytest.approx(0.0)
    assert pairs[("ann", "cat")].first_error.pair_rate == 0.0
    # Fleiss over 5 steps: P = 11/15, shares 8/13, 1/13, 4/13 -> P_e = 81/169.
    expected = (Fraction(11, 15) - Fraction(81, 169)) / (1 - Fraction(81, 169))
    assert report.fleiss.kappa == pytest.approx(float(expected))
    assert report.fleiss.items == 5
    assert (report.first_error.pairs, report.first_error.agreeing_pairs) == (4, 2)
    assert report.rollouts == 2


def test_unrated_steps_and_single_labels_do_not_count_in_the_report():
    labels = labels_of(1, ann=[1, -1, None], bob=[1, -1, 1]) + labels_of(2, ann=[1])
    report = agreement_report(labels)
    assert report.fleiss.items == 2
    assert report.pairs[0].steps.items == 2
    assert report.rollouts == 1


def test_source_agreement_compares_right_and_wrong_steps_and_first_errors():
    result = source_agreement(
        "judge",
        [
            (1, [True, True, False], [True, True, False]),
            (2, [True, False, None], [True, True, True]),
        ],
    )
    # 5 steps both judged, 4 alike; ours right 3 / wrong 2, theirs right 4 / wrong 1: p_e = (12 + 2) / 25.
    assert result.steps.items == 5
    assert result.steps.kappa == pytest.approx((0.8 - 14 / 25) / (1 - 14 / 25))
    assert (result.first_error.pairs, result.first_error.agreeing_pairs) == (2, 1)
    assert (result.rollouts, result.comparisons) == (2, 2)
