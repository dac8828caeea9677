"""Where labellers disagree, on hand-computed cases (rollouts.labelling.review, no database)."""

from __future__ import annotations

import pytest

from rollouts.labelling.review import (
    KIND_FIRST_ERROR,
    KIND_VERDICT,
    NOT_A_KIND,
    ReviewLabel,
    ReviewQueryInvalid,
    disagreement,
    disagreements,
    first_error_of,
    labeller_pairs,
    parse_kind,
    parse_pair,
)

N = None


def labels(rollout_id: int, **ratings) -> list[ReviewLabel]:
    return [ReviewLabel(rollout_id=rollout_id, labeller=who, ratings=r) for who, r in ratings.items()]


CASES = [
    # 1: a 0 against a +1: the ratings differ, the verdicts do not.
    *labels(1, ann=[1, 1, 1], bob=[1, 0, 1]),
    # 2: bob stops at his -1 on step 2, ann finds hers on step 3: steps 1-2 compared, step 2 in conflict.
    *labels(2, ann=[1, 1, -1], bob=[1, -1, N]),
    # 3: both rate every step; step 1 differs (first errors 2 and 1).
    *labels(3, ann=[1, -1], bob=[-1, -1]),
    # 4: agreement.
    *labels(4, ann=[1, 1], bob=[1, 1]),
    # 5: ann gave up after step 1: nothing compared differs and her first error is unknown.
    *labels(5, ann=[1, N, N], bob=[1, 1, 1]),
    # 6: three labellers: ratings differ on steps 2 and 3, verdicts on step 2 (cat's -1).
    *labels(6, ann=[1, 1, 1, 1], bob=[1, 1, 0, 1], cat=[1, -1, 1, 1]),
]


def test_one_rollouts_disagreement_by_hand():
    two = disagreement(2, labels(2, ann=[1, 1, -1], bob=[1, -1, N]))
    assert (two.steps, two.compared, two.rating_steps, two.verdict_steps) == (3, 2, (1,), (1,))
    assert two.first_errors == (("ann", 2), ("bob", 1))
    assert two.first_error_differs
    assert two.verdict_share == 0.5 and two.rating_share == 0.5
    six = disagreement(6, labels(6, cat=[1, -1, 1, 1], ann=[1, 1, 1, 1], bob=[1, 1, 0, 1]))
    assert six.labellers == ("ann", "bob", "cat")
    assert (six.compared, six.rating_steps, six.verdict_steps) == (4, (1, 2), (1,))
    assert (six.verdict_share, six.rating_share) == (0.25, 0.5)
    assert six.first_errors_described == [("ann", "none"), ("bob", "none"), ("cat", "step 2")]
    one = disagreement(1, labels(1, ann=[1, 1, 1], bob=[1, 0, 1]))
    assert one.rating_steps == (1,) and one.verdict_steps == () and not one.first_error_differs


def test_first_errors_of_a_label():
    assert first_error_of([1, 0, -1, N]) == 2
    assert first_error_of([1, 1]) == -1
    assert first_error_of([1, N]) is None  # stopped early without a -1: unknown


def test_the_list_holds_the_disagreements_most_first():
    found = disagreements(CASES)
    assert [d.rollout_id for d in found] == [2, 3, 6, 1]
    # 2 and 3 tie on every share and count (and both first errors differ): the lower id first.


def test_the_kinds_select_verdicts_or_first_errors():
    assert [d.rollout_id for d in disagreements(CASES, kind=KIND_VERDICT)] == [2, 3, 6]
    assert [d.rollout_id for d in disagreements(CASES, kind=KIND_FIRST_ERROR)] == [2, 3, 6]
    zero_only = labels(7, ann=[1, 0], bob=[1, 1])
    assert [d.rollout_id for d in disagreements(zero_only)] == [7]
    assert disagreements(zero_only, kind=KIND_VERDICT) == []
    same_error_other_steps = labels(8, ann=[-1, 1], bob=[-1, -1])  # first errors agree, step 2 does not
    assert disagreements(same_error_other_steps, kind=KIND_FIRST_ERROR) == []
    assert [d.verdict_steps for d in disagreements(same_error_other_steps, kind=KIND_VERDICT)] == [(1,)]


def test_a_pair_keeps_only_its_two_labels_of_the_rollouts_both_labelled():
    ann_bob = disagreements(CASES, pair=("ann", "bob"))
    assert [d.rollout_id for d in ann_bob] == [2, 3, 1, 6]
    assert ann_bob[-1].labellers == ("ann", "bob") and ann_bob[-1].rating_steps == (2,)
    assert [d.rollout_id for d in disagreements(CASES, pair=("ann", "cat"))] == [6]
    assert disagreements(CASES, pair=("ann", "cat"), kind=KIND_VERDICT)[0].verdict_steps == (1,)
    assert disagreements(CASES, pair=("bob", "dan")) == []


def test_a_labeller_counts_once_per_rollout():
    twice = [*labels(9, ann=[1, 1], bob=[1, 1]), ReviewLabel(rollout_id=9, labeller="ann", ratings=[-1, -1])]
    assert disagreements(twice) == []


def test_labeller_pairs():
    assert labeller_pairs(CASES) == [("ann", "bob"), ("ann", "cat"), ("bob", "cat")]


def test_the_query_words():
    assert parse_kind(None) == "any" and parse_kind("verdict") == "verdict"
    with pytest.raises(ReviewQueryInvalid, match="kind must be one of any, verdict, first_error"):
        parse_kind("most")
    assert parse_pair("") is None
    assert parse_pair(" bob , ann") == ("ann", "bob")
    for bad in ("ann", "ann,ann", "ann,bob,cat", "ann,"):
        with pytest.raises(ReviewQueryInvalid, match="pair must name two different labellers"):
            parse_pair(bad)
    with pytest.raises(ReviewQueryInvalid, match=NOT_A_KIND.split("{")[0]):
        disagreements(CASES, kind="all")
