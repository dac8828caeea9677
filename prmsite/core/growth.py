"""The names of the growth policies and what each costs, as the API, the forest pages and the rollout worker's flags
show them. The policies' decisions are ``forests.growth.policies``; the names are here so that the worker, a pure
client, can offer them without importing the server's apps. The omega policy's binary search is here too: it is pure,
and the budget replay (``prmsite.core.mc_budget``) runs it as well as the growth planning."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

POLICY_REPEATS = "repeats"
POLICY_MC = "mc"
POLICY_OMEGA = "omega"
POLICY_ADAPTIVE = "adaptive"
POLICIES = (POLICY_REPEATS, POLICY_MC, POLICY_OMEGA, POLICY_ADAPTIVE)
DEFAULT_POLICY = POLICY_MC  # repeats, then mc

# The policy's documentation, as the API and the command show it.
POLICY_HELP = {
    POLICY_REPEATS: "bring every root to num_repeats complete rollouts; cost: roots x num_repeats generations",
    POLICY_MC: "repeats, then give every non-leaf node on those paths (down to max_branch_depth) at least "
    "completions_per_step rollouts through it (Math-Shepherd); cost: up to num_repeats x steps x "
    "completions_per_step generations per root",
    POLICY_OMEGA: "repeats, then binary-search every wrong rollout for its first wrong step with "
    "completions_per_step completions per probe (OmegaPRM); cost: completions_per_step x ceil(log2 steps) "
    "generations per wrong rollout",
    POLICY_ADAPTIVE: "repeats, then completions in rounds of round_size from the steps of the wrong rollouts, each "
    "step until its label is decided (estimate hard: its first correct completion, or max_completions_per_step "
    "without one; soft: a Wilson interval narrower than precision), the most uncertain steps first; steps a "
    "correct rollout passes through are known good and cost nothing; cost: at most max_completions_per_step "
    "generations per step, far fewer where labels are clear",
}


# --- omega: the binary search of OmegaPRM ----------------------------------------------------------------------------


@dataclass
class OmegaSearch:
    """The search for the first wrong step of one wrong rollout, over ``path`` (root first, the wrong leaf last).

    Invariant while searching: step ``lo`` has a correct continuation (``lo`` 0 is the root, and the tree has a
    correct rollout), step ``hi`` has none (at first the wrong leaf itself). ``probe`` is the depth being sampled.
    ``first_error`` is the depth of the first wrong step once found (``None``: the path has no such step: a
    continuation of its very last step reached the right answer).
    """

    path: list[int]
    lo: int = 0
    hi: int = 0
    probe: int | None = None
    done: bool = False
    first_error: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def omega_start(path: Sequence[int], through: Mapping[int, tuple[int, int]]) -> OmegaSearch:
    """A search over ``path`` (a wrong rollout's nodes, root first), advanced as far as what is already known allows:
    a step with a correct rollout through it has a correct continuation."""
    path = list(path)
    known_positive = [i for i, node_id in enumerate(path) if through.get(node_id, (0, 0))[1] > 0]
    search = OmegaSearch(path=path, lo=max(known_positive, default=0), hi=len(path) - 1)
    return _omega_advance(search, through)


def omega_record(
    search: OmegaSearch, *, positive: bool, through: Mapping[int, tuple[int, int]] | None = None
) -> OmegaSearch:
    """The search after its probe was answered: ``positive`` when some completion from the probe was correct."""
    if search.done or search.probe is None:
        return search
    if positive:
        search.lo = search.probe
    else:
        search.hi = search.probe
    search.probe = None
    return _omega_advance(search, through or {})


def _omega_advance(search: OmegaSearch, through: Mapping[int, tuple[int, int]]) -> OmegaSearch:
    while True:
        if search.lo >= search.hi:
            # A continuation of the wrong leaf itself reached the right answer: no first wrong step on this path.
            search.done, search.first_error, search.probe = True, None, None
            return search
        if search.hi - search.lo == 1:
            search.done, search.first_error, search.probe = True, search.hi, None
            return search
        mid = (search.lo + search.hi) // 2
        if through.get(search.path[mid], (0, 0))[1] > 0:
            search.lo = mid  # known already: a correct rollout passes through this step
            continue
        search.probe = mid
        return search


def omega_probes_max(steps: int) -> int:
    """Most probes one search makes over a rollout of ``steps`` steps: ``ceil(log2 steps)``."""
    return max(0, math.ceil(math.log2(steps))) if steps > 1 else 0
