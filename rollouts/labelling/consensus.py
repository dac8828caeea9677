"""Consensus of several sources on the steps of one rollout. Pure: no Django.

Every source gives a *verdict* per step: right (True), wrong (False) or none (None: it said nothing about the step).

- A label's values become verdicts through the domain's codes: a step is right when its value is at least 0.5, i.e.
  code 1 (preferred) and code 2 (neutral) are right and code 0 (not preferred) is wrong, as PRM800K's "neutral counts
  as positive" reading; a PRM's reward is right at 0.5 and above. A person's unrated steps
  (``attributes["rated_steps"]`` onwards) have no verdict.
- A forest's Monte-Carlo value becomes a verdict by hard estimation: right when the value is above 0, i.e. at least
  one rollout through the step reaches the ground truth (as in Math-Shepherd and Qwen's PRM work); a step with no
  value has no verdict.

Two rules select what is kept (consensus filtering, after Qwen's "The Lessons of Developing Process Reward Models in
Mathematical Reasoning", 2025):

- ``steps``: the steps where every source gives the same verdict, from the first step up to the first step where a
  source has none or they differ (a step's label only means something after the steps before it).
- ``first_error``: the whole rollout when every source names the same first wrong step (or none); kept up to and
  including that step, as the paper keeps samples whose error locations agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prmsite.core.domain import LABEL_VALUES, label_code_value
from prmsite.core.processbench import NO_ERROR
from rollouts.labelling.agreement import label_first_error

Verdicts = Sequence[bool | None]

# A label value (a code's value, or a PRM's reward) at or above this says the step is right.
RIGHT_AT_LEAST = 0.5
# Hard Monte-Carlo estimation: a step is right when its value is above this.
MC_RIGHT_ABOVE = 0.0

RULE_STEPS = "steps"
RULE_FIRST_ERROR = "first_error"
RULES = (RULE_STEPS, RULE_FIRST_ERROR)

# Why a rollout yields no record; the keys of an export's tally.
NO_VERDICT = "no_verdict"  # a source says nothing about the first step
DISAGREE = "disagree"  # the sources differ on the first step
FIRST_ERROR_UNKNOWN = "first_error_unknown"  # a source stopped early without naming a wrong step
FIRST_ERRORS_DIFFER = "first_errors_differ"
REASONS = {
    NO_VERDICT: "a source gives no verdict on the first step",
    DISAGREE: "the sources disagree on the first step",
    FIRST_ERROR_UNKNOWN: "a source stopped before the end without naming a wrong step",
    FIRST_ERRORS_DIFFER: "the sources name different first wrong steps",
}


def _is_code(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value in LABEL_VALUES


def label_verdicts(prm_output: Sequence[float | int], attributes: Mapping[str, Any] | None = None) -> list[bool | None]:
    """A label's verdict per step: codes (every value 0, 1 or 2) through their values, other numbers as rewards;
    steps from ``attributes["rated_steps"]`` on have none."""
    rated = (attributes or {}).get("rated_steps")
    if isinstance(rated, bool) or not isinstance(rated, int):
        rated = len(prm_output)
    coded = all(_is_code(value) for value in prm_output)
    verdicts: list[bool | None] = []
    for index, value in enumerate(prm_output):
        if index >= rated:
            verdicts.append(None)
            continue
        number = label_code_value(value) if coded else float(value)
        verdicts.append(number >= RIGHT_AT_LEAST)
    return verdicts


def value_verdicts(values: Sequence[float | None], *, right_above: float = MC_RIGHT_ABOVE) -> list[bool | None]:
    """Monte-Carlo verdicts: right when the value is above ``right_above``; None where a step has no value."""
    return [None if value is None else value > right_above for value in values]


@dataclass(frozen=True)
class Consensus:
    labels: list[bool]  # the agreed verdicts of the steps kept (a prefix of the rollout, never empty)
    first_error: int  # index of the first wrong step among them; NO_ERROR (-1) when none

    @property
    def steps(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class NoConsensus:
    reason: str  # a key of REASONS


def consensus(voters: Sequence[Verdicts], *, rule: str = RULE_STEPS) -> Consensus | NoConsensus:
    """What the ``voters`` (one verdict list per source or label, all of the rollout's length) agree on, by ``rule``."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    if not voters:
        raise ValueError("consensus needs at least one voter")
    steps = len(voters[0])
    if steps == 0 or any(len(voter) != steps for voter in voters):
        raise ValueError("every voter needs one verdict per step of the rollout")
    if rule == RULE_FIRST_ERROR:
        indices = {label_first_error(voter) for voter in voters}
        if None in indices:
            return NoConsensus(FIRST_ERROR_UNKNOWN)
        if len(indices) > 1:
            return NoConsensus(FIRST_ERRORS_DIFFER)
        (index,) = indices
        labels = [True] * steps if index == NO_ERROR else [True] * index + [False]
        return Consensus(labels=labels, first_error=index)
    labels: list[bool] = []
    for step in range(steps):
        verdicts = {voter[step] for voter in voters}
        if None in verdicts or len(verdicts) > 1:
            if not labels:
                return NoConsensus(NO_VERDICT if None in verdicts else DISAGREE)
            break
        labels.append(verdicts.pop())
    first = next((i for i, ok in enumerate(labels) if not ok), NO_ERROR)
    return Consensus(labels=labels, first_error=first)
