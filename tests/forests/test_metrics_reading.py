"""``forests.metrics_reading``: a forest's rows as arrays, its values under each value function, its models."""

from __future__ import annotations

import math

import numpy as np
import pytest
from django.db import connection

from forests.metrics.values import ValueFunction, labelled_values
from forests.metrics_reading import (
    BAD_OUTPUT,
    NO_LABELS,
    NOT_A_LABEL_CODE,
    forest_arrays_load,
    forest_values,
    label_outputs,
    rollout_models_load,
    value_function_parse,
)
from prmsite.core.errors import ApplicationError
from rollouts.models import Rollout
from tests.factories import make_label
from tests.forests.grown import PROMPTS, add_rollout, grow

pytestmark = pytest.mark.django_db


def test_the_forest_is_read_whole_with_its_texts_and_rollouts():
    grown = grow()
    arrays = forest_arrays_load(forest=grown.forest, with_texts=True)
    assert arrays.size == 3 + 8 + 5  # roots, tree A's steps, tree B's steps
    assert sorted(arrays.texts[i] for i in arrays.roots.tolist()) == sorted(PROMPTS.values())
    assert arrays.rollout_id.size == 8 and set(arrays.rollout_tokens.tolist()) == {100.0}
    assert forest_arrays_load(forest=grown.forest).texts is None


def test_tokens_that_are_not_a_finite_count_are_not_recorded():
    grown = grow()
    Rollout.objects.filter(forest=grown.forest).update(attributes={"usage": {"total_tokens": "many"}})
    rollout = add_rollout("B", ["c1 ", "no"], 0)
    rollout.attributes = {"usage": {"total_tokens": -5}}
    rollout.save()
    arrays = forest_arrays_load(forest=grown.forest)
    assert arrays.rollout_tokens.size == 9 and np.isnan(arrays.rollout_tokens).all()


def test_labelled_values_need_no_label_and_prm_values_need_one():
    grown = grow()
    arrays = forest_arrays_load(forest=grown.forest)
    labelled = forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("labelled"))
    assert np.array_equal(labelled.value, labelled_values(arrays).value, equal_nan=True)
    with pytest.raises(ApplicationError) as refused:
        forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("prm:none"))
    assert refused.value.message == NO_LABELS.format(kind="prm_version", version="none", forest=grown.forest.name)


def test_prm_values_average_the_outputs_reaching_each_step():
    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[0.2, 0.4])
    arrays = forest_arrays_load(forest=grown.forest)
    values = forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("prm:prm-v1"))
    assert values.value[arrays.index_of(grown.node("A", "u1 ", "no").pk)] == pytest.approx(0.4)
    assert math.isnan(values.value[arrays.index_of(grown.node("B", "b1 ").pk)])


def test_a_label_that_is_not_a_list_of_numbers_is_named():
    grown = grow()
    label = make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[0.2, "high"])
    arrays = forest_arrays_load(forest=grown.forest)
    with pytest.raises(ApplicationError) as refused:
        forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("prm:prm-v1"))
    assert refused.value.message == BAD_OUTPUT.format(label_id=label.pk, version="prm-v1")


@pytest.mark.requires_postgres
def test_a_refused_stream_leaves_no_server_side_cursor_open():
    """Left open, the cursor is closed by the garbage collector later, inside another transaction, which the failed
    CLOSE then aborts (seen as 'current transaction is aborted' in an unrelated test)."""
    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[0.2, "high"])
    arrays = forest_arrays_load(forest=grown.forest)
    with pytest.raises(ApplicationError) as refused:
        forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("prm:prm-v1"))
    # The refusal (and its traceback, as a handler or a log keeps it) is still alive: the cursor is closed all the same.
    assert refused.value.code == "invalid"
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors")
        assert cursor.fetchone()[0] == 0


def test_label_outputs_read_scheme_codes_as_values():
    assert label_outputs(1, "judge", [1, 0, 2], codes=True) == [1.0, 0.0, 0.5]
    assert label_outputs(1, "prm", [0.25, 1], codes=False) == [0.25, 1.0]
    with pytest.raises(ApplicationError) as refused:
        label_outputs(7, "judge", [1, 3], codes=True)
    assert refused.value.message == NOT_A_LABEL_CODE.format(label_id=7, version="judge", value=3)
    with pytest.raises(ApplicationError) as refused:
        label_outputs(7, "prm", [math.inf], codes=False)
    assert refused.value.message == BAD_OUTPUT.format(label_id=7, version="prm")


def test_rollout_models_are_read_by_rollout_id():
    grown = grow()
    models = rollout_models_load(forest=grown.forest)
    assert models[grown.rollout("A", "u1 ", "no").pk] == "model-a" and len(models) == 8


def test_a_value_function_option_parses_or_is_an_application_error():
    assert str(value_function_parse("labels:judge")) == "labels:judge"
    with pytest.raises(ApplicationError):
        value_function_parse("exact")
