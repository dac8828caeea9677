"""The names of the growth policies and what each costs, as the API, the forest pages and the rollout worker's flags
show them. The policies' decisions are ``forests.growth.policies``; the names are here so that the worker, a pure
client, can offer them without importing the server's apps."""

from __future__ import annotations

POLICY_REPEATS = "repeats"
POLICY_MC = "mc"
POLICY_OMEGA = "omega"
POLICIES = (POLICY_REPEATS, POLICY_MC, POLICY_OMEGA)
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
}
