"""Reads of forests: counts and progress, per forest and per tree, each in a constant number of queries; and the
whole-forest reads behind values, search metrics, PRM evaluation and exports, each a handful of streaming queries.

Progress counts rollouts, not leaves (``forests.metrics.forest``): every rollout row ending in the forest, plus one
for each leaf that no rollout row ends at. A rollout is correct by ``prmsite.queries.correct_rollout_q`` against its
tree's ground truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.db.models.functions import Length, Substr

from forests.metrics.beam import Aggregation
from forests.metrics.evaluation import LABELS_STEP_OK, PrmEvaluation, mean_outputs
from forests.metrics.forest import ForestArrays, forest_arrays
from forests.metrics.search import SearchReport, search_report
from forests.metrics.stats import wilson_interval
from forests.metrics.values import LABELLED, NodeValues, ValueFunction, label_values, labelled_values
from forests.models import Forest, Node
from prmsite.core.domain import label_code_value
from prmsite.core.errors import ApplicationError, NotFoundError
from prmsite.queries import correct_rollout_q

FOREST_NOT_FOUND = "No forest named {name!r}."
TREE_NOT_FOUND = "Forest {forest!r} has no tree with root id {root_id}."
TREE_NODE_NOT_FOUND = "Tree {root_id} has no node {node_id}."
NO_LABELS = "No label of {kind} {version!r} reaches a rollout of forest {forest!r}."
NOT_A_LABEL_CODE = (
    "Label {label_id} of labelling scheme {version!r} holds {value!r}, not a step label code "
    "(0 not preferred, 1 preferred, 2 neutral)."
)
BAD_OUTPUT = "Label {label_id} of {version!r} has a prm_output that is not a list of numbers."
NO_REFERENCE_FOREST = "Reference 'labelled' needs rollouts in a forest; none of the labels of {version!r} has one."
SEARCH_REPORT_KEY = "search_report"

STREAM_CHUNK = 5000


def _orphan_leaf() -> Q:
    """A leaf that no rollout row ends at: it stands for one rollout (see forests.metrics.forest)."""
    from rollouts.models import Rollout

    return Q(is_leaf=True) & ~Q(Exists(Rollout.objects.filter(node_id=OuterRef("pk"))))


@dataclass(frozen=True)
class ForestCounts:
    trees: int
    nodes: int
    leaves: int
    rollouts: int


@dataclass(frozen=True)
class ForestProgress:
    """How far a forest has grown: rollouts end at leaves, and correct rollouts predict the ground truth."""

    trees: int = 0
    trees_with_rollouts: int = 0
    nodes: int = 0
    leaves: int = 0
    rollouts: int = 0
    correct_rollouts: int = 0

    @property
    def accuracy(self) -> float | None:
        """Share of correct rollouts over the whole forest (``None`` before the first rollout)."""
        return self.correct_rollouts / self.rollouts if self.rollouts else None


@dataclass(frozen=True)
class TreeStats:
    nodes: int = 1
    leaves: int = 0
    rollouts: int = 0
    correct_rollouts: int = 0
    max_depth: int = 0

    @property
    def accuracy(self) -> float | None:
        """The root's exact value: share of this tree's rollouts whose prediction is the ground truth."""
        return self.correct_rollouts / self.rollouts if self.rollouts else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of ``accuracy``."""
        return wilson_interval(self.correct_rollouts, self.rollouts)


def forest_get(*, name: str) -> Forest:
    forest = Forest.objects.filter(name=name).first()
    if forest is None:
        raise NotFoundError(FOREST_NOT_FOUND.format(name=name))
    return forest


def forest_counts(*, forest: Forest) -> ForestCounts:
    from rollouts.models import Rollout

    nodes = Node.objects.filter(forest=forest)
    return ForestCounts(
        trees=nodes.filter(depth=0).count(),
        nodes=nodes.count(),
        leaves=nodes.filter(is_leaf=True).count(),
        rollouts=Rollout.objects.filter(forest=forest).count(),
    )


def forest_progress_many(*, forest_ids: Iterable[int]) -> dict[int, ForestProgress]:
    """Progress of each forest in ``forest_ids``, in two queries whatever their number."""
    from rollouts.models import Rollout

    ids = list(forest_ids)
    if not ids:
        return {}
    orphan = _orphan_leaf()
    rows = (
        Node.objects.filter(forest_id__in=ids)
        .order_by()
        .values("forest_id")
        .annotate(
            trees=Count("id", filter=Q(depth=0)),
            trees_with_rollouts=Count("tree_id", filter=Q(is_leaf=True), distinct=True),
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            orphans=Count("id", filter=orphan),
            orphans_correct=Count("id", filter=orphan & correct_rollout_q(ground_truth="tree__ground_truth")),
        )
    )
    rollouts = {
        row["forest_id"]: row
        for row in Rollout.objects.filter(forest_id__in=ids, node__isnull=False)
        .order_by()
        .values("forest_id")
        .annotate(n=Count("id"), correct=Count("id", filter=correct_rollout_q(ground_truth="node__tree__ground_truth")))
    }
    progress = {forest_id: ForestProgress() for forest_id in ids}
    for row in rows:
        forest_id = row.pop("forest_id")
        orphans, orphans_correct = row.pop("orphans"), row.pop("orphans_correct")
        linked = rollouts.get(forest_id, {"n": 0, "correct": 0})
        progress[forest_id] = ForestProgress(
            **row, rollouts=linked["n"] + orphans, correct_rollouts=linked["correct"] + orphans_correct
        )
    return progress


def forest_progress(*, forest: Forest) -> ForestProgress:
    return forest_progress_many(forest_ids=[forest.pk])[forest.pk]


def forest_roots(*, forest: Forest):
    """The roots of ``forest`` in seeding order (a queryset, for pagination)."""
    return (
        Node.objects.filter(forest=forest, depth=0)
        .order_by("id")
        .only("id", "text", "ground_truth", "serialized_item", "forest_id")
    )


def tree_stats_many(*, root_ids: Iterable[int]) -> dict[int, TreeStats]:
    """Counts and accuracy of each tree in ``root_ids``, in two queries."""
    from rollouts.models import Rollout

    ids = list(root_ids)
    stats = {root_id: TreeStats() for root_id in ids}
    if not ids:
        return stats
    orphan = _orphan_leaf()
    rows = (
        Node.objects.filter(tree_id__in=ids)
        .order_by()
        .values("tree_id")
        .annotate(
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            orphans=Count("id", filter=orphan),
            orphans_correct=Count("id", filter=orphan & correct_rollout_q(ground_truth="tree__ground_truth")),
            max_depth=Max("depth"),
        )
    )
    rollouts = {
        row["node__tree_id"]: row
        for row in Rollout.objects.filter(node__tree_id__in=ids)
        .order_by()
        .values("node__tree_id")
        .annotate(n=Count("id"), correct=Count("id", filter=correct_rollout_q(ground_truth="node__tree__ground_truth")))
    }
    for row in rows:
        root_id = row.pop("tree_id")
        orphans, orphans_correct = row.pop("orphans"), row.pop("orphans_correct")
        linked = rollouts.get(root_id, {"n": 0, "correct": 0})
        stats[root_id] = TreeStats(
            **row, rollouts=linked["n"] + orphans, correct_rollouts=linked["correct"] + orphans_correct
        )
    return stats


def tree_root_get(*, forest: Forest, root_id: int) -> Node:
    root = Node.objects.filter(forest=forest, depth=0, pk=root_id).first()
    if root is None:
        raise NotFoundError(TREE_NOT_FOUND.format(forest=forest.name, root_id=root_id))
    return root


def tree_rows(
    *, root: Node, text_chars: int | None = None
) -> list[tuple[int, int | None, int, str, bool, int | None, int]]:
    """Every node of ``root``'s tree as ``(id, parent_id, depth, text, is_leaf, prediction, text_chars)``, in one
    query; with ``text_chars``, ``text`` is only the first ``text_chars`` characters of the node's text (the database
    cuts it: a tree of long steps is not read whole for a page that shows their start), and the last column is always
    the whole text's length in characters."""
    text = F("text") if text_chars is None else Substr("text", 1, text_chars)
    return list(
        Node.objects.filter(tree_id=root.pk)
        .order_by("id")
        .annotate(shown_text=text, text_length=Length("text"))
        .values_list("id", "parent_id", "depth", "shown_text", "is_leaf", "prediction", "text_length")
        .iterator(chunk_size=2000)
    )


def tree_node_get(*, root: Node, node_id: int) -> Node:
    """Node ``node_id`` of ``root``'s tree (its whole text); ``NotFoundError`` when the tree has no such node."""
    node = Node.objects.filter(tree_id=root.pk, pk=node_id).first()
    if node is None:
        raise NotFoundError(TREE_NODE_NOT_FOUND.format(root_id=root.pk, node_id=node_id))
    return node


def tree_rollouts(*, root: Node) -> list[tuple[int, int, int | None]]:
    """Every rollout ending in ``root``'s tree as ``(id, node_id, prediction)``, in one query."""
    from rollouts.models import Rollout

    return list(
        Rollout.objects.filter(node__tree_id=root.pk)
        .order_by("id")
        .values_list("id", "node_id", "prediction")
        .iterator(chunk_size=2000)
    )


# --- Whole forests: the reads behind values, search metrics, PRM evaluation and exports ---------------------------


def _tokens(value: Any) -> float | None:
    """``usage.total_tokens`` as a worker recorded it; anything but a finite non-negative number is "not recorded"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def forest_arrays_load(
    *, forest: Forest, on_rows: Callable[[int], None] | None = None, with_texts: bool = False
) -> ForestArrays:
    """The forest's nodes (with their texts when asked) and rollouts as arrays, in two streaming queries.

    Rollouts are read first: a rollout's leaf is committed with (or before) the rollout, so every rollout read has
    its node among the nodes read after it, even while workers keep inserting.
    """
    from rollouts.models import Rollout

    rollouts = (
        (rollout_id, node_id, prediction, _tokens(tokens))
        for rollout_id, node_id, prediction, tokens in Rollout.objects.filter(forest_id=forest.pk, node__isnull=False)
        .order_by()
        .values_list("id", "node_id", "prediction", "attributes__usage__total_tokens")
        .iterator(chunk_size=STREAM_CHUNK)
    )
    columns = ["id", "parent_id", "depth", "is_leaf", "prediction", "ground_truth"] + (["text"] if with_texts else [])
    nodes = Node.objects.filter(forest_id=forest.pk).order_by().values_list(*columns).iterator(chunk_size=STREAM_CHUNK)
    return forest_arrays(nodes, rollouts, on_rows=on_rows, with_texts=with_texts)


def rollout_models_load(*, forest: Forest) -> dict[int, str]:
    """The model of every rollout of ``forest``, by rollout id."""
    from rollouts.models import Rollout

    return dict(
        Rollout.objects.filter(forest_id=forest.pk, node__isnull=False)
        .order_by()
        .values_list("id", "model")
        .iterator(chunk_size=STREAM_CHUNK)
    )


def _label_outputs(label_id: int, version: str, output: Any, *, codes: bool) -> list[float]:
    if not isinstance(output, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in output
    ):
        raise ApplicationError(BAD_OUTPUT.format(label_id=label_id, version=version))
    if not codes:
        return [float(v) for v in output]
    try:
        return [label_code_value(v) for v in output]
    except ValueError:
        bad = next(v for v in output if v not in (0, 1, 2) or isinstance(v, bool))
        raise ApplicationError(NOT_A_LABEL_CODE.format(label_id=label_id, version=version, value=bad)) from None


def forest_values(*, forest: Forest, arrays: ForestArrays, value_function: ValueFunction) -> NodeValues:
    """The node values of ``value_function`` over ``arrays`` (``labelled``: no query; otherwise one streaming
    query over the version's labels of the forest's rollouts)."""
    from rollouts.models import ProcessRewardLabel

    if value_function.kind == LABELLED:
        return labelled_values(arrays)
    codes = value_function.kind == "labels"
    labels = (
        ProcessRewardLabel.objects.filter(
            prm_version=value_function.version, rollout__forest_id=forest.pk, rollout__node__isnull=False
        )
        .order_by()
        .values_list("id", "rollout__node_id", "prm_output")
        .iterator(chunk_size=STREAM_CHUNK)
    )

    def entries() -> Iterator[tuple[int, list[float]]]:
        for label_id, node_id, output in labels:
            outputs = _label_outputs(label_id, value_function.version, output, codes=codes)
            try:
                yield arrays.index_of(node_id), outputs
            except KeyError:  # the rollout arrived after the forest was read
                continue

    values = label_values(arrays, entries())
    if not (values.count > 0).any():
        kind = "labelling scheme" if codes else "prm_version"
        raise ApplicationError(NO_LABELS.format(kind=kind, version=value_function.version, forest=forest.name))
    return values


def value_function_parse(option: str) -> ValueFunction:
    try:
        return ValueFunction.parse(option)
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc


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
        raise ApplicationError(f"aggregation must be one of {choices}, not {aggregation!r}") from exc
    arrays = forest_arrays_load(forest=forest, on_rows=on_rows)
    values = forest_values(forest=forest, arrays=arrays, value_function=value_function)
    return search_report(
        arrays,
        values.value,
        forest_name=forest.name,
        value_function_option=str(value_function),
        aggregation=aggregation,
        num_beam_values=num_beam_values,
    )


def forest_search_report_saved(*, forest: Forest) -> dict[str, Any] | None:
    """The search report last saved on ``forest`` (by the admin action or ``beam_search --save``), if any."""
    report = (forest.attributes or {}).get(SEARCH_REPORT_KEY)
    return report if isinstance(report, dict) and isinstance(report.get("results"), list) else None


def prm_evaluation(
    *,
    prm_version: str,
    reference: str,
    forest: Forest | None = None,
    threshold: float = 0.5,
    on_labels: Callable[[int], None] | None = None,
) -> PrmEvaluation:
    """ProcessBench's measure of ``prm_version`` against ``reference`` (see ``forests.metrics.evaluation``).

    Streams the version's labels ordered by forest and rollout, loading one forest at a time for ``labelled``.
    """
    from rollouts.models import ProcessRewardLabel

    reference_function = value_function_parse(reference)
    if reference_function.kind == "prm":
        raise ApplicationError(f"reference must be labelled or labels:SCHEME, not {reference!r}")
    if not math.isfinite(threshold):
        raise ApplicationError("threshold must be a finite number")
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
        for label_id, rollout_id, output in (
            scheme_labels.order_by().values_list("id", "rollout_id", "prm_output").iterator(chunk_size=STREAM_CHUNK)
        ):
            outputs = _label_outputs(label_id, reference_function.version, output, codes=True)
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

    rows = (
        labels.order_by("rollout__forest_id", "rollout_id", "id")
        .values_list("id", "rollout_id", "rollout__node_id", "rollout__forest_id", "prm_output")
        .iterator(chunk_size=STREAM_CHUNK)
    )
    read = 0
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
        pending.append(_label_outputs(label_id, prm_version, output, codes=False))
    finish()
    if on_labels is not None:
        on_labels(read)
    return evaluation
