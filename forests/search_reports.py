"""Search reports of a forest: beam search for each N and the baselines (``forests.metrics.search``), computed from
the forest's rows, and the report last saved on the forest (by the admin's action or ``beam_search --save``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from forests.metrics.beam import Aggregation
from forests.metrics.search import SearchReport, search_report
from forests.metrics_reading import forest_arrays_load, forest_values, value_function_parse
from forests.models import Forest
from prmsite.core.errors import ApplicationError, ConfigError
from prmsite.core.grading import AnswerSpec

SEARCH_REPORT_KEY = "search_report"  # where the saved report lives in ``Forest.attributes``
AGGREGATION_UNKNOWN = "aggregation must be one of {choices}, not {aggregation!r}"


def forest_search_report(
    *,
    forest: Forest,
    num_beam_values: Sequence[int],
    value_function_option: str,
    aggregation: str,
    on_rows: Callable[[int], None] | None = None,
) -> SearchReport:
    """Beam search for each N and the baselines over ``forest`` (see ``forests.metrics.search``)."""
    value_function = value_function_parse(value_function_option)
    try:
        aggregation = Aggregation(aggregation)
    except ValueError as exc:
        choices = ", ".join(a.value for a in Aggregation)
        raise ApplicationError(AGGREGATION_UNKNOWN.format(choices=choices, aggregation=aggregation)) from exc
    arrays = forest_arrays_load(forest=forest, on_rows=on_rows)
    values = forest_values(forest=forest, arrays=arrays, value_function=value_function)
    return search_report(
        arrays,
        values.value,
        forest_name=forest.name,
        value_function_option=str(value_function),
        aggregation=aggregation,
        num_beam_values=num_beam_values,
        answer_spec=forest_answer_spec(forest),
    )


def forest_answer_spec(forest: Forest) -> AnswerSpec:
    """The forest's answer kind, as seeding stored it in its rollout config (label for forests made before kinds)."""
    try:
        return AnswerSpec.from_settings(forest.rollout_config)
    except ConfigError as exc:
        raise ApplicationError(f"forest {forest.name!r}: {exc.message}") from exc


def forest_search_report_saved(*, forest: Forest) -> dict[str, Any] | None:
    """The search report last saved on ``forest`` (by the admin action or ``beam_search --save``), if any."""
    report = (forest.attributes or {}).get(SEARCH_REPORT_KEY)
    return report if isinstance(report, dict) and isinstance(report.get("results"), list) else None
