"""forest_delete removes a forest and its nodes with set-based statements and keeps rollouts, detached."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from forests.models import Forest, Node
from forests.services import forest_delete
from forests.trie import forest_rollout_insert
from rollouts.models import Rollout
from tests.factories import make_forest, make_label, make_rollout, make_root

pytestmark = pytest.mark.django_db


def grow(forest: Forest, roots: int, rollouts_per_root: int) -> None:
    for r in range(roots):
        make_root(forest, f"{forest.name} item {r}", ground_truth=r % 2)
        for k in range(rollouts_per_root):
            leaf = forest_rollout_insert(
                forest_name=forest.name,
                example=f"{forest.name} item {r}",
                steps=["shared start. ", f"branch {k % 3}. ", f"end {k}"],
                prediction=k % 2,
            )
            make_rollout(forest=forest, node=leaf)


def test_delete_removes_every_node_and_only_this_forests():
    doomed, kept = make_forest("doomed"), make_forest("kept")
    grow(doomed, roots=3, rollouts_per_root=5)
    grow(kept, roots=2, rollouts_per_root=2)
    kept_nodes = Node.objects.filter(forest=kept).count()
    doomed_nodes = Node.objects.filter(forest=doomed).count()
    result = forest_delete(forest=doomed)
    assert result.nodes == doomed_nodes
    assert result.rollouts_detached == 15
    assert not Forest.objects.filter(name="doomed").exists()
    assert not Node.objects.filter(forest_id=doomed.pk).exists()
    assert Node.objects.filter(forest=kept).count() == kept_nodes
    assert Rollout.objects.filter(forest=kept, node__isnull=False).count() == 4


def test_rollouts_and_their_labels_survive_detached():
    forest = make_forest("f")
    grow(forest, roots=1, rollouts_per_root=2)
    rollout = Rollout.objects.filter(forest=forest).first()
    make_label(rollout)
    forest_delete(forest=forest)
    rollout.refresh_from_db()
    assert rollout.forest_id is None and rollout.node_id is None
    assert rollout.labels.count() == 1


def test_delete_takes_a_constant_number_of_statements_whatever_the_size():
    def statements(roots: int) -> int:
        forest = make_forest(f"size-{roots}")
        grow(forest, roots=roots, rollouts_per_root=3)
        with CaptureQueriesContext(connection) as ctx:
            forest_delete(forest=forest)
        return len(ctx.captured_queries)

    assert statements(1) == statements(8)
