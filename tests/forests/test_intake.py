"""The one intake (``forests.intake.receive_rollout``): every rule a rollout passes is checked once, with its message,
and a refused rollout leaves nothing behind."""

from __future__ import annotations

import pytest

from forests.intake import (
    NEEDS_FOREST,
    NO_STEPS,
    STEP_NOT_TEXT,
    TOO_MANY_STEPS,
    TOO_MUCH_TEXT,
    receive_rollout,
    receive_rollouts,
    rollout_check,
)
from forests.models import Node
from forests.selectors import FOREST_NOT_FOUND
from forests.trie import GROUND_TRUTH_MISMATCH
from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError, PayloadTooLargeError
from rollouts.models import Rollout
from rollouts.storage import IDEMPOTENCY_CONFLICT
from tests.factories import make_forest, make_root, rollout_fields

pytestmark = pytest.mark.django_db

PROMPT = "Is the sky green?"


@pytest.fixture
def forest():
    forest = make_forest("intake-forest")
    make_root(forest, PROMPT, ground_truth=0)
    return forest


def test_a_rollout_without_a_forest_is_stored_alone():
    rollout = receive_rollout(**rollout_fields())
    assert rollout.forest_id is None and rollout.node_id is None
    assert Rollout.objects.count() == 1


def test_a_forest_rollout_becomes_a_path_ending_at_its_leaf(forest):
    rollout = receive_rollout(**rollout_fields(), forest_name=forest.name)
    assert rollout.forest_id == forest.pk
    assert rollout.node.is_leaf and rollout.node.depth == 2
    assert Node.objects.filter(forest=forest).count() == 3


def test_a_rollout_without_steps_is_refused_and_stores_nothing(forest):
    with pytest.raises(ApplicationError) as refused:
        receive_rollout(**rollout_fields(reasoning=[]), forest_name=forest.name)
    assert refused.value.message == NO_STEPS
    assert not Rollout.objects.exists() and Node.objects.count() == 1


def test_a_step_that_is_not_text_is_refused():
    with pytest.raises(ApplicationError) as refused:
        receive_rollout(**rollout_fields(reasoning=["a", 3]))
    assert refused.value.message == STEP_NOT_TEXT


@pytest.mark.parametrize(
    ("steps", "setting", "value", "message"),
    [
        (["s"] * 11, "PRM_ROLLOUT_MAX_STEPS", 10, TOO_MANY_STEPS.format(max=10, count=11)),
        (["x" * 60, "y" * 60], "PRM_ROLLOUT_MAX_CHARS", 100, TOO_MUCH_TEXT.format(max=100, count=120)),
    ],
)
def test_rollouts_beyond_the_step_bounds_write_nothing(forest, settings, steps, setting, value, message):
    setattr(settings, setting, value)
    with pytest.raises(PayloadTooLargeError) as refused:
        receive_rollout(**rollout_fields(reasoning=steps), forest_name=forest.name)
    assert refused.value.message == message
    assert not Rollout.objects.exists() and Node.objects.count() == 1


@pytest.mark.parametrize("name", ["root_id", "expansion_id"])
def test_root_id_and_expansion_id_need_a_forest(name):
    with pytest.raises(ApplicationError) as refused:
        receive_rollout(**rollout_fields(), **{name: 1})
    assert refused.value.message == NEEDS_FOREST.format(name=name)
    assert not Rollout.objects.exists()


def test_an_unknown_forest_is_not_found():
    with pytest.raises(NotFoundError) as refused:
        receive_rollout(**rollout_fields(), forest_name="nope")
    assert refused.value.message == FOREST_NOT_FOUND.format(name="nope")
    assert not Rollout.objects.exists()


def test_a_ground_truth_that_contradicts_the_tree_stores_nothing(forest):
    root = Node.objects.get(forest=forest, depth=0)
    with pytest.raises(ApplicationError) as refused:
        receive_rollout(**rollout_fields(ground_truth=1), forest_name=forest.name)
    assert refused.value.message == GROUND_TRUTH_MISMATCH.format(
        given=1, expected=0, root_id=root.pk, forest=forest.name
    )
    assert not Rollout.objects.exists() and Node.objects.count() == 1


def test_an_idempotency_key_stores_a_rollout_once_and_refuses_other_content(forest):
    first = receive_rollout(**rollout_fields(), forest_name=forest.name, idempotency_key="k1")
    again = receive_rollout(**rollout_fields(), forest_name=forest.name, idempotency_key="k1")
    assert again.pk == first.pk and Rollout.objects.count() == 1
    with pytest.raises(ConflictError) as refused:
        receive_rollout(**rollout_fields(worker="other"), forest_name=forest.name, idempotency_key="k1")
    assert refused.value.message == IDEMPOTENCY_CONFLICT.format(key="k1", rollout_id=first.pk)
    assert refused.value.code == "idempotency_conflict"


def test_the_same_path_shares_its_nodes(forest):
    receive_rollout(**rollout_fields(), forest_name=forest.name)
    receive_rollout(**rollout_fields(worker="w2"), forest_name=forest.name)
    assert Node.objects.filter(forest=forest).count() == 3
    assert Rollout.objects.filter(forest=forest).count() == 2


def test_a_batch_answers_each_rollout_or_its_error_and_one_refusal_keeps_no_other_out(forest):
    results = receive_rollouts(
        [
            {**rollout_fields(), "forest_name": forest.name},
            {**rollout_fields(), "forest_name": "nope"},
            {**rollout_fields(worker="w2")},
        ]
    )
    assert isinstance(results[0], Rollout) and isinstance(results[2], Rollout)
    assert isinstance(results[1], NotFoundError)
    assert results[1].message == FOREST_NOT_FOUND.format(name="nope")
    assert Rollout.objects.count() == 2


def test_a_check_by_reads_answers_the_place_and_writes_nothing(forest):
    place = rollout_check(reasoning=["a. ", "b"], example=PROMPT, ground_truth=0, forest_name=forest.name)
    assert place.forest == forest and place.root.text == PROMPT and len(place.digests) == 2
    assert rollout_check(reasoning=["a"]) is None
    assert Node.objects.count() == 1
