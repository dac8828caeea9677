"""The forest page's progress and growth figures on a large forest: computed once per forest fingerprint (one query
that reads no node row) or state of its tally, then served from the process's cache, and always the figures a full
count gives."""

from __future__ import annotations

from collections import Counter

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from forests.growth.selectors import forest_growth_summary
from forests.intake import receive_rollout
from forests.models import Forest, ForestTally, RolloutGrowth
from forests.selectors import _forest_fingerprint, forest_progress, forest_progress_many
from tests.factories import make_forest, make_rollout, make_root, rollout_fields
from tests.forests.growth.helpers import answer, claim, plan, seed

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


def stages_counted(forest: Forest) -> dict[str, int]:
    rows = RolloutGrowth.objects.filter(forest=forest).values_list("stage", flat=True)
    return {(stage or "none"): n for stage, n in Counter(rows).items()}


def test_the_growth_summarys_rollouts_by_stage_follow_the_tally_and_a_second_view_does_not_count_them():
    forest, _roots = seed("cost-forest", roots=2)
    assert forest_growth_summary(forest=forest, now=timezone.now()).rollouts_by_stage == {}  # no tally yet
    plan(forest, policy="mc", num_repeats=2, completions_per_step=4, max_forest_tokens=999_999)
    first, second = claim(forest).expansions
    for expansion in (first, second):
        answer(forest, expansion, ["Step 1: a. ", "code: 1"], 1, usage=(100, 23))
        summary = forest_growth_summary(forest=forest, now=timezone.now())
        assert summary.rollouts_by_stage == stages_counted(forest)
    assert summary.rollouts_by_stage == {"repeats": 2} and summary.rollouts == 2

    with CaptureQueriesContext(connection) as queries:
        assert forest_growth_summary(forest=forest, now=timezone.now()) == summary
    assert not any(RolloutGrowth._meta.db_table in query["sql"] for query in queries.captured_queries)


def test_the_fingerprint_reads_the_forests_tally_where_it_has_one_and_counts_otherwise():
    forest = make_forest()
    root = make_root(forest, ground_truth=0)
    first = make_rollout(forest=forest, node=root)  # no bookkeeping: no tally, its rollouts counted
    second = make_rollout(forest=forest, node=root)
    counted = _forest_fingerprint(forest=forest)
    first.delete()  # an older rollout deleted: the count sees it
    assert _forest_fingerprint(forest=forest) != counted
    second.delete()
    post(forest, ["A."], 1)  # the bookkeeping makes the forest's tally
    tallied = _forest_fingerprint(forest=forest)
    assert ForestTally.objects.get(forest=forest).rollouts == 1
    ForestTally.objects.filter(forest=forest).update(rollouts=41)  # read, not counted
    assert _forest_fingerprint(forest=forest) == (*tallied[:3], 41, tallied[4])
    post(forest, ["B."], 0)
    progress = forest_progress(forest=forest)
    assert (progress.rollouts, progress.correct_rollouts) == (2, 1) and progress == counted_progress(forest)


def counted_progress(forest: Forest):
    return forest_progress_many(forest_ids=[forest.pk])[forest.pk]
