"""``evaluate_prm``'s read: a PRM version's step scores against a reference (``labelled`` or a labelling scheme),
streamed label by label and measured by ProcessBench's measure (``forests.metrics.evaluation``), overall and per
subset (the ``subset`` or ``source`` field of the tree root's item, as ``import_dataset`` stores ProcessBench's), at a
fixed threshold or at one tuned on a named subset (``prmsite.core.processbench``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models.fields.json import KeyTextTransform

from forests.metrics.evaluation import LABELS_STEP_OK, PrmEvaluation, mean_outputs
from forests.metrics.forest import ForestArrays
from forests.metrics.values import LABELLED, labelled_values
from forests.metrics_reading import (
    STREAM_CHUNK,
    forest_arrays_load,
    label_outputs,
    streamed,
    value_function_parse,
)
from forests.models import Forest
from prmsite.core.domain import PRM_THRESHOLD
from prmsite.core.errors import ApplicationError
from prmsite.core.processbench import (
    SUBSET_FIELDS,
    ProcessBenchResult,
    first_error,
    mean_f1,
    processbench_by_subset,
    subset_name,
    tune_threshold,
)
from rollouts.models import ProcessRewardLabel

REFERENCE_INVALID = "reference must be labelled or labels:SCHEME, not {reference!r}"
THRESHOLD_NOT_FINITE = "threshold must be a finite number"
TUNE_SUBSET_EMPTY = "no evaluated rollout is in subset {subset!r} to tune the threshold on (subsets: {subsets})"
TUNE_SUBSET_UNDEFINED = "cannot tune the threshold on subset {subset!r}: {reason}"


@dataclass
class SubsetPrmEvaluation(PrmEvaluation):
    """``PrmEvaluation`` that also knows each evaluated rollout's subset: ProcessBench's figures per subset and their
    mean F1 (ProcessBench's headline) beside the pooled ones, and the subset a tuned threshold was chosen on."""

    subsets: list[str | None] = field(default_factory=list)  # parallel to reference_first / predicted_first
    threshold_tuned_on: str | None = None
    tuned_candidates: int | None = None  # distinct score values tried when tuning

    def add_in(self, subset: str | None, reference_ok: Sequence[bool], scores: Sequence[float]) -> None:
        """``add`` one rollout of ``subset`` (``None``: its tree's item names none)."""
        before = len(self.reference_first)
        self.add(reference_ok, scores)
        if len(self.reference_first) > before:
            self.subsets.append(subset)

    @property
    def by_subset(self) -> list[tuple[str | None, ProcessBenchResult]]:
        return processbench_by_subset(self.subsets, self.reference_first, self.predicted_first)

    def as_dict(self) -> dict[str, Any]:
        """``PrmEvaluation.as_dict`` (``f1`` there is the pooled F1) plus ``subsets`` (ProcessBench's figures of each
        subset, ``subset`` null for rollouts whose item names none), ``mean_subset_f1`` (their mean: ProcessBench's
        "Average F1") and ``threshold_tuned_on``."""
        by_subset = self.by_subset
        return {
            **super().as_dict(),
            "threshold_tuned_on": self.threshold_tuned_on,
            "tuned_candidates": self.tuned_candidates,
            "subsets": [
                {"subset": subset, "num_rollouts": result.num_erroneous + result.num_correct, **result.as_dict()}
                for subset, result in by_subset
            ],
            "mean_subset_f1": mean_f1(result for _, result in by_subset),
        }


def _compared(reference_ok: Sequence[bool], scores: Sequence[float]) -> tuple[int, list[float]] | None:
    """The reference's first error and the scores as ``PrmEvaluation.add`` compares them (as far as both go)."""
    length = min(len(reference_ok), len(scores))
    if length == 0:
        return None
    return first_error(reference_ok[:length]), list(scores[:length])


def prm_evaluation(
    *,
    prm_version: str,
    reference: str,
    forest: Forest | None = None,
    threshold: float = PRM_THRESHOLD,
    tune_threshold_on: str | None = None,
    on_labels: Callable[[int], None] | None = None,
    codes: bool = False,
) -> SubsetPrmEvaluation:
    """ProcessBench's measure of ``prm_version`` against ``reference`` (see ``forests.metrics.evaluation``), pooled
    and per subset.

    ``codes``: ``prm_version`` is a labelling scheme (the source ``labels:V``), whose outputs are step label codes:
    each is read as its value by the domain's one rule (``prmsite.core.domain.label_code_value``: 0 -> 0.0,
    1 -> 1.0, 2 -> 0.5) and the values are measured as a PRM's scores are. Without it, outputs are scores as they are.

    Streams the version's labels ordered by forest and rollout, loading one forest at a time for ``labelled``. With
    ``tune_threshold_on``, ``threshold`` is ignored: the rollouts are kept in memory (scores and reference) until
    the threshold that maximises that subset's F1 is chosen, then every rollout is measured at it.
    """
    reference_function = value_function_parse(reference)
    if reference_function.kind == "prm":
        raise ApplicationError(REFERENCE_INVALID.format(reference=reference))
    if not math.isfinite(threshold):
        raise ApplicationError(THRESHOLD_NOT_FINITE)
    evaluation = SubsetPrmEvaluation(
        prm_version=prm_version,
        reference=str(reference_function),
        threshold=threshold,
        forest_name=forest.name if forest is not None else None,
    )
    labels = ProcessRewardLabel.objects.filter(prm_version=prm_version)
    if forest is not None:
        labels = labels.filter(rollout__forest_id=forest.pk)

    kept: list[tuple[str | None, Sequence[bool], list[float]]] = []  # when tuning: every rollout, measured later

    scheme: dict[int, list[list[float]]] = {}
    if reference_function.kind == "labels":
        scheme_labels = ProcessRewardLabel.objects.filter(
            prm_version=reference_function.version, rollout__in=labels.values("rollout_id")
        )
        with streamed(scheme_labels.order_by().values_list("id", "rollout_id", "prm_output")) as scheme_rows:
            for label_id, rollout_id, output in scheme_rows:
                outputs = label_outputs(label_id, reference_function.version, output, codes=True)
                scheme.setdefault(rollout_id, []).append(outputs)

    current_forest_id: int | None = None
    arrays: ForestArrays | None = None
    values = None
    pending: list[list[float]] = []
    pending_rollout: tuple[int, int | None, str | None] | None = None

    def finish() -> None:
        if pending_rollout is None:
            return
        rollout_id, node_id, subset = pending_rollout
        scores = mean_outputs(pending)
        if reference_function.kind == "labels":
            if rollout_id not in scheme:
                evaluation.skip("no reference label")
                return
            reference_ok = [v >= LABELS_STEP_OK for v in mean_outputs(scheme[rollout_id])]
        else:
            if arrays is None or node_id is None:
                evaluation.skip("not in a forest")
                return
            try:
                leaf = arrays.index_of(node_id)
            except KeyError:
                evaluation.skip("not in a forest")
                return
            reference_ok = [bool(v > 0) for v in values[arrays.path(leaf)].tolist()]
        if tune_threshold_on is None:
            evaluation.add_in(subset, reference_ok, scores)
        else:
            kept.append((subset, reference_ok, scores))

    read = 0
    # The subset fields of the rollout's tree root's item, as text (a root's ``tree`` is itself).
    subset_columns = [KeyTextTransform(name, "rollout__node__tree__serialized_item") for name in SUBSET_FIELDS]
    query = labels.order_by("rollout__forest_id", "rollout_id", "id").values_list(
        "id", "rollout_id", "rollout__node_id", "rollout__forest_id", "prm_output", *subset_columns
    )
    with streamed(query) as rows:
        for read, (label_id, rollout_id, node_id, forest_id, output, *subset_values) in enumerate(rows, start=1):
            if on_labels is not None and read % STREAM_CHUNK == 0:
                on_labels(read)
            if pending_rollout is None or pending_rollout[0] != rollout_id:
                finish()
                pending, pending_rollout = [], (rollout_id, node_id, subset_name(*subset_values))
            if reference_function.kind == LABELLED and forest_id != current_forest_id:
                current_forest_id = forest_id
                arrays = values = None
                if forest_id is not None:
                    arrays = forest_arrays_load(forest=Forest(pk=forest_id))
                    values = labelled_values(arrays).value
            pending.append(label_outputs(label_id, prm_version, output, codes=codes))
    finish()
    if on_labels is not None:
        on_labels(read)
    if tune_threshold_on is not None:
        _tune(evaluation, tune_threshold_on, kept)
    return evaluation


def _tune(
    evaluation: SubsetPrmEvaluation, subset: str, kept: list[tuple[str | None, Sequence[bool], list[float]]]
) -> None:
    """Choose the threshold on ``subset``'s rollouts of ``kept``, then measure every kept rollout at it."""
    compared = [c for s, ok, scores in kept if s == subset and (c := _compared(ok, scores)) is not None]
    if not compared:
        named = sorted({s for s, _, _ in kept if s is not None})
        raise ApplicationError(
            TUNE_SUBSET_EMPTY.format(subset=subset, subsets=", ".join(named) if named else "none named")
        )
    try:
        tuned = tune_threshold([r for r, _ in compared], [scores for _, scores in compared])
    except ValueError as exc:
        raise ApplicationError(TUNE_SUBSET_UNDEFINED.format(subset=subset, reason=exc)) from exc
    evaluation.threshold = tuned.threshold
    evaluation.threshold_tuned_on = subset
    evaluation.tuned_candidates = tuned.candidates
    for s, ok, scores in kept:
        evaluation.add_in(s, ok, scores)
