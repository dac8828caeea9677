"""Search reports of a forest: beam search for each N and the baselines (``forests.metrics.search``), computed from
the forest's rows; every report saved (by the admin's action, ``beam_search --save`` or ``al_round --save``) is kept
as a ``SearchReport`` row with the forest's size, the value source's coverage and its plot (drawn once, at save).

Forests saved before reports were kept hold their last report in ``Forest.attributes["search_report"]``: it is read
as the forest's only report until the next save, which turns it into a row first (``forest_search_report_save``).
Which value sources a forest offers, with the rollouts each reaches, is ``value_source_choices``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db.models import Count

from forests.metrics.beam import Aggregation
from forests.metrics.search import SearchReport, search_report
from forests.metrics.values import LABELLED, LABELS_PREFIX, ValueFunction, version_source
from forests.metrics_reading import forest_arrays_load, forest_values, value_function_parse
from forests.models import Forest, Node
from forests.models import SearchReport as SearchReportRow
from prmsite.core.errors import ApplicationError, ConfigError
from prmsite.core.grading import AnswerSpec
from rollouts.models import LabellingScheme, ProcessRewardLabel, Rollout

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


COVERAGE_FEW_FRACTION = 0.5  # a value source reaching fewer than this share of the rollouts is warned about
COVERAGE_ALL = "Exact values score every rollout: {rollouts:,} rollouts in {trees:,} trees."
COVERAGE_SOME = (
    "{source} scores {covered_rollouts:,} of {rollouts:,} rollouts, in {covered_trees:,} of {trees:,} trees."
)
COVERAGE_FEW = (
    "Few rollouts: {source} reaches only {covered_rollouts:,} of {rollouts:,} rollouts ({covered_trees:,} of "
    "{trees:,} trees), so its figures rest on those alone."
)
SOURCE_EXACT = "Exact values (from the ground truth): every rollout"
SOURCE_PRM = "PRM {version}: {rollouts:,} rollouts scored"
SOURCE_SCHEME = "Labelling scheme {version}: {rollouts:,} rollouts labelled"


@dataclass(frozen=True)
class Coverage:
    """The forest's size when a report was computed, and how much of it the value source scores (``None``: all)."""

    rollouts: int
    trees: int
    nodes: int
    covered_rollouts: int | None = None
    covered_trees: int | None = None

    @property
    def few(self) -> bool:
        return self.covered_rollouts is not None and self.covered_rollouts < COVERAGE_FEW_FRACTION * self.rollouts

    def text(self, source: str) -> str:
        if self.covered_rollouts is None:
            return COVERAGE_ALL.format(rollouts=self.rollouts, trees=self.trees)
        return COVERAGE_SOME.format(source=source[:1].upper() + source[1:], **self._figures())

    def warning(self, source: str) -> str | None:
        return COVERAGE_FEW.format(source=source, **self._figures()) if self.few else None

    def _figures(self) -> dict[str, int]:
        return {
            "rollouts": self.rollouts,
            "trees": self.trees,
            "covered_rollouts": self.covered_rollouts or 0,
            "covered_trees": self.covered_trees or 0,
        }


def forest_coverage(*, forest: Forest, value_function: ValueFunction) -> Coverage:
    """The forest's rollouts (those on a node), trees and nodes, and the rollouts and trees ``value_function``
    scores: exact values score every rollout; ``prm:V`` and ``labels:S`` only those with a label of that version."""
    rollouts = Rollout.objects.filter(forest_id=forest.pk, node__isnull=False)
    nodes = Node.objects.filter(forest_id=forest.pk)
    size = {"rollouts": rollouts.count(), "trees": nodes.filter(depth=0).count(), "nodes": nodes.count()}
    if value_function.kind == LABELLED:
        return Coverage(**size)
    covered = (
        ProcessRewardLabel.objects.filter(prm_version=value_function.version, rollout__in=rollouts)
        .order_by()
        .aggregate(rollouts=Count("rollout_id", distinct=True), trees=Count("rollout__node__tree_id", distinct=True))
    )
    return Coverage(**size, covered_rollouts=covered["rollouts"], covered_trees=covered["trees"])


def value_sources(*, forests: Iterable[Forest]) -> list[tuple[str, int]]:
    """Each version labelled on the rollouts of ``forests`` as a value source (``version_source``: ``labels:S`` for
    a labelling scheme's, ``prm:V`` for any other), with how many rollouts it reaches, by version. Two queries."""
    ids = [forest.pk for forest in forests]
    versions = (
        ProcessRewardLabel.objects.filter(rollout__forest_id__in=ids, rollout__node__isnull=False)
        .order_by()
        .values("prm_version")
        .annotate(rollouts=Count("rollout_id", distinct=True))
        .order_by("prm_version")
    )
    rows = [(row["prm_version"], row["rollouts"]) for row in versions]
    schemes = set(
        LabellingScheme.objects.filter(prm_version__in=[version for version, _ in rows]).values_list(
            "prm_version", flat=True
        )
    )
    return [(version_source(version, scheme=version in schemes), count) for version, count in rows]


def value_source_choices(*, forests: Iterable[Forest]) -> list[tuple[str, str]]:
    """The value sources that exist on ``forests``, as form choices: exact values, then ``value_sources`` with how
    many rollouts each reaches. Two queries."""
    choices = [(LABELLED, SOURCE_EXACT)]
    for option, count in value_sources(forests=forests):
        version = option.split(":", 1)[1]
        text = SOURCE_SCHEME if option.startswith(LABELS_PREFIX) else SOURCE_PRM
        choices.append((option, text.format(version=version, rollouts=count)))
    return choices


def source_words(value_function_option: str) -> str:
    """A value function in words, for sentences: "exact values", "PRM v1", "labelling scheme human-v1"."""
    try:
        value_function = ValueFunction.parse(value_function_option)
    except ValueError:
        return value_function_option
    if value_function.kind == LABELLED:
        return "exact values"
    return f"{'PRM' if value_function.kind == 'prm' else 'labelling scheme'} {value_function.version}"


def report_shown(row: SearchReportRow) -> dict[str, Any]:
    """A kept report as the pages show it: its figures, number, who and when, and its coverage in words."""
    coverage = Coverage(
        rollouts=row.forest_rollouts,
        trees=row.forest_trees,
        nodes=row.forest_nodes,
        covered_rollouts=row.covered_rollouts,
        covered_trees=row.covered_trees,
    )
    source = source_words(row.value_function)
    results = row.results if isinstance(row.results, dict) else {}
    return {
        **results,
        "id": row.pk,
        "value_function_option": row.value_function,
        "aggregation": row.aggregation,
        "num_beam_values": row.num_beam_values,
        "computed_at": f"{row.created_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        "created_at": row.created_at,
        "created_by": row.created_by.get_username() if row.created_by_id else "",
        "coverage": coverage,
        "coverage_text": coverage.text(source),
        "coverage_warning": coverage.warning(source),
    }


def _legacy_report(forest: Forest) -> dict[str, Any] | None:
    report = (forest.attributes or {}).get(SEARCH_REPORT_KEY)
    return report if isinstance(report, dict) and isinstance(report.get("results"), list) else None


def forest_search_report_saved(*, forest: Forest) -> dict[str, Any] | None:
    """The forest's newest kept report (``report_shown``), or the one an older version saved in its attributes,
    or ``None``. One query."""
    row = SearchReportRow.objects.filter(forest=forest).select_related("created_by").defer("plot_svg").first()
    if row is not None:
        return report_shown(row)
    return _legacy_report(forest)


def forest_search_reports(*, forest: Forest) -> Any:
    """The forest's kept reports, newest first, without their plots (a queryset: page it)."""
    return SearchReportRow.objects.filter(forest=forest).select_related("created_by").defer("plot_svg")
