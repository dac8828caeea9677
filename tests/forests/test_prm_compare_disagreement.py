"""forests.metrics.disagreement: the steps where a source is farthest from the exact values, largest first, ties by
id, roots and steps without both values left out."""

from __future__ import annotations

import numpy as np

from forests.metrics.disagreement import step_disagreements
from forests.metrics.forest import forest_arrays
from forests.metrics.values import NodeValues

# One tree: root 10 -> 11 -> 12 (leaf), root 10 -> 13 (leaf); a second tree: root 20 -> 21 (leaf).
NODES = [(10, None, 0, False), (11, 10, 1, False), (12, 11, 2, True), (13, 10, 1, True), (20, None, 0, False)]
NODES += [(21, 20, 1, True)]


def arrays():
    rows = [(i, parent, depth, leaf, None, None, False) for i, parent, depth, leaf in NODES]
    return forest_arrays(rows, [])


def values(per_node: dict[int, tuple[int, float]], ids: list[int]) -> NodeValues:
    count = np.array([float(per_node.get(i, (0, 0.0))[0]) for i in ids])
    total = np.array([float(per_node.get(i, (0, 0.0))[1]) for i in ids])
    return NodeValues(count=count, total=total)


def test_largest_difference_first_ties_by_id_roots_and_missing_values_left_out():
    a = arrays()
    ids = a.ids.tolist()
    exact = values({10: (4, 4), 11: (2, 1), 12: (1, 0), 13: (2, 2), 20: (1, 0), 21: (1, 0)}, ids)
    source = values({10: (1, 0), 11: (2, 2.0), 12: (1, 0.5), 21: (3, 1.5)}, ids)  # 13: no label
    found = step_disagreements(a, exact, source, limit=10)
    assert [(d.node_id, d.root_id, d.depth) for d in found] == [(11, 10, 1), (12, 10, 2), (21, 20, 1)]
    assert [d.difference for d in found] == [0.5, 0.5, 0.5]
    assert (found[2].exact, found[2].exact_count, found[2].source, found[2].source_count) == (0.0, 1, 0.5, 3)
    assert [d.node_id for d in step_disagreements(a, exact, source, limit=1)] == [11]
    assert step_disagreements(a, exact, source, limit=0) == []
