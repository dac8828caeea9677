"""Rollout storage (``rollouts.storage``): rows and idempotency keys, with no knowledge of forests."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from prmsite.core.errors import ConflictError
from rollouts.models import Rollout
from rollouts.storage import (
    IDEMPOTENCY_CONFLICT,
    rollout_by_idempotency_key,
    rollout_insert,
    rollout_same_or_conflict,
)
from tests.factories import rollout_fields

pytestmark = pytest.mark.django_db


def test_a_rollout_is_stored_with_its_attributes_and_no_forest():
    rollout = rollout_insert(**rollout_fields(), attributes={"temperature": 0.7})
    stored = Rollout.objects.get(pk=rollout.pk)
    assert stored.attributes == {"temperature": 0.7}
    assert stored.forest_id is None and stored.node_id is None


def test_an_idempotency_key_names_one_rollout():
    rollout = rollout_insert(**rollout_fields(), idempotency_key="k")
    assert rollout_by_idempotency_key("k") == rollout
    assert rollout_by_idempotency_key("other") is None
    with pytest.raises(IntegrityError), transaction.atomic():
        rollout_insert(**rollout_fields(), idempotency_key="k")
    assert Rollout.objects.count() == 1


def test_the_same_content_answers_the_stored_rollout_and_other_content_conflicts():
    fields = rollout_fields()
    rollout = rollout_insert(**fields, idempotency_key="k")
    assert rollout_same_or_conflict(rollout, fields) == rollout
    with pytest.raises(ConflictError) as refused:
        rollout_same_or_conflict(rollout, {**fields, "worker": "another"})
    assert refused.value.message == IDEMPOTENCY_CONFLICT.format(key="k", rollout_id=rollout.pk)
    assert refused.value.code == "idempotency_conflict"
    assert refused.value.extra == {"id": rollout.pk}
