"""Verdicts of labels and Monte-Carlo values, and the two consensus rules."""

from __future__ import annotations

import pytest

from rollouts.labelling.consensus import (
    DISAGREE,
    FIRST_ERROR_UNKNOWN,
    FIRST_ERRORS_DIFFER,
    NO_VERDICT,
    RULE_FIRST_ERROR,
    Consensus,
    NoConsensus,
    consensus,
    label_verdicts,
    value_verdicts,
)

T, F, N = True, False, None


def test_label_codes_read_as_verdicts_with_neutral_as_right_and_unrated_steps_as_none():
    assert label_verdicts([1, 2, 0]) == [T, T, F]
    assert label_verdicts([1, 0, 2], {"rated_steps": 2}) == [T, F, N]


def test_a_prms_rewards_are_right_from_0_5():
    assert label_verdicts([0.9, 0.5, 0.49]) == [T, T, F]


def test_monte_carlo_values_are_right_above_zero():
    assert value_verdicts([0.25, 0.0, None]) == [T, F, N]


def test_the_steps_rule_keeps_the_agreed_prefix():
    assert consensus([[T, T, F], [T, T, F]]) == Consensus(labels=[T, T, F], first_error=2)
    assert consensus([[T, F, T], [T, T, T]]) == Consensus(labels=[T], first_error=-1)
    assert consensus([[T, T, N], [T, T, T]]) == Consensus(labels=[T, T], first_error=-1)
    assert consensus([[T, F, F], [T, F, F], [T, F, T]]).labels == [T, F]


def test_the_steps_rule_keeps_nothing_when_the_first_step_is_not_agreed():
    assert consensus([[F, T], [T, T]]) == NoConsensus(DISAGREE)
    assert consensus([[N, N], [T, T]]) == NoConsensus(NO_VERDICT)


def test_the_first_error_rule_keeps_rollouts_whose_sources_name_the_same_first_error():
    assert consensus([[T, T, F], [T, T, F]], rule=RULE_FIRST_ERROR) == Consensus(labels=[T, T, F], first_error=2)
    # What follows the agreed first error is not kept, so it may differ.
    assert consensus([[T, F, T], [T, F, F]], rule=RULE_FIRST_ERROR).labels == [T, F]
    assert consensus([[T, T], [T, T]], rule=RULE_FIRST_ERROR) == Consensus(labels=[T, T], first_error=-1)
    assert consensus([[T, F], [F, T]], rule=RULE_FIRST_ERROR) == NoConsensus(FIRST_ERRORS_DIFFER)
    assert consensus([[T, N], [T, T]], rule=RULE_FIRST_ERROR) == NoConsensus(FIRST_ERROR_UNKNOWN)


def test_consensus_refuses_malformed_voters():
    with pytest.raises(ValueError, match="at least one voter"):
        consensus([])
    with pytest.raises(ValueError, match="one verdict per step"):
        consensus([[T], [T, T]])
    with pytest.raises(ValueError, match="rule must be"):
        consensus([[T]], rule="majority")
