"""The forest page's progress figures on a large forest: computed once per forest fingerprint (one query that
reads no node row), then served from the process's cache, and always the figures a full count gives."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from forests.intake import receive_rollout
from forests.models import Forest
from forests.selectors import forest_progress, forest_progress_many
from tests.factories import make_forest, make_root, rollout_fields

pytestmark = pytest.mark.django_db


def post(forest: Forest, steps: list[str], prediction: int):
    return receive_rollout(**rollout_fields(reasoning=steps, prediction=prediction), forest_name=forest.name)


def counted(forest: Forest):
    return forest_progress_many(forest_ids=[forest.pk])[forest.pk]


def test_progress_is_the_full_count_as_the_forest_grows_and_a_second_view_reads_no_rows():
    forest = make_forest()
    make_root(forest, ground_truth=0)
    assert forest_progress(forest=forest) == counted(forest)
    for steps, prediction in [(["A.", "B."], 0), (["A.", "C."], 1), (["D."], 0), (["A.", "B."], 1)]:
        post(forest, steps, prediction)
        progress = forest_progress(forest=forest)
        assert progress == counted(forest)
    assert (progress.rollouts, progress.correct_rollouts, progress.trees_with_rollouts) == (4, 2, 1)

    with CaptureQueriesContext(connection) as queries:
        assert forest_progress(forest=forest) == progress
    # The fingerprint only (newest node, rollouts' count and newest: no node row read), no per-leaf subquery.
    assert len(queries) == 1
    assert not any("EXISTS" in query["sql"].upper() for query in queries.captured_queries)


def test_a_leaf_without_a_rollout_row_counts_and_a_new_forest_is_not_served_another_ones_figures():
    forest = make_forest()
    root = make_root(forest, ground_truth=0)
    root.is_leaf = True
    root.save(update_fields=["is_leaf"])
    assert forest_progress(forest=forest) == counted(forest)
    assert forest_progress(forest=forest).rollouts == 1
    other = make_forest()
    make_root(other, ground_truth=0)
    assert forest_progress(forest=other) == counted(other)
    assert forest_progress(forest=other).rollouts == 0
