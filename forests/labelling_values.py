"""The forest's Monte-Carlo step values of labelled rollouts: what a labelling scheme's page and its consensus export
compare people's and judges' labels with. Registered with the labelling app when the forests app is ready
(``forests.apps``), since the labelling (in rollouts) sits below forests and must not import it."""

from __future__ import annotations

from collections import defaultdict

from forests.metrics.forest import forest_arrays
from forests.metrics.values import labelled_values
from forests.metrics_reading import streamed
from forests.models import Node
from rollouts.labelling.stats import ROLLOUTS_PER_QUERY
from rollouts.models import Rollout

TREES_PER_QUERY = 200  # trees whose nodes are read in one query


def forest_mc_values(*, steps_by_rollout: dict[int, int]) -> dict[int, list[float | None]]:
    """The forest's Monte-Carlo value of each step of these rollouts (``{rollout_id: steps}``): the exact
    (``labelled``) value of the step's node, the share of correct rollouts through it (``forests.metrics.values``).
    Only the trees these rollouts belong to are read, a few at a time. Rollouts that are not in a forest, or whose
    path there is not as long as their steps, are left out."""
    leaves: dict[int, list[tuple[int, int]]] = defaultdict(list)  # tree -> [(rollout, leaf)]
    ids = sorted(steps_by_rollout)
    for start in range(0, len(ids), ROLLOUTS_PER_QUERY):
        for rollout_id, leaf_id, tree_id in Rollout.objects.filter(
            pk__in=ids[start : start + ROLLOUTS_PER_QUERY], node__isnull=False
        ).values_list("id", "node_id", "node__tree_id"):
            leaves[tree_id].append((rollout_id, leaf_id))
    result: dict[int, list[float | None]] = {}
    trees = sorted(leaves)
    for start in range(0, len(trees), TREES_PER_QUERY):
        chunk = trees[start : start + TREES_PER_QUERY]
        rollouts = Rollout.objects.filter(node__tree_id__in=chunk).values_list(
            "id", "node_id", "prediction", "attributes__usage__total_tokens", "correct"
        )
        nodes = Node.objects.filter(tree_id__in=chunk).values_list(
            "id", "parent_id", "depth", "is_leaf", "prediction", "ground_truth", "correct"
        )
        with streamed(nodes) as node_rows:
            arrays = forest_arrays(node_rows, list(rollouts))
        value = labelled_values(arrays).value
        for tree_id in chunk:
            for rollout_id, leaf_id in leaves[tree_id]:
                path = arrays.path(arrays.index_of(leaf_id))  # the step nodes, the root's child first
                if len(path) == steps_by_rollout[rollout_id]:
                    result[rollout_id] = [None if value[i] != value[i] else float(value[i]) for i in path]
    return result
