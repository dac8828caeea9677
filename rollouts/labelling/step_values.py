"""Step values that labels are compared with but the labelling does not compute: the forest's Monte-Carlo values.

The forests app provides them (``forests.labelling_values.forest_mc_values``, registered in ``forests.apps`` when
the app is ready): forests sits above rollouts in the layers (pyproject.toml's import contracts), so the labelling
asks through this one seam instead of importing forests."""

from __future__ import annotations

from collections.abc import Callable

McValues = Callable[..., dict[int, list[float | None]]]

NOT_REGISTERED = "no Monte-Carlo step values are registered (is the forests app installed?)"

_mc_values: list[McValues] = []


def mc_values_register(provider: McValues) -> None:
    """Make ``provider(steps_by_rollout=...)`` the source of Monte-Carlo step values (the last one registered wins)."""
    _mc_values[:] = [provider]


def rollout_mc_values(*, steps_by_rollout: dict[int, int]) -> dict[int, list[float | None]]:
    """The Monte-Carlo value of each step of these rollouts (``{rollout_id: steps}``) from the registered provider;
    rollouts not in a forest, or whose path there is not as long as their steps, are left out."""
    if not _mc_values:
        raise RuntimeError(NOT_REGISTERED)
    return _mc_values[0](steps_by_rollout=steps_by_rollout)
