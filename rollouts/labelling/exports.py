"""The consensus set of a scheme: the steps where the chosen sources agree, as ``stepwise`` records.

Sources: the scheme's own labels (always; a rollout needs ``min_labels`` of them, by default the scheme's K, and every
label is a voter), optionally the forest's Monte-Carlo values (hard estimation) and the labels of other versions (an
AI judge's scheme, a PRM; each of their labels a voter). The rule (``consensus.RULES``) decides what is kept. A
rollout any of the scheme's labellers flagged as a bad problem is left out. With ``gold_min_accuracy``, the labels of
labellers whose gold step accuracy is below it (over ``gold_min_answers`` gold answers or more) are left out first, as
if never given (``gold``).

With ``adjudicated_first``, a rollout staff adjudicated (``Adjudication``, the review page) exports the adjudicated
label in place of the consensus of its labels: the adjudication is its only source (``sources`` is
``["adjudication"]``), by the same rule, whatever the labels, their number or their flags; records then carry
``adjudicated`` (true or false).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rollouts.labelling.consensus import (
    REASONS,
    RULE_STEPS,
    RULES,
    Consensus,
    consensus,
    label_verdicts,
    value_verdicts,
)
from rollouts.labelling.gold import GOLD_MIN_ANSWERS_DEFAULT, labellers_below_gold
from rollouts.labelling.stats import ROLLOUTS_PER_QUERY, LabelRow, label_rows
from rollouts.labelling.step_values import rollout_mc_values
from rollouts.labelling.stepwise import stepwise_write
from rollouts.models import Adjudication, LabellingScheme, Rollout

MC_SOURCE_NAME = "mc"  # how the Monte-Carlo values are named in a record's sources
GOLD_ACCURACY_RANGE = "gold_min_accuracy is a share from 0 to 1"
GOLD_ANSWERS_RANGE = "gold_min_answers must be at least 1"
ADJUDICATION_SOURCE_NAME = "adjudication"  # the source of a record taken from an adjudicated label

TOO_FEW_LABELS = "too_few_labels"
BAD_PROBLEM = "bad_problem"
NO_MC_VALUES = "no_mc_values"
MISSING_VERSION = "missing_version"
SKIP_REASONS = {
    **REASONS,
    TOO_FEW_LABELS: "fewer labels of the scheme than asked for",
    BAD_PROBLEM: "a labeller flagged the problem as bad",
    NO_MC_VALUES: "not in a forest, so no Monte-Carlo values",
    MISSING_VERSION: "a chosen version has no label of the rollout",
}


@dataclass(frozen=True)
class ConsensusOptions:
    mc: bool = False  # the forest's Monte-Carlo values are a source
    versions: tuple[str, ...] = ()  # other versions whose labels are sources
    rule: str = RULE_STEPS
    min_labels: int | None = None  # labels of the scheme a rollout needs (default: the scheme's K)
    # Gold checks: leave out the labels of labellers whose gold step accuracy is below this (None: keep everyone) ...
    gold_min_accuracy: float | None = None
    gold_min_answers: int = GOLD_MIN_ANSWERS_DEFAULT  # ... over at least this many gold answers
    adjudicated_first: bool = False  # a rollout with an adjudication exports it in place of its labels' consensus

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, not {self.rule!r}")
        if self.min_labels is not None and self.min_labels < 1:
            raise ValueError("min_labels must be at least 1")
        if self.gold_min_accuracy is not None and not 0.0 <= self.gold_min_accuracy <= 1.0:
            raise ValueError(GOLD_ACCURACY_RANGE)
        if self.gold_min_answers < 1:
            raise ValueError(GOLD_ANSWERS_RANGE)

    def sources(self, scheme: LabellingScheme) -> list[str]:
        return [scheme.prm_version, *([MC_SOURCE_NAME] if self.mc else []), *self.versions]


@dataclass
class ConsensusTally:
    rollouts: int = 0  # rollouts of the scheme considered
    records: int = 0
    steps: int = 0  # steps kept, over all records
    skipped: Counter = field(default_factory=Counter)
    labellers_left_out: list[str] = field(default_factory=list)  # below the gold accuracy asked for
    labels_left_out: int = 0  # their labels
    adjudicated: int = 0  # records taken from an adjudicated label (adjudicated_first)

    def skipped_described(self) -> list[tuple[str, str, int]]:
        return [(key, SKIP_REASONS.get(key, key), n) for key, n in sorted(self.skipped.items())]


def consensus_records(
    *, scheme: LabellingScheme, options: ConsensusOptions
) -> tuple[list[dict[str, Any]], ConsensusTally]:
    """The consensus records of ``scheme`` (ascending rollout id) and what was kept and left out."""
    tally = ConsensusTally()
    min_labels = options.min_labels or scheme.labels_per_rollout
    ours: dict[int, list[LabelRow]] = defaultdict(list)
    if options.gold_min_accuracy is not None:
        tally.labellers_left_out = labellers_below_gold(
            scheme=scheme, min_accuracy=options.gold_min_accuracy, min_answers=options.gold_min_answers
        )
    left_out = set(tally.labellers_left_out)
    for label in label_rows(prm_version=scheme.prm_version):
        if label.labeller in left_out:
            tally.labels_left_out += 1
            continue
        ours[label.rollout_id].append(label)
    adjudicated = _adjudicated_verdicts(scheme) if options.adjudicated_first else {}
    from_adjudication: dict[int, Consensus] = {}
    candidates: dict[int, list[LabelRow]] = {}
    for rollout_id in sorted(set(ours) | set(adjudicated)):
        tally.rollouts += 1
        group = ours[rollout_id]
        if rollout_id in adjudicated:
            decided = consensus([adjudicated[rollout_id]], rule=options.rule)
            if isinstance(decided, Consensus):
                from_adjudication[rollout_id] = decided
            else:
                tally.skipped[decided.reason] += 1
        elif len(group) < min_labels:
            tally.skipped[TOO_FEW_LABELS] += 1
        elif any(label.bad_problem for label in group):
            tally.skipped[BAD_PROBLEM] += 1
        else:
            candidates[rollout_id] = group
    theirs: dict[str, dict[int, list[LabelRow]]] = {}
    for version in options.versions:
        grouped: dict[int, list[LabelRow]] = defaultdict(list)
        for label in label_rows(prm_version=version, on_rollouts_of=scheme.prm_version):
            grouped[label.rollout_id].append(label)
        theirs[version] = grouped
    mc_values = (
        rollout_mc_values(steps_by_rollout={i: len(group[0].prm_output) for i, group in candidates.items()})
        if options.mc
        else {}
    )
    sources = options.sources(scheme)
    agreed: dict[int, tuple[Consensus, list[LabelRow]]] = {}
    for rollout_id, group in candidates.items():
        steps = len(group[0].prm_output)
        voters = [label.verdicts() for label in group]
        if options.mc:
            if rollout_id not in mc_values:
                tally.skipped[NO_MC_VALUES] += 1
                continue
            voters.append(value_verdicts(mc_values[rollout_id]))
        if any(not theirs[version].get(rollout_id) for version in options.versions):
            tally.skipped[MISSING_VERSION] += 1
            continue
        voters += [
            label.verdicts()
            for version in options.versions
            for label in theirs[version][rollout_id]
            if len(label.prm_output) == steps
        ]
        result = consensus(voters, rule=options.rule)
        if not isinstance(result, Consensus):
            tally.skipped[result.reason] += 1
            continue
        agreed[rollout_id] = (result, group)
    for rollout_id, decided in from_adjudication.items():
        agreed[rollout_id] = (decided, ours[rollout_id])
    records: list[dict[str, Any]] = []
    ids = sorted(agreed)
    for start in range(0, len(ids), ROLLOUTS_PER_QUERY):
        chunk = ids[start : start + ROLLOUTS_PER_QUERY]
        rollouts = Rollout.objects.select_related("forest", "node").in_bulk(chunk)
        for rollout_id in chunk:
            result, group = agreed[rollout_id]
            rollout = rollouts[rollout_id]
            record = _record(rollout, result, group, sources=sources, prm_version=scheme.prm_version)
            if options.adjudicated_first:
                record["adjudicated"] = rollout_id in from_adjudication
                if rollout_id in from_adjudication:
                    record["sources"] = [ADJUDICATION_SOURCE_NAME]
                    tally.adjudicated += 1
            records.append(record)
            tally.records += 1
            tally.steps += result.steps
    return records, tally


def _adjudicated_verdicts(scheme: LabellingScheme) -> dict[int, list[bool | None]]:
    """The verdicts of the scheme's adjudicated labels, by rollout (steps without a decision have none)."""
    return {
        rollout_id: label_verdicts(list(prm_output), {"rated_steps": rated_steps})
        for rollout_id, prm_output, rated_steps in Adjudication.objects.filter(scheme=scheme)
        .order_by("rollout_id")
        .values_list("rollout_id", "prm_output", "rated_steps")
        .iterator(chunk_size=2000)
    }


def _record(
    rollout: Rollout, result: Consensus, group: Sequence[LabelRow], *, sources: list[str], prm_version: str
) -> dict[str, Any]:
    steps = list(rollout.reasoning)
    return {
        "prompt": rollout.example,
        "completions": steps[: result.steps],
        "labels": list(result.labels),
        "rollout_id": rollout.pk,
        "prm_version": prm_version,
        "sources": sources,
        "labellers": sorted({label.labeller for label in group}),
        "num_labels": len(group),
        "num_steps": len(steps),
        "first_error": result.first_error,
        "model": rollout.model,
        "prediction": rollout.prediction,
        "ground_truth": rollout.ground_truth,
        "correct": rollout.correct,
        "forest": rollout.forest.name if rollout.forest else None,
        "tree_id": rollout.node.tree_id if rollout.node else None,
        "leaf_id": rollout.node_id,
    }


def consensus_export(
    *, scheme: LabellingScheme, options: ConsensusOptions, output: str | os.PathLike, fmt: str
) -> ConsensusTally:
    """Write the consensus set of ``scheme`` to ``output`` as ``fmt`` (``stepwise.FORMATS``); ``ExportError`` and
    nothing written when no rollout has a consensus."""
    records, tally = consensus_records(scheme=scheme, options=options)
    stepwise_write(records, output, fmt)
    return tally
