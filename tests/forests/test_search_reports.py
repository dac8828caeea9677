"""``forests.search_reports``: a forest's search report computed from its rows, and the one saved on it."""

from __future__ import annotations

import pytest

from forests.metrics.beam import Aggregation
from forests.search_reports import (
    AGGREGATION_UNKNOWN,
    SEARCH_REPORT_KEY,
    forest_search_report,
    forest_search_report_saved,
)
from forests.services import forest_search_report_save
from prmsite.core.errors import ApplicationError
from tests.forests.grown import grow

pytestmark = pytest.mark.django_db


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


def test_the_saved_report_is_read_back_and_a_malformed_one_is_none():
    grown = grow()
    assert forest_search_report_saved(forest=grown.forest) is None
    report = forest_search_report(
        forest=grown.forest, num_beam_values=[1], value_function_option="labelled", aggregation="min"
    )
    forest_search_report_save(forest=grown.forest, report=report.as_dict())
    saved = forest_search_report_saved(forest=grown.forest)
    assert saved["results"][0]["num_beams"] == 1 and "computed_at" in saved
    grown.forest.attributes = {SEARCH_REPORT_KEY: {"results": "not a list"}}
    assert forest_search_report_saved(forest=grown.forest) is None
