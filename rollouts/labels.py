"""Process reward labels in: the first label of a rollout for a version wins, and a label ends its checkout.

The rules every labeller shares (the first label wins, a label of a rollout leased to another caller is refused, K
labellers per rollout for a scheme that asks for them) are the design note of ``rollouts.queue``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError, UnprocessableError
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout
from rollouts.queue import queue_cursor_rewind
from rollouts.selectors import labels_per_rollout

ROLLOUT_NOT_FOUND = "No rollout with id {rollout_id}."
OUTPUT_LENGTH_MISMATCH = (
    "prm_output has {given} values but rollout {rollout_id} has {steps} reasoning steps; send one value per step."
)
OUTPUT_NOT_FINITE = "prm_output must hold finite numbers (floats from a PRM, 0/1/2 from a labeller)."
EXPLANATIONS_NOT_TEXT = "explanations must be a list of strings."
LABEL_CONFLICT = (
    "Worker {worker!r} already labelled rollout {rollout_id} for prm_version {prm_version!r} (label {label_id}) "
    "with different content; a repeated label must be identical."
)
ALREADY_LABELLED = (
    "Rollout {rollout_id} is already labelled for prm_version {prm_version!r} (label {label_id} by {worker!r}); "
    "the first label wins."
)
LABELS_COMPLETE = (
    "Rollout {rollout_id} already has the {k} labels prm_version {prm_version!r} asks for (label {label_id} first)."
)
ALREADY_LABELLED_BY_CALLER = (
    "You already labelled rollout {rollout_id} for prm_version {prm_version!r} (label {label_id})."
)
LEASED_TO_ANOTHER = (
    "Rollout {rollout_id} is checked out for prm_version {prm_version!r} by another caller until {expires_at}; "
    "label the rollouts GET /rollout hands you."
)


def label_delete_many(*, labels: Sequence[ProcessRewardLabel]) -> int:
    """Delete labels and rewind the queue cursors they were behind; answer how many were deleted."""
    with transaction.atomic():
        lowest: dict[str, int] = {}
        for label in labels:
            lowest[label.prm_version] = min(lowest.get(label.prm_version, label.rollout_id), label.rollout_id)
        deleted, _ = ProcessRewardLabel.objects.filter(pk__in=[label.pk for label in labels]).delete()
        for prm_version, rollout_id in lowest.items():
            queue_cursor_rewind(prm_version=prm_version, rollout_id=rollout_id)
    return deleted


def reward_is_finite(value: Any) -> bool:
    """A finite JSON number that fits a float (an integer beyond float range is not: ``float(10**400)`` overflows)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _reward_values_check(prm_output: Sequence[Any]) -> list[float | int]:
    values = list(prm_output)
    if not all(reward_is_finite(value) for value in values):
        raise ApplicationError(OUTPUT_NOT_FINITE)
    return values


def _label_matches(label: ProcessRewardLabel, *, prm_output: list, explanations: list[str] | None) -> bool:
    return list(label.prm_output) == list(prm_output) and label.explanations == explanations


def label_create(
    *,
    rollout_id: int,
    prm_version: str,
    prm_output: Sequence[float | int],
    worker: str,
    explanations: Sequence[str] | None = None,
    labelled_by: str | None = None,
    attributes: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> tuple[ProcessRewardLabel, bool]:
    """Store a process reward label and end the caller's checkout of the rollout for ``prm_version``; return it and
    whether it is new.

    ``prm_output`` has one finite number per reasoning step. The rules of the module docstring apply: the same label
    again from the same worker of the same caller (``labelled_by``, ``worker``) returns the stored one (``created``
    False); other content from that worker, a label after another worker's (with K labellers: after K labels, or a
    second one by the same caller), and a label for a rollout whose leases, held by others than ``labelled_by`` (the
    caller's identity, as ``checkout_claim`` recorded it in ``claimed_by``; ``None`` skips that check, for trusted
    callers), leave no room are ``ConflictError``s.
    Concurrent labels of one rollout are serialised by a lock on the rollout's row. ``attributes`` keeps what the
    labeller recorded beyond the values (a person's finish reason, time spent, …).
    """
    values = _reward_values_check(prm_output)
    if explanations is not None:
        explanations = list(explanations)
        if not all(isinstance(text, str) for text in explanations):
            raise ApplicationError(EXPLANATIONS_NOT_TEXT)
    now = now or timezone.now()
    with transaction.atomic():
        # FOR NO KEY UPDATE: waits for a claim that holds this rollout (and makes concurrent claims skip it) and for
        # a concurrent label of it. SQLite holds the database's write lock already.
        rollout = Rollout.objects.select_for_update(no_key=True).filter(pk=rollout_id).only("id", "reasoning").first()
        if rollout is None:
            raise NotFoundError(ROLLOUT_NOT_FOUND.format(rollout_id=rollout_id), extra={"rollout_id": rollout_id})
        if len(values) != len(rollout.reasoning):
            raise UnprocessableError(
                OUTPUT_LENGTH_MISMATCH.format(given=len(values), rollout_id=rollout_id, steps=len(rollout.reasoning))
            )
        labels_wanted = labels_per_rollout(prm_version=prm_version)
        stored = list(ProcessRewardLabel.objects.filter(rollout_id=rollout_id, prm_version=prm_version).order_by("id"))
        caller = labelled_by or ""
        own = next((label for label in stored if label.labelled_by == caller and label.worker == worker), None)
        if own is not None:
            if not _label_matches(own, prm_output=values, explanations=explanations):
                raise ConflictError(
                    LABEL_CONFLICT.format(
                        worker=worker, rollout_id=rollout_id, prm_version=prm_version, label_id=own.pk
                    ),
                    extra={"id": own.pk},
                )
            return own, False
        _label_room_check(
            stored, rollout_id=rollout_id, prm_version=prm_version, labels_wanted=labels_wanted, labelled_by=labelled_by
        )
        if labelled_by is not None:
            _lease_room_check(
                rollout_id=rollout_id,
                prm_version=prm_version,
                labels_wanted=labels_wanted,
                labelled=len(stored),
                labelled_by=labelled_by,
                now=now,
            )
        label = ProcessRewardLabel.objects.create(
            rollout_id=rollout_id,
            prm_version=prm_version,
            worker=worker,
            labelled_by=labelled_by or "",
            attributes=attributes or {},
            prm_output=values,
            explanations=explanations,
            final_reward=float(values[-1]) if values else None,
        )
        leases = RolloutCheckout.objects.filter(rollout_id=rollout_id, prm_version=prm_version)
        if labels_wanted > 1:
            leases = leases.filter(claimed_by=labelled_by or "")  # the others' leases stand: they label it too
        leases.delete()
    return label, True


def label_create_each(
    labels: Iterable[Mapping[str, Any]], *, labelled_by: str | None = None, now: datetime | None = None
) -> list[tuple[ProcessRewardLabel, bool] | ApplicationError]:
    """``label_create`` for each of ``labels`` (the validated fields of ``POST /process_reward_label`` bodies), each
    in its own transaction, in order: one refused label does not keep the others out, and a label later in the list
    sees the ones stored before it (the same label twice answers the first one's id). Answers, in order,
    ``(label, created)`` or the ``ApplicationError`` that refused it (nothing of a refused label is written)."""
    results: list[tuple[ProcessRewardLabel, bool] | ApplicationError] = []
    for fields in labels:
        try:
            # label_create is its own transaction (a savepoint inside a caller's): no second savepoint around it.
            results.append(label_create(**fields, labelled_by=labelled_by, now=now))
        except ApplicationError as exc:
            results.append(exc)
    return results


def _label_room_check(
    stored: list[ProcessRewardLabel], *, rollout_id: int, prm_version: str, labels_wanted: int, labelled_by: str | None
) -> None:
    """Refuse a label when the rollout has all the labels its version asks for, or one by this caller already."""
    if not stored:
        return
    first = stored[0]
    if labels_wanted == 1:
        raise ConflictError(
            ALREADY_LABELLED.format(
                rollout_id=rollout_id, prm_version=prm_version, label_id=first.pk, worker=first.worker
            ),
            code="already_labelled",
            extra={"id": first.pk},
        )
    mine = next((label for label in stored if labelled_by and label.labelled_by == labelled_by), None)
    if mine is not None:
        raise ConflictError(
            ALREADY_LABELLED_BY_CALLER.format(rollout_id=rollout_id, prm_version=prm_version, label_id=mine.pk),
            code="already_labelled",
            extra={"id": mine.pk},
        )
    if len(stored) >= labels_wanted:
        raise ConflictError(
            LABELS_COMPLETE.format(rollout_id=rollout_id, k=labels_wanted, prm_version=prm_version, label_id=first.pk),
            code="already_labelled",
            extra={"id": first.pk},
        )


def _lease_room_check(
    *, rollout_id: int, prm_version: str, labels_wanted: int, labelled: int, labelled_by: str, now: datetime
) -> None:
    """Refuse a label from a caller without a live lease when other callers' live leases take the room left."""
    live = RolloutCheckout.objects.filter(rollout_id=rollout_id, prm_version=prm_version, expires_at__gt=now)
    if live.filter(claimed_by=labelled_by).exists():
        return
    others = list(live.order_by("expires_at").values_list("expires_at", flat=True))
    if labelled + len(others) >= labels_wanted:
        expires_at = others[0].isoformat()
        raise ConflictError(
            LEASED_TO_ANOTHER.format(rollout_id=rollout_id, prm_version=prm_version, expires_at=expires_at),
            code="leased",
            extra={"expires_at": expires_at},
        )


def label_create_many(
    *,
    labels: Sequence[tuple[int, Sequence[float | int]]],
    prm_version: str,
    worker: str,
    labelled_by: str | None = None,
    now: datetime | None = None,
) -> list[tuple[ProcessRewardLabel, bool]]:
    """``label_create`` for many ``(rollout id, prm_output)`` of one version and one worker at once, for trusted code
    that writes a batch inside its own transaction (``import_dataset``); answer ``(label, created)`` for each, in
    order.

    The same rules and messages as ``label_create``: finite values, one per step of the rollout, the same label again
    from the same worker and caller answers the stored one, other content is a conflict, a rollout with all the
    labels its version asks for (or one by this caller) is refused, and with ``labelled_by`` the other callers'
    leases are respected; a label ends the caller's checkouts. In a few statements: the rollouts are locked and read
    in one query, their labels of the version in another, the new labels written in one ``INSERT`` per
    ``LABEL_INSERT_BATCH``, the checkouts they end deleted in one. All or nothing: the first label refused raises its
    ``ApplicationError`` with ``extra["index"]`` (its position in ``labels``) before anything is written. A rollout
    named twice is labelled once: the second is answered like a label sent again.
    """
    checked: list[tuple[int, list[float | int]]] = []
    for index, (rollout_id, prm_output) in enumerate(labels):
        try:
            checked.append((rollout_id, _reward_values_check(prm_output)))
        except ApplicationError as exc:
            raise _indexed(exc, index) from None
    now = now or timezone.now()
    ids = {rollout_id for rollout_id, _ in checked}
    caller = labelled_by or ""
    with transaction.atomic():
        rollouts = Rollout.objects.select_for_update(no_key=True).filter(pk__in=ids).only("id", "reasoning")
        steps = {rollout.pk: len(rollout.reasoning) for rollout in rollouts}
        labels_wanted = labels_per_rollout(prm_version=prm_version)
        stored: dict[int, list[ProcessRewardLabel]] = {}
        for label in ProcessRewardLabel.objects.filter(rollout_id__in=ids, prm_version=prm_version).order_by("id"):
            stored.setdefault(label.rollout_id, []).append(label)
        results: list[tuple[ProcessRewardLabel, bool]] = []
        new: list[ProcessRewardLabel] = []
        for index, (rollout_id, values) in enumerate(checked):
            try:
                if rollout_id not in steps:
                    raise NotFoundError(
                        ROLLOUT_NOT_FOUND.format(rollout_id=rollout_id), extra={"rollout_id": rollout_id}
                    )
                if len(values) != steps[rollout_id]:
                    raise UnprocessableError(
                        OUTPUT_LENGTH_MISMATCH.format(given=len(values), rollout_id=rollout_id, steps=steps[rollout_id])
                    )
                there = stored.get(rollout_id, [])
                own = next((label for label in there if label.labelled_by == caller and label.worker == worker), None)
                if own is not None:
                    if not _label_matches(own, prm_output=values, explanations=None):
                        raise ConflictError(
                            LABEL_CONFLICT.format(
                                worker=worker, rollout_id=rollout_id, prm_version=prm_version, label_id=own.pk
                            ),
                            extra={"id": own.pk},
                        )
                    results.append((own, False))
                    continue
                _label_room_check(
                    there,
                    rollout_id=rollout_id,
                    prm_version=prm_version,
                    labels_wanted=labels_wanted,
                    labelled_by=labelled_by,
                )
                if labelled_by is not None:
                    _lease_room_check(
                        rollout_id=rollout_id,
                        prm_version=prm_version,
                        labels_wanted=labels_wanted,
                        labelled=len(there),
                        labelled_by=labelled_by,
                        now=now,
                    )
            except ApplicationError as exc:
                raise _indexed(exc, index) from None
            label = ProcessRewardLabel(
                rollout_id=rollout_id,
                prm_version=prm_version,
                worker=worker,
                labelled_by=caller,
                attributes={},
                prm_output=values,
                explanations=None,
                final_reward=float(values[-1]) if values else None,
            )
            stored.setdefault(rollout_id, []).append(label)
            new.append(label)
            results.append((label, True))
        ProcessRewardLabel.objects.bulk_create(new, batch_size=LABEL_INSERT_BATCH)
        labelled = [label.rollout_id for label in new]
        for start in range(0, len(labelled), LABEL_INSERT_BATCH):
            leases = RolloutCheckout.objects.filter(
                rollout_id__in=labelled[start : start + LABEL_INSERT_BATCH], prm_version=prm_version
            )
            if labels_wanted > 1:
                leases = leases.filter(claimed_by=caller)  # the others' leases stand: they label it too
            leases.delete()
    return results


# Labels per INSERT statement of ``label_create_many``.
LABEL_INSERT_BATCH = 500


def _indexed(exc: ApplicationError, index: int) -> ApplicationError:
    exc.extra = {**exc.extra, "index": index}
    return exc
