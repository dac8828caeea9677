"""The growth policies' decisions: what a forest grows next. Pure: no Django, no database.

A forest grows in two stages per tree (``forests.growth.plan``, ``queue`` and ``bookkeeping`` apply these
decisions):

1. **repeats** — every root gets ``num_repeats`` complete rollouts (generations from the prompt).
2. **branching**, once a tree has its ``num_repeats`` rollouts (policy ``mc``, ``omega`` or ``adaptive``; ``repeats``
   stops at 1):

   - ``mc`` (Math-Shepherd): every non-leaf node on the tree's paths at that moment, down to ``max_branch_depth``,
     gets at least ``completions_per_step`` rollouts through it, counting the ones it already has; the missing ones
     are generated from the node (the partial path as the start of the answer). Each node's share of correct
     rollouts is then a Monte-Carlo estimate of its value.
     Cost: at most ``completions_per_step`` generations per node, i.e. up to ``roots x num_repeats x min(L - 1,
     max_branch_depth) x completions_per_step`` for paths of ``L`` steps (less where paths share prefixes); a
     generation from depth ``d`` writes the remaining ``L - d`` steps, so tokens grow like ``L^2 / 2`` per path.
   - ``omega`` (OmegaPRM's binary search): for every wrong rollout (its prediction is not the ground truth), find
     the first step after which no completion reaches the right answer. The search keeps ``lo`` (a step known to
     have a correct continuation) and ``hi`` (a step known to have none; the wrong leaf itself at first) and probes
     the middle with ``completions_per_step`` generations from it: any correct one moves ``lo`` up, none moves ``hi``
     down. Cost: ``completions_per_step x ceil(log2 L)`` generations per wrong rollout instead of
     ``completions_per_step x L`` for ``mc``; probes whose node already has a correct rollout through it cost
     nothing. A tree without any correct rollout has no step to anchor ``lo`` on and is not searched. The search
     itself (``OmegaSearch``, ``omega_start``, ``omega_record``) is ``prmsite.core.growth``.
   - ``adaptive``: the steps of the tree's base paths (its first ``num_repeats`` rollouts) get completions in rounds
     of ``round_size``, each step until its label is decided for ``estimate`` (hard: a correct completion, or
     ``max_completions_per_step`` rollouts through it without one; soft: a Wilson interval narrower than
     ``precision``), the step whose label one more completion is most likely to change first. The rules and the
     order are ``prmsite.core.adaptive``; ``forests.growth.bookkeeping`` asks for the next round of a step when its
     last one is answered and drops what is asked of a step once it is decided. Cost: at most
     ``max_completions_per_step`` rollouts through a step; a step a correct rollout passes through costs nothing
     (hard).

Options: ``skip_uniform`` leaves trees whose first ``num_repeats`` rollouts are all right or all wrong unbranched
(they teach a PRM nothing); ``max_children_per_node`` stops branching at nodes that already have that many children;
``max_rollouts_per_tree`` caps what is asked of one tree (rollouts it has plus rollouts queued for it);
``max_forest_tokens`` stops handing out work once the forest's rollouts have used that many tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from prmsite.core.adaptive import (
    DEFAULT_ESTIMATE,
    DEFAULT_MAX_COMPLETIONS,
    DEFAULT_PRECISION,
    DEFAULT_ROUND_SIZE,
    AdaptiveRule,
    StepState,
    tree_steps,
)
from prmsite.core.growth import DEFAULT_POLICY, POLICIES, POLICY_REPEATS

STAGE_REPEATS = "repeats"
STAGE_MC = "mc"
STAGE_OMEGA = "omega"
STAGE_ADAPTIVE = "adaptive"
STAGES = (STAGE_REPEATS, STAGE_MC, STAGE_OMEGA, STAGE_ADAPTIVE)

DEFAULT_NUM_REPEATS = 4
DEFAULT_COMPLETIONS_PER_STEP = 8


class GrowthOptionsError(ValueError):
    """Growth options that cannot be used; the message names the option."""


def _positive_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GrowthOptionsError(f"{name} must be a positive integer or null, got {value!r}")
    return value


@dataclass(frozen=True)
class GrowthOptions:
    """What a forest is grown with. Stored on the forest's growth plan; workers send the ones they were given."""

    policy: str = DEFAULT_POLICY
    num_repeats: int = DEFAULT_NUM_REPEATS
    completions_per_step: int = DEFAULT_COMPLETIONS_PER_STEP
    max_branch_depth: int | None = None
    skip_uniform: bool = False
    max_children_per_node: int | None = None
    max_rollouts_per_tree: int | None = None
    max_forest_tokens: int | None = None
    # adaptive only (prmsite.core.adaptive)
    estimate: str = DEFAULT_ESTIMATE
    precision: float = DEFAULT_PRECISION
    max_completions_per_step: int = DEFAULT_MAX_COMPLETIONS
    round_size: int = DEFAULT_ROUND_SIZE

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise GrowthOptionsError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        for name in ("num_repeats", "completions_per_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GrowthOptionsError(f"{name} must be a non-negative integer, got {value!r}")
        if self.policy == POLICY_REPEATS and self.num_repeats < 1:
            raise GrowthOptionsError("policy repeats needs num_repeats >= 1")
        if self.policy != POLICY_REPEATS and self.completions_per_step < 1:
            raise GrowthOptionsError(f"policy {self.policy} needs completions_per_step >= 1")
        if not isinstance(self.skip_uniform, bool):
            raise GrowthOptionsError(f"skip_uniform must be true or false, got {self.skip_uniform!r}")
        for name in ("max_branch_depth", "max_children_per_node", "max_rollouts_per_tree", "max_forest_tokens"):
            _positive_or_none(name, getattr(self, name))
        try:
            self.adaptive_rule()
        except ValueError as exc:
            raise GrowthOptionsError(str(exc).replace("max_completions", "max_completions_per_step")) from exc

    def adaptive_rule(self) -> AdaptiveRule:
        """The adaptive policy's stopping rule and service order, from these options."""
        return AdaptiveRule(
            estimate=self.estimate,
            precision=self.precision,
            max_completions=self.max_completions_per_step,
            round_size=self.round_size,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GrowthOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GrowthOptionsError(f"unknown growth option(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, given: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """The options in ``given`` whose value differs from this one's: ``{name: (stored, given)}``."""
        stored = self.to_dict()
        return {name: (stored[name], value) for name, value in given.items() if stored.get(name) != value}

    @property
    def branches(self) -> bool:
        """Whether the policy has a branching stage after the repeats."""
        return self.policy != POLICY_REPEATS


def chunk_counts(count: int, size: int) -> list[int]:
    """``count`` split into pieces of at most ``size`` (one lease asks for at most ``size`` rollouts)."""
    if count <= 0:
        return []
    size = max(1, size)
    full, rest = divmod(count, size)
    return [size] * full + ([rest] if rest else [])


def repeats_needed(*, rollouts: int, options: GrowthOptions) -> int:
    """How many more rollouts from the root a tree with ``rollouts`` rollouts needs in the repeats stage."""
    return max(0, options.num_repeats - rollouts)


def tree_budget(*, options: GrowthOptions, rollouts: int, queued: int) -> int | None:
    """How many more rollouts may be queued for a tree (``None``: no cap)."""
    if options.max_rollouts_per_tree is None:
        return None
    return max(0, options.max_rollouts_per_tree - rollouts - queued)


def is_uniform(outcomes: Sequence[bool]) -> bool:
    """All right or all wrong (an empty list is uniform: it says nothing either)."""
    return all(outcomes) or not any(outcomes)


@dataclass(frozen=True)
class TreeNode:
    id: int
    parent_id: int | None
    depth: int


@dataclass(frozen=True)
class TreeRollout:
    """A rollout of a tree: the node where it ends and whether it is correct (the grader's stored verdict)."""

    id: int
    leaf_id: int
    correct: bool


@dataclass
class TreeSnapshot:
    """A tree as the branching stage sees it: its nodes and its rollouts (oldest first)."""

    root_id: int
    nodes: Sequence[TreeNode]
    rollouts: Sequence[TreeRollout]
    _by_id: dict[int, TreeNode] = field(init=False, repr=False)
    _children: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {node.id: node for node in self.nodes}
        self._children = {}
        for node in self.nodes:
            if node.parent_id is not None:
                self._children[node.parent_id] = self._children.get(node.parent_id, 0) + 1

    def children(self, node_id: int) -> int:
        return self._children.get(node_id, 0)

    def path(self, node_id: int) -> list[int]:
        """Node ids from the root down to ``node_id``."""
        path = []
        current: int | None = node_id
        while current is not None:
            path.append(current)
            current = self._by_id[current].parent_id
        return path[::-1]

    def depth(self, node_id: int) -> int:
        return self._by_id[node_id].depth

    def through(self) -> dict[int, tuple[int, int]]:
        """``{node_id: (rollouts through it, correct rollouts through it)}`` for every node of the tree."""
        counts: dict[int, list[int]] = {node.id: [0, 0] for node in self.nodes}
        ending: dict[int, list[int]] = {}
        for rollout in self.rollouts:
            tally = ending.setdefault(rollout.leaf_id, [0, 0])
            tally[0] += 1
            tally[1] += int(rollout.correct)
        # Children before parents: deepest first.
        for node in sorted(self.nodes, key=lambda n: -n.depth):
            own = counts[node.id]
            end = ending.get(node.id)
            if end:
                own[0] += end[0]
                own[1] += end[1]
            if node.parent_id is not None and node.parent_id in counts:
                counts[node.parent_id][0] += own[0]
                counts[node.parent_id][1] += own[1]
        return {node_id: (c[0], c[1]) for node_id, c in counts.items()}


@dataclass(frozen=True)
class Expand:
    """Ask for ``count`` rollouts that continue from ``node_id`` (whose path from the root is ``path``)."""

    node_id: int
    path: tuple[int, ...]
    count: int
    stage: str
    search_index: int | None = None  # which OmegaSearch of the plan's result asked for it


def branching_wanted(snapshot: TreeSnapshot, options: GrowthOptions) -> bool:
    """Whether a tree that reached its repeats gets a branching stage (``skip_uniform`` looks at its first
    ``num_repeats`` rollouts)."""
    if not options.branches or not snapshot.rollouts:
        return False
    if options.skip_uniform:
        first = [r.correct for r in snapshot.rollouts[: max(1, options.num_repeats)]]
        if is_uniform(first):
            return False
    return True


def mc_plan(snapshot: TreeSnapshot, options: GrowthOptions, *, budget: int | None = None) -> list[Expand]:
    """The Math-Shepherd expansions of a tree: every non-leaf node of its current paths (depth at most
    ``max_branch_depth``, fewer than ``max_children_per_node`` children) gets ``completions_per_step`` rollouts
    through it; the missing ones are asked for, shallow nodes first, within ``budget``."""
    through = snapshot.through()
    wanted: list[Expand] = []
    for node in sorted(snapshot.nodes, key=lambda n: (n.depth, n.id)):
        if snapshot.children(node.id) == 0:
            continue  # a node only rollouts end at: its value is its own correctness
        if options.max_branch_depth is not None and node.depth > options.max_branch_depth:
            continue
        if options.max_children_per_node is not None and snapshot.children(node.id) >= options.max_children_per_node:
            continue
        missing = options.completions_per_step - through[node.id][0]
        if missing <= 0:
            continue
        if budget is not None:
            missing = min(missing, budget)
            budget -= missing
        if missing > 0:
            wanted.append(Expand(node.id, tuple(snapshot.path(node.id)), missing, STAGE_MC))
        if budget is not None and budget <= 0:
            break
    return wanted


# --- adaptive --------------------------------------------------------------------------------------------------------


def adaptive_steps(
    snapshot: TreeSnapshot, options: GrowthOptions, *, pending: Mapping[int, int] | None = None
) -> list[StepState]:
    """The steps of a tree the adaptive policy looks after: the non-leaf nodes of the paths of its first
    ``num_repeats`` rollouts (its base paths; down to ``max_branch_depth``; nodes with ``max_children_per_node``
    children are left alone unless something is still asked of them), with their evidence and what is still asked of
    them (``pending``: rollouts per node)."""
    pending = dict(pending or {})
    base = snapshot.rollouts[: max(1, options.num_repeats)]
    parents = {node.id for node in snapshot.nodes if snapshot.children(node.id) > 0}
    if options.max_children_per_node is not None:
        cap = options.max_children_per_node
        parents = {n for n in parents if snapshot.children(n) < cap or pending.get(n)}
    return tree_steps(
        base_paths=[snapshot.path(r.leaf_id) for r in base],
        through=snapshot.through(),
        has_children=parents,
        pending=pending,
        max_depth=options.max_branch_depth,
    )


def wrong_rollouts(snapshot: TreeSnapshot) -> list[TreeRollout]:
    """The wrong rollouts of a tree, one per distinct leaf (identical paths are searched once), oldest first."""
    seen: set[int] = set()
    wrong = []
    for rollout in snapshot.rollouts:
        if not rollout.correct and rollout.leaf_id not in seen:
            seen.add(rollout.leaf_id)
            wrong.append(rollout)
    return wrong


def as_nodes(rows: Iterable[tuple[int, int | None, int]]) -> list[TreeNode]:
    return [TreeNode(id=i, parent_id=p, depth=d) for i, p, d in rows]
