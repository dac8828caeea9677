"""Where a value source disagrees most with the exact values: the steps (never a root) whose source value is
farthest from their exact value, ``|source - exact|``, largest first. Pure: no Django.

A step counts only when both values exist (a rollout reaches it, and a label of the source covers it). Ties are
broken by node id, so the same forest always gives the same list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forests.metrics.forest import ForestArrays
from forests.metrics.values import NodeValues


@dataclass(frozen=True)
class StepDisagreement:
    node_id: int
    root_id: int  # the node's tree, for its page
    depth: int
    exact: float
    exact_count: int  # rollouts through the step
    source: float
    source_count: int  # label outputs behind the source's value

    @property
    def difference(self) -> float:
        return abs(self.source - self.exact)


def step_disagreements(
    arrays: ForestArrays, exact: NodeValues, source: NodeValues, *, limit: int
) -> list[StepDisagreement]:
    """The ``limit`` steps where ``source`` differs most from ``exact`` (see the module docstring)."""
    if arrays.size == 0 or limit <= 0:
        return []
    exact_value = exact.value
    source_value = source.value
    both = (arrays.depth > 0) & ~np.isnan(exact_value) & ~np.isnan(source_value)
    indices = np.flatnonzero(both)
    if indices.size == 0:
        return []
    difference = np.abs(source_value[indices] - exact_value[indices])
    # Largest difference first, then ascending id (ids ascend with the index).
    order = np.lexsort((indices, -difference))[:limit]
    return [
        StepDisagreement(
            node_id=int(arrays.ids[i]),
            root_id=int(arrays.ids[arrays.root[i]]),
            depth=int(arrays.depth[i]),
            exact=float(exact_value[i]),
            exact_count=int(exact.count[i]),
            source=float(source_value[i]),
            source_count=int(source.count[i]),
        )
        for i in indices[order].tolist()
    ]
