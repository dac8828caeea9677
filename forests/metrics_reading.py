"""The whole-forest reads behind values, search metrics, PRM evaluation and exports: a forest as arrays, its node
values under a value function, its rollouts' models, each in a handful of streaming queries (``values_list(...)
.iterator()``), never one query per node."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

from django.db.models import QuerySet

from forests.metrics.forest import ForestArrays, forest_arrays
from forests.metrics.values import LABELLED, NodeValues, ValueFunction, label_values, labelled_values
from forests.models import Forest, Node
from prmsite.core.domain import LABEL_CODES_TEXT, label_code_value
from prmsite.core.errors import ApplicationError
from rollouts.models import ProcessRewardLabel, Rollout

NO_LABELS = "No label of {kind} {version!r} reaches a rollout of forest {forest!r}."
NOT_A_LABEL_CODE = (
    "Label {label_id} of labelling scheme {version!r} holds {value!r}, not a step label code "
    f"({LABEL_CODES_TEXT})."
)
BAD_OUTPUT = "Label {label_id} of {version!r} has a prm_output that is not a list of numbers."

STREAM_CHUNK = 5000


def streamed(query: QuerySet) -> contextlib.closing[Iterator[Any]]:
    """``query.iterator()`` in chunks of ``STREAM_CHUNK``, as a context that closes it when the block ends, also by an
    exception: on PostgreSQL the iterator holds a server-side cursor, and one left to the garbage collector is closed
    later, inside whatever transaction then runs on the connection, which that failed CLOSE aborts."""
    return contextlib.closing(query.iterator(chunk_size=STREAM_CHUNK))


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
    rollout_rows = Rollout.objects.filter(forest_id=forest.pk, node__isnull=False).order_by()
    columns = ["id", "parent_id", "depth", "is_leaf", "prediction", "ground_truth", "correct"]
    columns += ["text"] if with_texts else []
    rollout_columns = ("id", "node_id", "prediction", "attributes__usage__total_tokens", "correct", "answer")
    with (
        streamed(rollout_rows.values_list(*rollout_columns)) as rows,
        streamed(Node.objects.filter(forest_id=forest.pk).order_by().values_list(*columns)) as nodes,
    ):
        rollouts = (
            (rollout_id, node_id, prediction, _tokens(tokens), correct, answer)
            for rollout_id, node_id, prediction, tokens, correct, answer in rows
        )
        return forest_arrays(nodes, rollouts, on_rows=on_rows, with_texts=with_texts)


def rollout_models_load(*, forest: Forest) -> dict[int, str]:
    """The model of every rollout of ``forest``, by rollout id."""
    return dict(
        Rollout.objects.filter(forest_id=forest.pk, node__isnull=False)
        .order_by()
        .values_list("id", "model")
        .iterator(chunk_size=STREAM_CHUNK)
    )


def label_outputs(label_id: int, version: str, output: Any, *, codes: bool) -> list[float]:
    """Label ``label_id``'s ``prm_output`` as step values: numbers as they are, or with ``codes`` (a labelling
    scheme's label) each step label code read as its value. ``ApplicationError`` when it is neither."""
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
    if value_function.kind == LABELLED:
        return labelled_values(arrays)
    codes = value_function.kind == "labels"
    query = (
        ProcessRewardLabel.objects.filter(
            prm_version=value_function.version, rollout__forest_id=forest.pk, rollout__node__isnull=False
        )
        .order_by()
        .values_list("id", "rollout__node_id", "prm_output")
    )

    def entries(labels: Iterator[tuple[int, int, Any]]) -> Iterator[tuple[int, list[float]]]:
        for label_id, node_id, output in labels:
            outputs = label_outputs(label_id, value_function.version, output, codes=codes)
            try:
                yield arrays.index_of(node_id), outputs
            except KeyError:  # the rollout arrived after the forest was read
                continue

    with streamed(query) as labels:
        values = label_values(arrays, entries(labels))
    if not (values.count > 0).any():
        kind = "labelling scheme" if codes else "prm_version"
        raise ApplicationError(NO_LABELS.format(kind=kind, version=value_function.version, forest=forest.name))
    return values


def value_function_parse(option: str) -> ValueFunction:
    try:
        return ValueFunction.parse(option)
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc
