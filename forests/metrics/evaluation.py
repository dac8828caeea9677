"""``evaluate_prm``: a PRM's step scores against a reference, by ProcessBench's measure. Pure: no Django.

For each rollout the reference says which steps are right:

- ``labelled``: a step is right while some correct rollout passes through it, i.e. its exact value is above 0; the
  reference's first error is the first step whose value falls to 0 (-1 when none does). A correct rollout never
  has one, since it passes through every one of its steps itself.
- ``labels:SCHEME``: the rollout's own step labels of that scheme, read as values (1 preferred -> 1, 2 neutral ->
  0.5, 0 not preferred -> 0) and averaged over the scheme's labels of the rollout; a step is wrong when that mean is
  below 0.5 (with one label: when it is 0, not preferred).

The PRM's scores of the rollout (averaged over its labels of that version when there are several) predict the first
step scored below the threshold (-1 when none is). Rollout by rollout, both are compared as far as both go. The
result: accuracy on erroneous rollouts, on correct ones, their harmonic mean (F1), and step-level agreement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prmsite.core.processbench import (
    ProcessBenchResult,
    first_below,
    first_error,
    processbench_scores,
)

LABELS_STEP_OK = 0.5  # a scheme's step is right when the mean of its label values is at least this


def mean_outputs(outputs: Sequence[Sequence[float]]) -> list[float]:
    """Step-wise mean of several labels' outputs (as far as the shortest goes)."""
    if not outputs:
        return []
    length = min(len(o) for o in outputs)
    return [sum(o[i] for o in outputs) / len(outputs) for i in range(length)]


@dataclass
class PrmEvaluation:
    prm_version: str
    reference: str
    threshold: float
    forest_name: str | None = None
    reference_first: list[int] = field(default_factory=list)
    predicted_first: list[int] = field(default_factory=list)
    agree: int = 0
    steps: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add(self, reference_ok: Sequence[bool], scores: Sequence[float]) -> None:
        """One rollout: the reference's verdict on each step and the PRM's score of each step."""
        length = min(len(reference_ok), len(scores))
        if length == 0:
            self.skip("no step to compare")
            return
        reference_ok = list(reference_ok[:length])
        scores = list(scores[:length])
        self.reference_first.append(first_error(reference_ok))
        self.predicted_first.append(first_below(scores, self.threshold))
        for ok, score in zip(reference_ok, scores, strict=True):
            self.agree += ok == (score >= self.threshold)
        self.steps += length

    @property
    def scores(self) -> ProcessBenchResult:
        return processbench_scores(self.reference_first, self.predicted_first)

    @property
    def step_agreement(self) -> float | None:
        return self.agree / self.steps if self.steps else None

    def as_dict(self) -> dict[str, Any]:
        """The ``--output_json`` object."""
        return {
            "prm_version": self.prm_version,
            "reference": self.reference,
            "threshold": self.threshold,
            "forest_name": self.forest_name,
            "num_rollouts": len(self.reference_first),
            **asdict(self.scores),
            "step_agreement": self.step_agreement,
            "num_steps": self.steps,
            "skipped": dict(sorted(self.skipped.items())),
        }
