"""``forests.search_reports``: a forest's search report computed from its rows; every saved report kept with the
forest's size and its value source's coverage; the report an older version kept in the attributes taken over."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from forests.metrics.beam import Aggregation
from forests.models import SearchReport
from forests.search_reports import (
    AGGREGATION_UNKNOWN,
    COVERAGE_ALL,
    COVERAGE_FEW,
    COVERAGE_SOME,
    SEARCH_REPORT_KEY,
    SOURCE_EXACT,
    SOURCE_PRM,
    SOURCE_SCHEME,
    forest_search_report,
    forest_search_report_saved,
    forest_search_reports,
    report_shown,
    value_source_choices,
)
from forests.services import forest_search_report_save
from prmsite.core.errors import ApplicationError
from rollouts.models import LabellingScheme
from tests.factories import make_label
from tests.forests.grown import grow

pytestmark = pytest.mark.django_db


def compute(grown, option: str = "labelled", aggregation: str = "last", beams=(1, 2)) -> dict:
    return forest_search_report(
        forest=grown.forest, num_beam_values=list(beams), value_function_option=option, aggregation=aggregation
    ).as_dict()


def label_tree_a(grown, version: str) -> None:
    """Labels of ``version`` on two of the forest's eight rollouts, both in tree A."""
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), prm_version=version, prm_output=[0.9, 0.8, 0.7])
    make_label(grown.rollout("A", "u1 ", "no"), prm_version=version, prm_output=[0.2, 0.1])


def test_the_report_has_one_result_per_n_on_the_trees_with_rollouts():
    grown = grow()
    report = forest_search_report(
        forest=grown.forest, num_beam_values=[1, 2], value_function_option="labelled", aggregation="last"
    )
    assert [result.num_beams for result in report.results] == [1, 2]
    assert report.num_trees == 2 and report.forest_name == grown.forest.name
    assert report.baselines["oracle"].accuracy == 1.0


def test_an_unknown_aggregation_names_the_choices():
    grown = grow()
    with pytest.raises(ApplicationError) as refused:
        forest_search_report(
            forest=grown.forest, num_beam_values=[1], value_function_option="labelled", aggregation="x"
        )
    choices = ", ".join(a.value for a in Aggregation)
    assert refused.value.message == AGGREGATION_UNKNOWN.format(choices=choices, aggregation="x")


def test_every_saved_report_is_kept_with_who_when_and_the_forests_size(django_user_model):
    grown = grow()
    user = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    assert forest_search_report_saved(forest=grown.forest) is None
    first = forest_search_report_save(forest=grown.forest, report=compute(grown, aggregation="min"), created_by=user)
    label_tree_a(grown, "prm-v1")
    second = forest_search_report_save(forest=grown.forest, report=compute(grown, "prm:prm-v1", beams=(1, 4)))
    kept = list(forest_search_reports(forest=grown.forest))
    assert [row.pk for row in kept] == [second.pk, first.pk]  # newest first, both kept
    assert (first.value_function, first.aggregation, first.num_beam_values) == ("labelled", "min", [1, 2])
    assert (second.value_function, second.num_beam_values, second.created_by) == ("prm:prm-v1", [1, 4], None)
    assert first.created_by == user and first.created_at <= second.created_at
    assert (first.forest_rollouts, first.forest_trees, first.forest_nodes) == (8, 3, 16)
    assert first.plot_svg.startswith("<?xml") and "<script" not in first.plot_svg and "<text" not in first.plot_svg
    saved = forest_search_report_saved(forest=grown.forest)
    assert saved["id"] == second.pk and saved["value_function_option"] == "prm:prm-v1"
    assert [row["num_beams"] for row in saved["results"]] == [1, 4] and saved["computed_at"].endswith(" UTC")
    assert grown.forest.attributes.get(SEARCH_REPORT_KEY) is None


def test_a_report_says_what_its_value_source_covers_and_warns_when_that_is_few():
    grown = grow()
    exact = forest_search_report_save(forest=grown.forest, report=compute(grown))
    assert (exact.covered_rollouts, exact.covered_trees) == (None, None)  # exact values score every rollout
    label_tree_a(grown, "prm-v1")
    few = forest_search_report_save(forest=grown.forest, report=compute(grown, "prm:prm-v1"))
    assert (few.covered_rollouts, few.covered_trees) == (2, 1)
    shown = {report["id"]: report for report in map(report_shown, forest_search_reports(forest=grown.forest))}
    assert shown[exact.pk]["coverage_text"] == COVERAGE_ALL.format(rollouts=8, trees=3)
    assert shown[exact.pk]["coverage_warning"] is None
    figures = {"rollouts": 8, "trees": 3, "covered_rollouts": 2, "covered_trees": 1}
    assert shown[few.pk]["coverage_text"] == COVERAGE_SOME.format(source="PRM prm-v1", **figures)
    assert shown[few.pk]["coverage_warning"] == COVERAGE_FEW.format(source="PRM prm-v1", **figures)
    for rollout in [r for rollouts in grown.rollouts.values() for r in rollouts][:6]:
        make_label(rollout, prm_version="prm-v2", prm_output=[0.5] * len(rollout.reasoning))
    many = forest_search_report_save(forest=grown.forest, report=compute(grown, "prm:prm-v2"))
    assert many.covered_rollouts == 6 and report_shown(many)["coverage_warning"] is None  # 6 of 8: not few


def test_the_report_an_older_version_kept_in_the_attributes_is_read_then_kept_as_a_row():
    grown = grow()
    old = {**compute(grown, aggregation="mean"), "computed_at": "2026-01-02 03:04 UTC"}
    grown.forest.attributes = {"limit": 3, SEARCH_REPORT_KEY: old}
    grown.forest.save()
    assert forest_search_report_saved(forest=grown.forest) == old  # read as the forest's only report
    assert not SearchReport.objects.exists()
    new = forest_search_report_save(forest=grown.forest, report=compute(grown))
    kept = list(forest_search_reports(forest=grown.forest))
    assert kept[0].pk == new.pk and len(kept) == 2
    legacy = kept[1]
    assert legacy.aggregation == "mean" and legacy.created_at == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    grown.forest.refresh_from_db()
    assert grown.forest.attributes == {"limit": 3}  # taken over once, the forest's other keys kept
    forest_search_report_save(forest=grown.forest, report=compute(grown))
    assert SearchReport.objects.filter(forest=grown.forest).count() == 3


def test_a_malformed_old_report_is_no_report():
    grown = grow()
    grown.forest.attributes = {SEARCH_REPORT_KEY: {"results": "not a list"}}
    assert forest_search_report_saved(forest=grown.forest) is None


def test_the_value_sources_offered_are_those_with_labels_on_the_forests_rollouts():
    grown = grow()
    other = grow("other-forest")
    assert value_source_choices(forests=[grown.forest]) == [("labelled", SOURCE_EXACT)]
    label_tree_a(grown, "prm-v1")
    label_tree_a(grown, "human-v1")
    LabellingScheme.objects.create(prm_version="human-v1", title="People")
    make_label(other.rollout("B", "b1 ", "no"), prm_version="elsewhere", prm_output=[1.0, 1.0])
    assert value_source_choices(forests=[grown.forest]) == [
        ("labelled", SOURCE_EXACT),
        ("labels:human-v1", SOURCE_SCHEME.format(version="human-v1", rollouts=2)),
        ("prm:prm-v1", SOURCE_PRM.format(version="prm-v1", rollouts=2)),
    ]
    assert ("prm:elsewhere", SOURCE_PRM.format(version="elsewhere", rollouts=1)) in value_source_choices(
        forests=[grown.forest, other.forest]
    )


def test_a_report_with_an_unknown_aggregation_is_refused_and_nothing_is_kept():
    grown = grow()
    with pytest.raises(ApplicationError) as refused:
        forest_search_report_save(forest=grown.forest, report={**compute(grown), "aggregation": "x" * 300})
    choices = ", ".join(a.value for a in Aggregation)
    assert refused.value.message == AGGREGATION_UNKNOWN.format(choices=choices, aggregation="x" * 100)
    assert not SearchReport.objects.exists()
