"""``evaluate_prm``'s read: a PRM version's step scores against a reference (``labelled`` or a labelling scheme),
streamed label by label and measured by ProcessBench's measure (``forests.metrics.evaluation``)."""

from __future__ import annotations

import math
from collections.abc import Callable

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
from rollouts.models import ProcessRewardLabel

REFERENCE_INVALID = "reference must be labelled or labels:SCHEME, not {reference!r}"
THRESHOLD_NOT_FINITE = "threshold must be a finite number"


def prm_evaluation(
    *,
    prm_version: str,
    reference: str,
    forest: Forest | None = None,
    threshold: float = PRM_THRESHOLD,
    on_labels: Callable[[int], None] | None = None,
) -> PrmEvaluation:
    """ProcessBench's measure of ``prm_version`` against ``reference`` (see ``forests.metrics.evaluation``).

    Streams the version's labels ordered by forest and rollout, loading one forest at a time for ``labelled``.
    """
    reference_function = value_function_parse(reference)
    if reference_function.kind == "prm":
        raise ApplicationError(REFERENCE_INVALID.format(reference=reference))
    if not math.isfinite(threshold):
        raise ApplicationError(THRESHOLD_NOT_FINITE)
    evaluation = PrmEvaluation(
        prm_version=prm_version,
        reference=str(reference_function),
        threshold=threshold,
        forest_name=forest.name if forest is not None else None,
    )
    labels = ProcessRewardLabel.objects.filter(prm_version=prm_version)
    if forest is not None:
        labels = labels.filter(rollout__forest_id=forest.pk)

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
    pending_rollout: tuple[int, int | None, int | None] | None = None

    def finish() -> None:
        if pending_rollout is None:
            return
        rollout_id, node_id, _ = pending_rollout
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
        evaluation.add(reference_ok, scores)

    read = 0
    query = labels.order_by("rollout__forest_id", "rollout_id", "id").values_list(
        "id", "rollout_id", "rollout__node_id", "rollout__forest_id", "prm_output"
    )
    with streamed(query) as rows:
        for read, (label_id, rollout_id, node_id, forest_id, output) in enumerate(rows, start=1):
            if on_labels is not None and read % STREAM_CHUNK == 0:
                on_labels(read)
            if pending_rollout is None or pending_rollout[0] != rollout_id:
                finish()
                pending, pending_rollout = [], (rollout_id, node_id, forest_id)
            if reference_function.kind == LABELLED and forest_id != current_forest_id:
                current_forest_id = forest_id
                arrays = values = None
                if forest_id is not None:
                    arrays = forest_arrays_load(forest=Forest(pk=forest_id))
                    values = labelled_values(arrays).value
            pending.append(label_outputs(label_id, prm_version, output, codes=False))
    finish()
    if on_labels is not None:
        on_labels(read)
    return evaluation
