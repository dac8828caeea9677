"""The adaptive Monte-Carlo policy's rules: when a step's label is decided, and which step is served next. Pure: no
Django, no database (``forests.growth`` applies these decisions to a forest, ``prmsite.core.mc_budget`` to a replay).

A step is a non-leaf node of a tree's base paths (the rollouts of the repeats stage) below the root. Its evidence is
``trials`` rollouts through it, ``successes`` of them correct (the ones it already has count: a rollout through a step
is a completion of it). Completions are asked for in rounds of ``round_size``, within ``max_completions`` rollouts
through the step, until the step's label is decided for the estimate asked for:

- ``hard`` (Math-Shepherd's hard estimate: a step is good when some completion from it reaches the right answer): a
  step is decided good at its first correct completion, and bad only once it has ``max_completions`` rollouts through
  it without one. A step any correct rollout passes through is known good and never served.
- ``soft`` (the step's value, the share of correct completions): a step is decided once the 95% Wilson interval of its
  value is narrower than ``precision``, or it has ``max_completions`` rollouts through it. Its label, for the report's
  agreement figures, is whether that value reaches ``SOFT_THRESHOLD`` (0.5, the PRM threshold).

Service order: the expected change of the step's label from one more completion first (the chance, under the
posterior predictive ``(successes + 1) / (trials + 2)`` of a uniform prior, that it flips the label), then the steps
nearest the first error of their path (fewest steps below the deepest step known good), then the widest interval,
then shallow before deep.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prmsite.core.domain import PRM_THRESHOLD

ESTIMATE_HARD = "hard"
ESTIMATE_SOFT = "soft"
ESTIMATES = (ESTIMATE_HARD, ESTIMATE_SOFT)
DEFAULT_ESTIMATE = ESTIMATE_HARD
DEFAULT_PRECISION = 0.2
DEFAULT_ROUND_SIZE = 2
DEFAULT_MAX_COMPLETIONS = 8
SOFT_THRESHOLD = PRM_THRESHOLD
Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution (as forests.metrics.stats)


def wilson_interval(successes: int, trials: int, *, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (``(0, 1)`` without trials): the interval the forest pages
    show for a node's value (``forests.metrics.stats``), written again here because the core imports no app."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_width(successes: int, trials: int) -> float:
    low, high = wilson_interval(successes, trials)
    return high - low


@dataclass(frozen=True)
class AdaptiveRule:
    """How the adaptive policy decides steps: ``estimate`` (hard|soft), ``precision`` (soft: the widest interval a
    decided step may keep), ``max_completions`` (most rollouts through a step), ``round_size`` (completions asked of a
    step at a time)."""

    estimate: str = DEFAULT_ESTIMATE
    precision: float = DEFAULT_PRECISION
    max_completions: int = DEFAULT_MAX_COMPLETIONS
    round_size: int = DEFAULT_ROUND_SIZE

    def __post_init__(self) -> None:
        if self.estimate not in ESTIMATES:
            raise ValueError(f"estimate must be one of {', '.join(ESTIMATES)}, got {self.estimate!r}")
        precision = self.precision
        if isinstance(precision, bool) or not isinstance(precision, int | float) or not 0 < precision <= 1:
            raise ValueError(f"precision must be a number in (0, 1], got {precision!r}")
        for name in ("max_completions", "round_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def decided(self, successes: int, trials: int) -> bool:
        """Whether a step with this evidence needs no more completions."""
        if trials >= self.max_completions:
            return True
        if self.estimate == ESTIMATE_HARD:
            return successes > 0
        return trials > 0 and wilson_width(successes, trials) < self.precision

    def label(self, successes: int, trials: int) -> bool:
        """The step's label from this evidence: good (True) or bad."""
        if self.estimate == ESTIMATE_HARD:
            return successes > 0
        return trials > 0 and successes / trials >= SOFT_THRESHOLD

    def label_change(self, successes: int, trials: int) -> float:
        """The chance that one more completion changes the step's label (posterior predictive of a uniform prior)."""
        p_success = (successes + 1) / (trials + 2)
        now = self.label(successes, trials)
        change = 0.0
        if self.label(successes + 1, trials + 1) != now:
            change += p_success
        if self.label(successes, trials + 1) != now:
            change += 1 - p_success
        return change


@dataclass(frozen=True)
class StepState:
    """A step as the policy sees it: its evidence, the rollouts still asked of it (queued or leased), and the depth of
    the deepest step known good above it on its path (0: the root; none is)."""

    node_id: int
    depth: int
    trials: int
    successes: int
    pending: int = 0
    frontier_depth: int = 0


def service_key(rule: AdaptiveRule, step: StepState) -> tuple[float, int, float, int, int]:
    return (
        -rule.label_change(step.successes, step.trials),
        step.depth - step.frontier_depth,
        -wilson_width(step.successes, step.trials),
        step.depth,
        step.node_id,
    )


def service_order(rule: AdaptiveRule, steps: Iterable[StepState]) -> list[StepState]:
    """The undecided steps, in the order they are served (see the module's note)."""
    return sorted((s for s in steps if not rule.decided(s.successes, s.trials)), key=lambda s: service_key(rule, s))


def next_rounds(rule: AdaptiveRule, steps: Iterable[StepState], *, budget: int | None = None) -> list[tuple[int, int]]:
    """``(node_id, count)``: the next round of every undecided step that has nothing asked of it now, in service
    order, each within ``max_completions`` rollouts through the step and all of them within ``budget`` (``None``: no
    cap on the tree)."""
    wanted = []
    for step in service_order(rule, steps):
        if step.pending > 0:
            continue
        count = min(rule.round_size, rule.max_completions - step.trials)
        if budget is not None:
            count = min(count, budget)
        if count <= 0:
            continue
        wanted.append((step.node_id, count))
        if budget is not None:
            budget -= count
            if budget <= 0:
                break
    return wanted


def dropped(rule: AdaptiveRule, steps: Iterable[StepState]) -> list[int]:
    """Steps that still have rollouts asked of them but are decided: what is asked of them is no longer wanted."""
    return [s.node_id for s in steps if s.pending > 0 and rule.decided(s.successes, s.trials)]


def tree_steps(
    *,
    base_paths: Sequence[Sequence[int]],
    through: dict[int, tuple[int, int]],
    has_children: Iterable[int],
    pending: dict[int, int] | None = None,
    max_depth: int | None = None,
) -> list[StepState]:
    """The steps of a tree: the non-leaf nodes below the root of ``base_paths`` (node ids, root first) that have
    children (``has_children``), down to ``max_depth``; ``through`` gives ``(trials, successes)`` per node."""
    parents = set(has_children)
    pending = pending or {}
    steps: dict[int, StepState] = {}
    for path in base_paths:
        frontier = 0
        for depth, node_id in enumerate(path):
            trials, successes = through.get(node_id, (0, 0))
            wanted = depth > 0 and node_id in parents and (max_depth is None or depth <= max_depth)
            if wanted and node_id not in steps:
                steps[node_id] = StepState(node_id, depth, trials, successes, pending.get(node_id, 0), frontier)
            if successes > 0:
                frontier = depth
    return list(steps.values())
