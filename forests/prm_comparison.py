"""The PRM comparison page's reads: a forest's PRM versions and labelling schemes side by side against one reference
(``labelled``, the exact values, or a ``labels:S`` scheme): ``evaluate_prm``'s figures (``prm_evaluation``, the same
function), each source's coverage, the newest kept search report of each, and the steps where each source's value
is farthest from the exact value (``forests.metrics.disagreement``).

A fixed number of queries per source, and at most ``SOURCES_MAX`` sources: the page's queries do not grow with the
forest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from forests.metrics.disagreement import StepDisagreement, step_disagreements
from forests.metrics.forest import NO_ROLLOUT_ROW
from forests.metrics.values import LABELLED, LABELS_PREFIX, label_values, labelled_values
from forests.metrics_reading import forest_arrays_load, label_outputs, value_function_parse
from forests.models import Forest
from forests.models import SearchReport as SearchReportRow
from forests.prm_evaluation import REFERENCE_INVALID, prm_evaluation
from forests.search_reports import value_sources
from forests.tree_sources import UNKNOWN_SOURCE, threshold_parse
from prmsite.core.errors import ApplicationError
from rollouts.models import ProcessRewardLabel

SOURCES_MAX = 6  # sources compared on one page
DISAGREEMENTS_SHOWN = 20  # steps listed per source
TOO_MANY_SOURCES = "Compare at most {max} sources at once."
NO_SOURCES = "No PRM version or labelling scheme to compare: no label reaches a rollout of this forest."
EXACT_NOT_COMPARED = "The exact values are what the sources are compared with; choose prm:V or labels:S sources."
SAME_AS_REFERENCE = "the reference itself"


@dataclass(frozen=True)
class ComparisonRequest:
    sources: list[str]  # canonical prm:V / labels:S, in the order asked
    reference: str  # canonical: labelled or labels:S
    threshold: float
    available: list[tuple[str, int]]  # every source on the forest, with the rollouts it reaches


@dataclass
class SourceComparison:
    source: str
    rollouts: int  # rollouts its labels reach
    forest_rollouts: int
    figures: dict[str, Any] | None  # ``prm_evaluation(...).as_dict()``, None when not scored (see ``not_scored``)
    not_scored: str | None
    disagreements: list[StepDisagreement]
    report_id: int | None  # newest kept search report of this source
    report_aggregation: str | None

    @property
    def coverage(self) -> float | None:
        return self.rollouts / self.forest_rollouts if self.forest_rollouts else None


def comparison_request(
    *, forest: Forest, sources: list[str], reference: str | None, threshold: str | None
) -> ComparisonRequest:
    """The page's choice, checked: ``sources`` (none: every source on the forest, at most ``SOURCES_MAX``), the
    ``reference`` (none: ``labelled``) and the ``threshold``. ``ApplicationError`` (one line) for anything the page
    cannot compare. Two queries."""
    available = value_sources(forests=[forest])
    known = {option for option, _ in available}
    chosen: list[str] = []
    for option in (part.strip() for value in sources for part in value.split(",")):
        if not option:
            continue
        name = str(value_function_parse(option))
        if name == LABELLED:
            raise ApplicationError(EXACT_NOT_COMPARED)
        if name not in known:
            raise ApplicationError(UNKNOWN_SOURCE.format(source=name, forest=forest.name))
        if name not in chosen:
            chosen.append(name)
    if len(chosen) > SOURCES_MAX:
        raise ApplicationError(TOO_MANY_SOURCES.format(max=SOURCES_MAX))
    if not chosen:  # none asked: every source on the forest (none when no label reaches it)
        chosen = [option for option, _ in available][:SOURCES_MAX]
    reference_text = (reference or "").strip() or LABELLED
    reference_name = str(value_function_parse("labelled" if reference_text == "exact" else reference_text))
    if reference_name != LABELLED and not reference_name.startswith(LABELS_PREFIX):
        raise ApplicationError(REFERENCE_INVALID.format(reference=reference_text))
    if reference_name != LABELLED and reference_name not in known:
        raise ApplicationError(UNKNOWN_SOURCE.format(source=reference_name, forest=forest.name))
    return ComparisonRequest(
        sources=chosen, reference=reference_name, threshold=threshold_parse(threshold), available=available
    )


def prm_comparison(*, forest: Forest, request: ComparisonRequest) -> list[SourceComparison]:
    """Each chosen source compared (see the module docstring): the forest's arrays once (two queries), then per
    source its labels (one query) and ``prm_evaluation`` (a few queries; a labelling scheme's codes read as their
    values), and one query for the newest search reports."""
    arrays = forest_arrays_load(forest=forest)
    exact = labelled_values(arrays)
    forest_rollouts = int(np.count_nonzero(arrays.rollout_id != NO_ROLLOUT_ROW))
    counts = dict(request.available)
    newest: dict[str, tuple[int, str]] = {}
    reports = SearchReportRow.objects.filter(forest=forest, value_function__in=request.sources).values_list(
        "pk", "value_function", "aggregation"
    )
    for pk, value_function, aggregation in reports.order_by("-created_at", "-id"):
        newest.setdefault(value_function, (pk, aggregation))
    compared = []
    for source in request.sources:
        value_function = value_function_parse(source)
        scheme = value_function.kind == "labels"
        rows = ProcessRewardLabel.objects.filter(
            prm_version=value_function.version, rollout__forest_id=forest.pk, rollout__node__isnull=False
        ).values_list("id", "rollout__node_id", "prm_output")
        labels = []
        for label_id, node_id, output in rows.order_by("id"):
            try:
                index = arrays.index_of(node_id)
            except KeyError:  # a rollout that arrived after the forest was read
                continue
            labels.append((index, label_outputs(label_id, value_function.version, output, codes=scheme)))
        disagreements = step_disagreements(arrays, exact, label_values(arrays, labels), limit=DISAGREEMENTS_SHOWN)
        figures = not_scored = None
        if source == request.reference:
            not_scored = SAME_AS_REFERENCE
        else:  # a scheme's step codes are read as their values, then measured as a PRM's scores are
            figures = prm_evaluation(
                prm_version=value_function.version,
                reference=request.reference,
                forest=forest,
                threshold=request.threshold,
                codes=scheme,
            ).as_dict()
        report = newest.get(source)
        compared.append(
            SourceComparison(
                source=source,
                rollouts=counts.get(source, 0),
                forest_rollouts=forest_rollouts,
                figures=figures,
                not_scored=not_scored,
                disagreements=disagreements,
                report_id=report[0] if report else None,
                report_aggregation=report[1] if report else None,
            )
        )
    return compared
