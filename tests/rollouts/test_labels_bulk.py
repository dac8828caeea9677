"""Many labels at once (``rollouts.labels.label_create_many``, for import_dataset): ``label_create``'s rules and
messages for each, all or nothing, the checkouts a label ends deleted, and statements that do not grow with the
batch."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError, UnprocessableError
from rollouts.labels import (
    ALREADY_LABELLED,
    LABEL_CONFLICT,
    OUTPUT_LENGTH_MISMATCH,
    OUTPUT_NOT_FINITE,
    ROLLOUT_NOT_FOUND,
    label_create,
    label_create_many,
)
from rollouts.models import LabellingScheme, ProcessRewardLabel, RolloutCheckout
from rollouts.queue import checkout_claim
from tests.factories import make_rollout

pytestmark = pytest.mark.django_db


def many(pairs, worker="w", labelled_by=None, **kwargs):
    return label_create_many(labels=pairs, prm_version="v1", worker=worker, labelled_by=labelled_by, **kwargs)


def test_new_labels_are_stored_and_the_same_again_answers_them():
    a, b = make_rollout(), make_rollout()
    results = many([(a.pk, [1, 0]), (b.pk, [1, 2])])
    assert [created for _, created in results] == [True, True]
    stored = {label.rollout_id: label for label in ProcessRewardLabel.objects.all()}
    assert [label.pk for label, _ in results] == [stored[a.pk].pk, stored[b.pk].pk]
    assert stored[b.pk].prm_output == [1, 2] and stored[b.pk].final_reward == 2.0
    assert stored[a.pk].labelled_by == "" and stored[a.pk].worker == "w"
    again = many([(b.pk, [1, 2]), (a.pk, [1, 0]), (a.pk, [1, 0])])
    assert [(label.pk, created) for label, created in again] == [
        (stored[b.pk].pk, False),
        (stored[a.pk].pk, False),
        (stored[a.pk].pk, False),
    ]
    assert ProcessRewardLabel.objects.count() == 2


def test_a_rollout_named_twice_in_one_batch_is_labelled_once():
    rollout = make_rollout()
    (first, created), (second, again) = many([(rollout.pk, [1, 1]), (rollout.pk, [1, 1])])
    assert created and not again and first is second and first.pk is not None
    assert ProcessRewardLabel.objects.count() == 1
    with pytest.raises(ConflictError) as refused:
        many([(make_rollout().pk, [1, 1]), (rollout.pk, [0, 0])])
    assert refused.value.extra["index"] == 1 and ProcessRewardLabel.objects.count() == 1


def refusal(rollout, other):
    return {
        "not finite": ([(rollout.pk, [1, float("nan")])], ApplicationError, OUTPUT_NOT_FINITE),
        "length": (
            [(rollout.pk, [1])],
            UnprocessableError,
            OUTPUT_LENGTH_MISMATCH.format(given=1, rollout_id=rollout.pk, steps=2),
        ),
        "missing": ([(10**9, [1, 1])], NotFoundError, ROLLOUT_NOT_FOUND.format(rollout_id=10**9)),
        "conflict": (
            [(other.pk, [0, 0])],
            ConflictError,
            LABEL_CONFLICT.format(worker="w", rollout_id=other.pk, prm_version="v1", label_id="LABEL"),
        ),
    }


@pytest.mark.parametrize("case", ["not finite", "length", "missing", "conflict"])
def test_a_refused_label_is_named_by_its_index_and_nothing_is_written(case):
    rollout, other, fine = make_rollout(), make_rollout(), make_rollout()
    label, _ = label_create(rollout_id=other.pk, prm_version="v1", prm_output=[1, 1], worker="w")
    pairs, error, message = refusal(rollout, other)[case]
    with pytest.raises(error) as refused:
        many([(fine.pk, [1, 1]), *pairs])
    assert refused.value.message == message.replace("LABEL", str(label.pk))
    assert refused.value.extra["index"] == 1
    assert list(ProcessRewardLabel.objects.values_list("rollout_id", flat=True)) == [other.pk]


def test_the_first_label_wins_and_k_labellers_are_respected():
    rollout = make_rollout()
    first, _ = label_create(rollout_id=rollout.pk, prm_version="v1", prm_output=[1, 1], worker="person")
    with pytest.raises(ConflictError) as refused:
        many([(rollout.pk, [1, 1])], worker="import")
    assert refused.value.message == ALREADY_LABELLED.format(
        rollout_id=rollout.pk, prm_version="v1", label_id=first.pk, worker="person"
    )
    assert refused.value.code == "already_labelled"
    LabellingScheme.objects.create(prm_version="v1", title="two", labels_per_rollout=2)
    ((_, created),) = many([(rollout.pk, [0, 1])], worker="import")
    assert created and ProcessRewardLabel.objects.filter(rollout=rollout).count() == 2
    with pytest.raises(ConflictError, match="already has the 2 labels"):
        many([(rollout.pk, [1, 1])], worker="third")


def test_leases_of_others_are_respected_and_a_label_ends_the_callers_checkout():
    held, mine = make_rollout(), make_rollout()
    now = timezone.now()
    checkout_claim(prm_version="v1", claimed_by="holder", now=now, limit=1)
    checkout_claim(prm_version="v1", claimed_by="me", now=now, limit=1)
    assert RolloutCheckout.objects.get(rollout=held).claimed_by == "holder"
    with pytest.raises(ConflictError) as refused:
        many([(mine.pk, [1, 1]), (held.pk, [1, 1])], labelled_by="me", now=now)
    assert refused.value.code == "leased" and refused.value.extra["index"] == 1
    assert not ProcessRewardLabel.objects.exists()
    many([(mine.pk, [1, 1])], labelled_by="me", now=now)
    assert list(RolloutCheckout.objects.values_list("claimed_by", flat=True)) == ["holder"]
    # trusted code (no caller) labels past a lease, and the lease ends, as with label_create
    many([(held.pk, [1, 0])], worker="import")
    assert not RolloutCheckout.objects.exists()


def test_the_statements_do_not_grow_with_the_batch():
    """Only the INSERT grows, by one statement per chunk of rows the database takes at once."""

    def statements(count: int) -> tuple[int, int]:
        rollouts = [make_rollout() for _ in range(count)]
        with CaptureQueriesContext(connection) as queries:
            many([(rollout.pk, [1, 0]) for rollout in rollouts])
        inserts = sum(query["sql"].lstrip().upper().startswith("INSERT") for query in queries)
        return len(queries) - inserts, inserts

    (small, small_inserts), (large, large_inserts) = statements(3), statements(300)
    assert large == small and small_inserts == 1 and large_inserts <= 300 // 50
