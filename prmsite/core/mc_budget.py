"""Label quality against budget: the completions a forest already has, replayed in the order each growth policy would
have asked for them. Pure: no Django (``mc_budget_report`` loads the forest; ``bench/bench_adaptive.py`` simulates one).

The replay
----------
A tree is its nodes and its rollouts, oldest first. Each rollout is taken to be a completion of the deepest node of
its path that an older rollout of the tree already passed through (its *origin*: the root for a first rollout; the
node it was generated from for a grown one, since a completion writes new steps after its prefix). The *base* of a
tree is its first ``num_repeats`` rollouts (what the repeats stage grows before any branching; base rollouts that
share first steps are still base, not completions); the steps judged are the steps of the base paths (every node
below the root, the last one included).

A policy replayed on a tree starts from the base and asks for completions of nodes as the policy would; a request is
answered by the next rollout (oldest first) whose origin is that node, and goes unanswered when the forest has no
more of them (the policy is then as far as the forest can take it). Labels are computed from the rollouts revealed so
far (a step's trials and successes count every revealed rollout through it, as the policies count them) and compared
with the labels the whole forest gives the same steps:

- ``mc`` at budget ``c``: every non-leaf node of the base paths (root included) up to ``c`` rollouts through it.
- ``omega`` at budget ``c``: the binary search of every distinct wrong base path (``prmsite.core.growth``), ``c``
  completions per probe, a probe ending at its first correct completion.
- ``adaptive`` at budget ``c``: ``prmsite.core.adaptive`` with ``max_completions = c``: rounds of ``round_size`` in
  service order until every step is decided; a step's round ends as soon as it is decided.

Figures per policy and budget: generations (rollouts revealed, the base included) and tokens (theirs), step accuracy
(the share of judged steps whose label agrees with the whole forest's), first-error agreement (the share of base
rollouts whose first bad step, or none, is the whole forest's) and the ProcessBench F1 of the replayed first errors
against the whole forest's (``prmsite.core.processbench``). Labels are hard (a correct rollout through the step) or
soft (its share of correct rollouts reaches 0.5), as the policy's ``estimate`` says.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prmsite.core.adaptive import (
    DEFAULT_ROUND_SIZE,
    ESTIMATE_HARD,
    ESTIMATE_SOFT,
    AdaptiveRule,
    next_rounds,
    tree_steps,
)
from prmsite.core.growth import POLICY_ADAPTIVE, POLICY_MC, POLICY_OMEGA, omega_record, omega_start
from prmsite.core.processbench import first_error, processbench_scores

REPLAYED = (POLICY_MC, POLICY_OMEGA, POLICY_ADAPTIVE)
DEFAULT_BUDGETS = (1, 2, 4, 8)
DEFAULT_PRECISIONS = (0.3, 0.5, 0.7)  # Wilson widths at 8 trials are 0.32 (8 of 8) to 0.57 (4 of 8)


@dataclass(frozen=True)
class ReplayRollout:
    id: int
    leaf_id: int
    correct: bool
    tokens: int = 0


@dataclass(frozen=True)
class ReplayTree:
    """A tree: ``nodes`` as ``(id, parent_id, depth)`` and its rollouts, oldest first."""

    root_id: int
    nodes: Sequence[tuple[int, int | None, int]]
    rollouts: Sequence[ReplayRollout]


@dataclass(frozen=True)
class ReplayPolicy:
    """One policy at one budget: ``budget`` is completions_per_step (mc, omega) or max_completions_per_step
    (adaptive); ``precision`` is the soft adaptive policy's."""

    policy: str
    estimate: str
    budget: int
    precision: float | None = None
    round_size: int = DEFAULT_ROUND_SIZE

    def __post_init__(self) -> None:
        if self.policy not in REPLAYED:
            raise ValueError(f"policy must be one of {', '.join(REPLAYED)}, got {self.policy!r}")
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1, got {self.budget}")
        self.rule()  # the estimate, precision and round size are checked there

    def rule(self) -> AdaptiveRule:
        return AdaptiveRule(
            estimate=self.estimate,
            precision=self.precision if self.precision is not None else 1.0,
            max_completions=self.budget,
            round_size=self.round_size,
        )

    @property
    def name(self) -> str:
        name = f"{self.policy} {self.estimate}"
        return name + (f" p={self.precision:g}" if self.precision is not None else "")


def policies_series(
    budgets: Sequence[int] = DEFAULT_BUDGETS,
    precisions: Sequence[float] = DEFAULT_PRECISIONS,
    *,
    round_size: int = DEFAULT_ROUND_SIZE,
) -> list[ReplayPolicy]:
    """The report's policies at every budget: mc (hard and soft labels), omega, adaptive hard, adaptive soft at each
    precision."""
    series = []
    for budget in budgets:
        series += [
            ReplayPolicy(POLICY_MC, ESTIMATE_HARD, budget),
            ReplayPolicy(POLICY_MC, ESTIMATE_SOFT, budget),
            ReplayPolicy(POLICY_OMEGA, ESTIMATE_HARD, budget),
            ReplayPolicy(POLICY_ADAPTIVE, ESTIMATE_HARD, budget, round_size=round_size),
        ]
        series += [
            ReplayPolicy(POLICY_ADAPTIVE, ESTIMATE_SOFT, budget, precision=p, round_size=round_size) for p in precisions
        ]
    return series


class _Tree:
    """A tree prepared for replays: paths, origins, the pools of completions per node, the whole forest's counts."""

    def __init__(self, tree: ReplayTree, num_repeats: int) -> None:
        self.parent = {node_id: parent for node_id, parent, _ in tree.nodes}
        self.depth = {node_id: depth for node_id, _, depth in tree.nodes}
        self.rollouts = list(tree.rollouts)
        self.paths = [self._path(r.leaf_id) for r in self.rollouts]
        self.pools: dict[int, list[int]] = {}
        self.base = list(range(min(len(self.rollouts), max(1, num_repeats))))
        seen = {tree.root_id}
        for index, path in enumerate(self.paths):
            origin = tree.root_id
            for node_id in path:
                if node_id in seen:
                    origin = node_id
            seen.update(path)
            if index >= len(self.base):
                self.pools.setdefault(origin, []).append(index)
        self.base_paths = [self.paths[i] for i in self.base]
        self.parents = {node_id for path in self.base_paths for node_id in path[:-1]}
        self.full = _Revealed(self)
        for index in range(len(self.rollouts)):
            self.full.reveal(index)

    def _path(self, node_id: int) -> list[int]:
        path = []
        current: int | None = node_id
        while current is not None:
            path.append(current)
            current = self.parent.get(current)
        return path[::-1]


@dataclass
class _Revealed:
    tree: _Tree
    through: dict[int, tuple[int, int]] = field(default_factory=dict)
    taken: set[int] = field(default_factory=set)
    cursor: dict[int, int] = field(default_factory=dict)
    tokens: int = 0

    def reveal(self, index: int) -> None:
        if index in self.taken:
            return
        self.taken.add(index)
        rollout = self.tree.rollouts[index]
        self.tokens += rollout.tokens
        for node_id in self.tree.paths[index]:
            n, s = self.through.get(node_id, (0, 0))
            self.through[node_id] = (n + 1, s + int(rollout.correct))

    def take(self, node_id: int) -> ReplayRollout | None:
        """Reveal the next completion of ``node_id``; ``None`` when the forest has no more."""
        pool = self.tree.pools.get(node_id, [])
        position = self.cursor.get(node_id, 0)
        while position < len(pool) and pool[position] in self.taken:
            position += 1
        if position >= len(pool):
            self.cursor[node_id] = position
            return None
        self.cursor[node_id] = position + 1
        self.reveal(pool[position])
        return self.tree.rollouts[pool[position]]

    def trials(self, node_id: int) -> tuple[int, int]:
        return self.through.get(node_id, (0, 0))


def _replay(tree: _Tree, policy: ReplayPolicy) -> _Revealed:
    revealed = _Revealed(tree)
    for index in tree.base:
        revealed.reveal(index)
    if policy.policy == POLICY_MC:
        nodes = sorted({n for path in tree.base_paths for n in path[:-1]}, key=lambda n: (tree.depth[n], n))
        for node_id in nodes:
            while revealed.trials(node_id)[0] < policy.budget and revealed.take(node_id) is not None:
                pass
    elif policy.policy == POLICY_OMEGA:
        if any(tree.rollouts[i].correct for i in tree.base):
            leaves = []
            for index in tree.base:
                if not tree.rollouts[index].correct and tree.rollouts[index].leaf_id not in leaves:
                    leaves.append(tree.rollouts[index].leaf_id)
            for leaf_id in leaves:
                search = omega_start(tree._path(leaf_id), revealed.through)
                while not search.done and search.probe is not None:
                    node_id = search.path[search.probe]
                    answers = []
                    while len(answers) < policy.budget:
                        answer = revealed.take(node_id)
                        if answer is None:
                            break
                        answers.append(answer.correct)
                        if answer.correct:
                            break
                    if not answers:
                        break  # the forest has no completion of this probe: the search goes no further
                    search = omega_record(search, positive=any(answers), through=revealed.through)
    else:
        rule = policy.rule()
        exhausted: set[int] = set()
        while True:
            steps = tree_steps(base_paths=tree.base_paths, through=revealed.through, has_children=tree.parents)
            rounds = next_rounds(rule, [s for s in steps if s.node_id not in exhausted])
            if not rounds:
                break
            for node_id, count in rounds:
                for _ in range(count):
                    if rule.decided(*reversed(revealed.trials(node_id))):
                        break  # decided by an answer of this round (or another step's): the rest is dropped
                    if revealed.take(node_id) is None:
                        exhausted.add(node_id)
                        break
    return revealed


def _labels(tree: _Tree, revealed: _Revealed, rule: AdaptiveRule) -> list[list[bool]]:
    labels = []
    for path in tree.base_paths:
        labels.append([rule.label(*reversed(revealed.trials(node_id))) for node_id in path[1:]])
    return labels


@dataclass
class _Totals:
    trees: int = 0
    generations: int = 0
    tokens: int = 0
    steps: int = 0
    steps_agreeing: int = 0
    reference: list[int] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    estimate: str
    budget: int
    precision: float | None
    name: str
    trees: int
    generations: int
    tokens: int
    steps: int
    step_accuracy: float | None
    first_error_agreement: float | None
    processbench_f1: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_forest(
    trees: Iterable[ReplayTree],
    policies: Sequence[ReplayPolicy],
    *,
    num_repeats: int,
    on_tree: Callable[[], None] | None = None,
) -> list[ReplayResult]:
    """Replay every policy on every tree (``trees`` is consumed once, so a caller may load it a batch at a time);
    answer one result per policy, in the order given. ``on_tree`` is called after each tree (progress)."""
    totals = [_Totals() for _ in policies]
    for raw in trees:
        tree = _Tree(raw, num_repeats)
        if tree.base:
            reference = {
                estimate: _labels(tree, tree.full, AdaptiveRule(estimate=estimate))
                for estimate in (ESTIMATE_HARD, ESTIMATE_SOFT)
            }
            for policy, total in zip(policies, totals, strict=True):
                revealed = _replay(tree, policy)
                labels = _labels(tree, revealed, policy.rule())
                wanted = reference[policy.estimate]
                total.trees += 1
                total.generations += len(revealed.taken)
                total.tokens += revealed.tokens
                for got, want in zip(labels, wanted, strict=True):
                    total.steps += len(want)
                    total.steps_agreeing += sum(g == w for g, w in zip(got, want, strict=True))
                    total.reference.append(first_error(want))
                    total.predicted.append(first_error(got))
        if on_tree is not None:
            on_tree()
    results = []
    for policy, total in zip(policies, totals, strict=True):
        agreeing = sum(r == p for r, p in zip(total.reference, total.predicted, strict=True))
        results.append(
            ReplayResult(
                policy=policy.policy,
                estimate=policy.estimate,
                budget=policy.budget,
                precision=policy.precision,
                name=policy.name,
                trees=total.trees,
                generations=total.generations,
                tokens=total.tokens,
                steps=total.steps,
                step_accuracy=total.steps_agreeing / total.steps if total.steps else None,
                first_error_agreement=agreeing / len(total.reference) if total.reference else None,
                processbench_f1=processbench_scores(total.reference, total.predicted).f1 if total.reference else None,
            )
        )
    return results


def cheapest_reaching(results: Sequence[ReplayResult], *, name: str, accuracy: float) -> ReplayResult | None:
    """The result of the policy ``name`` with the fewest generations whose step accuracy reaches ``accuracy``."""
    reaching = [r for r in results if r.name == name and r.step_accuracy is not None and r.step_accuracy >= accuracy]
    return min(reaching, key=lambda r: r.generations, default=None)


COLUMNS = (
    "name",
    "budget",
    "trees",
    "generations",
    "tokens",
    "step_accuracy",
    "first_error_agreement",
    "processbench_f1",
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def results_table(results: Sequence[ReplayResult]) -> str:
    """The results as an aligned text table, one row per policy and budget."""
    rows = [list(COLUMNS)] + [[_cell(getattr(r, column)) for column in COLUMNS] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


PLOT_FORMATS = ("png", "svg")


def budget_plot(results: Sequence[ReplayResult], *, fmt: str = "svg", title: str = "") -> bytes:
    """Step accuracy and first-error agreement against generations, one line per policy (its budgets as points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (deferred: matplotlib is heavy)
    from matplotlib.figure import Figure  # noqa: PLC0415 (deferred: matplotlib is heavy)

    if fmt not in PLOT_FORMATS:
        raise ValueError(f"a plot is drawn as {' or '.join(PLOT_FORMATS)}, not {fmt!r}")
    figure = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    names = list(dict.fromkeys(r.name for r in results))
    for position, (metric, label) in enumerate(
        (("step_accuracy", "step accuracy"), ("first_error_agreement", "first-error agreement")), start=1
    ):
        axes = figure.add_subplot(1, 2, position)
        for index, name in enumerate(names):
            points = sorted(
                (r.generations, getattr(r, metric), r.budget)
                for r in results
                if r.name == name and getattr(r, metric) is not None
            )
            if not points:
                continue
            axes.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker="os^vD<>p*h"[index % 10],
                markersize=5,
                linestyle="-" if index % 2 == 0 else "--",
                label=name,
            )
        axes.set_xscale("log")
        axes.set_xlabel("generations (log scale)")
        axes.set_ylabel(f"{label} vs the whole forest")
        axes.set_ylim(-0.02, 1.02)
        axes.grid(True, alpha=0.3)
        if position == 2:
            axes.legend(fontsize=7, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    return buffer.getvalue()
