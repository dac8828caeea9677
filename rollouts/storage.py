"""Rollout storage: the rows of stored rollouts and their idempotency keys. Knows nothing of forests: the intake
(``forests.intake.receive_rollout``) finds a forest rollout's leaf and passes it here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prmsite.core.errors import ConflictError
from rollouts.models import Rollout

IDEMPOTENCY_CONFLICT = (
    "idempotency_key {key!r} was used for rollout {rollout_id} with different content; use a new key per rollout."
)


def rollout_by_idempotency_key(key: str) -> Rollout | None:
    """The rollout stored under ``key``, if any."""
    return Rollout.objects.filter(idempotency_key=key).first()


def rollout_same_or_conflict(stored: Rollout, fields: Mapping[str, Any]) -> Rollout:
    """``stored`` when ``fields`` (the content a rollout posted again carries) are its own; ``ConflictError``
    (``idempotency_conflict``, with the stored ``id``) otherwise."""
    if any(getattr(stored, name) != value for name, value in fields.items()):
        raise ConflictError(
            IDEMPOTENCY_CONFLICT.format(key=stored.idempotency_key, rollout_id=stored.pk),
            code="idempotency_conflict",
            extra={"id": stored.pk},
        )
    return stored


def rollout_insert(
    *,
    model: str,
    example: str,
    reasoning: Sequence[str],
    prediction: int | None,
    ground_truth: int | None,
    worker: str,
    answer: str | None = None,
    correct: bool = False,
    verdict_reason: str = "",
    attributes: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    forest_id: int | None = None,
    node: Any = None,
) -> Rollout:
    """Write one rollout row (``node``: its leaf in ``forest_id``'s trie, or none). A second row with the same
    ``idempotency_key`` is an ``IntegrityError`` from the database's unique constraint, for the caller to answer."""
    return Rollout.objects.create(
        model=model,
        example=example,
        reasoning=list(reasoning),
        prediction=prediction,
        ground_truth=ground_truth,
        answer=answer,
        correct=correct,
        verdict_reason=verdict_reason,
        worker=worker,
        attributes=attributes or {},
        idempotency_key=idempotency_key,
        forest_id=forest_id,
        node=node,
    )
