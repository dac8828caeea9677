"""The one intake of rollouts: every way a rollout comes in (``POST /rollout``, ``POST /rollout/batch``,
``import_rollouts``) calls ``receive_rollout``.

It validates once, finds the forest and the tree, inserts the path into the trie (``forests.trie``), stores the
rollout (``rollouts.storage``, which knows nothing of forests) and does the growth bookkeeping
(``forests.growth.bookkeeping``), all in one transaction. Each rule is written here once, with its message:

- a rollout has at least one reasoning step (``NO_STEPS``), each a string (``STEP_NOT_TEXT``), bounded by
  ``PRM_ROLLOUT_MAX_STEPS`` steps and ``PRM_ROLLOUT_MAX_CHARS`` characters (``TOO_MANY_STEPS``, ``TOO_MUCH_TEXT``);
- ``root_id`` and ``expansion_id`` name parts of a forest, so they come with ``forest_name`` (``NEEDS_FOREST``);
- a forest is found by name through ``forests.selectors.forest_get`` (``FOREST_NOT_FOUND``), its tree and the
  tree's agreement with the rollout by ``forests.trie.forest_rollout_place``;
- an idempotency key is looked up once: a rollout posted again with it stores nothing and answers the first one
  (other content: ``rollouts.storage.IDEMPOTENCY_CONFLICT``);
- the trie is keyed by ``forests.models.text_sha256`` of each step (``forests.trie``);
- whether the rollout is correct is decided here, once, by ``prmsite.core.grading.grade`` with the forest's answer
  kind against its tree's reference answer (``rollout_verdict``), before the write transaction (a math grader may
  take its time budget), and stored on the rollout and its leaf: every reader reads that stored fact.

Reads come first, outside the write transaction (on SQLite it holds the database's one write lock): a repeated
idempotency key is answered without one, and the rollout's forest and tree are found before it starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from forests.growth.bookkeeping import rollout_account, rollouts_account_many
from forests.trie import (
    LeafFacts,
    PathWanted,
    TriePlace,
    forest_rollout_insert_counted,
    forest_rollout_place,
    forest_rollouts_insert,
    forest_rollouts_place,
    leaf_verdict,
)
from prmsite.core.answers import label_of_answer
from prmsite.core.errors import ApplicationError, PayloadTooLargeError
from prmsite.core.grading import AnswerSpec, Verdict, grade
from rollouts.models import Rollout
from rollouts.storage import rollout_by_idempotency_key, rollout_insert, rollout_same_or_conflict

NO_STEPS = "A rollout needs at least one reasoning step."
STEP_NOT_TEXT = "Every reasoning step must be a string."
TOO_MANY_STEPS = "A rollout may have at most {max} reasoning steps (PRM_ROLLOUT_MAX_STEPS); this one has {count}."
TOO_MUCH_TEXT = (
    "A rollout's reasoning may hold at most {max} characters in all (PRM_ROLLOUT_MAX_CHARS); this one has {count}."
)
NEEDS_FOREST = "{name} names part of a forest: send forest_name with it."
# Fields that only mean something with forest_name.
FOREST_FIELDS = ("root_id", "expansion_id")
# The fields that make a rollout's content: the same idempotency key with other content is a conflict.
CONTENT_FIELDS = ("model", "example", "reasoning", "prediction", "ground_truth", "answer", "worker")


def steps_check(steps: Sequence[Any]) -> None:
    """Refuse a rollout without steps or with a step that is not a string (``ApplicationError``), and one with more
    steps or more text than the settings allow (``PayloadTooLargeError``, 413)."""
    if not steps:
        raise ApplicationError(NO_STEPS)
    if not all(isinstance(step, str) for step in steps):
        raise ApplicationError(STEP_NOT_TEXT)
    if len(steps) > settings.PRM_ROLLOUT_MAX_STEPS:
        raise PayloadTooLargeError(TOO_MANY_STEPS.format(max=settings.PRM_ROLLOUT_MAX_STEPS, count=len(steps)))
    chars = sum(len(step) for step in steps)
    if chars > settings.PRM_ROLLOUT_MAX_CHARS:
        raise PayloadTooLargeError(TOO_MUCH_TEXT.format(max=settings.PRM_ROLLOUT_MAX_CHARS, count=chars))


def forest_fields_check(*, forest_name: str | None, **given: Any) -> None:
    """Refuse ``root_id`` or ``expansion_id`` without ``forest_name`` (``NEEDS_FOREST``)."""
    if forest_name is None:
        for name in FOREST_FIELDS:
            if given.get(name) is not None:
                raise ApplicationError(NEEDS_FOREST.format(name=name))


def rollout_check(
    *,
    reasoning: Sequence[Any],
    example: str | None = None,
    ground_truth: int | None = None,
    forest_name: str | None = None,
    root_id: int | None = None,
    expansion_id: int | None = None,
) -> TriePlace | None:
    """Every rule a rollout must pass before it is stored, by reads only; answer its place in its forest (``None``
    without ``forest_name``). ``import_rollouts`` checks a whole file with it before storing anything."""
    steps_check(reasoning)
    forest_fields_check(forest_name=forest_name, root_id=root_id, expansion_id=expansion_id)
    if forest_name is None:
        return None
    return forest_rollout_place(
        forest_name=forest_name, example=example, steps=list(reasoning), ground_truth=ground_truth, root_id=root_id
    )


def rollout_verdict(
    *,
    place: TriePlace | None,
    prediction: int | None,
    ground_truth: int | None,
    answer: str | None,
    correct: bool | None = None,
    verdict_reason: str = "",
) -> tuple[int | None, int | None, str | None, Verdict]:
    """The rollout's fields as stored and the grader's verdict on it: ``(prediction, ground_truth, answer, verdict)``.

    The answer kind is the forest's (``label`` without a forest), the reference answer its tree root's. A label
    rollout's answer is its prediction as text, and its prediction the integer an answer states; its ground truth
    defaults to its tree's. The verdict is ``prmsite.core.grading.grade``, the project's one correctness rule;
    ``correct`` given (a trusted caller carrying a dataset's own verdict) is the verdict instead, with
    ``verdict_reason``, and nothing is graded.
    """
    spec = AnswerSpec.from_settings(place.forest.rollout_config) if place is not None else AnswerSpec()
    root = place.root if place is not None else None
    if spec.kind == "label":
        if prediction is None and answer is not None:
            prediction = label_of_answer(answer)
        if answer is None and prediction is not None:
            answer = str(prediction)
        if ground_truth is None and root is not None:
            ground_truth = root.ground_truth
    elif answer is None and prediction is not None:
        answer = str(prediction)
    if correct is not None:
        return prediction, ground_truth, answer, Verdict(correct=bool(correct), reason=verdict_reason)
    if place is not None:
        return prediction, ground_truth, answer, leaf_verdict(place, answer)
    # No forest: the rollout's own class label is the reference; without one, the grader says why it cannot decide.
    return prediction, ground_truth, answer, grade(answer, None if ground_truth is None else str(ground_truth), spec)


def _reason(verdict: Verdict) -> str:
    return verdict.reason[: Rollout._meta.get_field("verdict_reason").max_length]


def _content_given(
    *,
    model: str,
    example: str,
    reasoning: Sequence[str],
    worker: str,
    prediction: int | None,
    ground_truth: int | None,
    answer: str | None,
) -> dict[str, Any]:
    """The content a rollout posted again with a stored idempotency key must match (``CONTENT_FIELDS``)."""
    given = {"model": model, "example": example, "reasoning": list(reasoning), "worker": worker}
    if answer is None and ground_truth is not None:  # the specification's fields, exactly as given
        return given | {"prediction": prediction, "ground_truth": ground_truth}
    # an answer rollout: whichever of the answer and the label fields it gave
    given |= {"answer": answer, "prediction": prediction, "ground_truth": ground_truth}
    return {name: value for name, value in given.items() if value is not None}


def receive_rollout(
    *,
    model: str,
    example: str,
    reasoning: Sequence[str],
    worker: str,
    prediction: int | None = None,
    ground_truth: int | None = None,
    answer: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    forest_name: str | None = None,
    root_id: int | None = None,
    idempotency_key: str | None = None,
    expansion_id: int | None = None,
    answered_by: str | None = None,
    correct: bool | None = None,
    verdict_reason: str = "",
) -> Rollout:
    """Store a rollout; with ``forest_name`` also insert its steps into that forest's trie, link the leaf and do the
    growth bookkeeping (tallies, the expansion it answers, the tree's branching, the omega search it probes for).

    All or nothing: a rollout the rules or its forest refuse leaves no rollout and no node behind. With
    ``idempotency_key``, the same rollout posted again stores nothing and answers the first one (``ConflictError``
    for other content), so it is counted once. ``answered_by``: the caller's identity, as ``expansion_claim``
    recorded it; an answer counts against ``expansion_id`` only from its holder (``None``: any holder, for trusted
    callers), otherwise it is stored as a rollout of its tree that counts against no expansion.

    The rollout is graded by ``rollout_verdict``; ``correct`` (trusted callers only, such as ``import_dataset``
    carrying a dataset's own verdict) replaces the grader's verdict, with ``verdict_reason``.
    """
    steps_check(reasoning)
    forest_fields_check(forest_name=forest_name, root_id=root_id, expansion_id=expansion_id)
    if idempotency_key is not None and (stored := rollout_by_idempotency_key(idempotency_key)) is not None:
        return rollout_same_or_conflict(
            stored,
            _content_given(
                model=model,
                example=example,
                reasoning=reasoning,
                worker=worker,
                prediction=prediction,
                ground_truth=ground_truth,
                answer=answer,
            ),
        )
    place = None
    if forest_name is not None:
        place = forest_rollout_place(
            forest_name=forest_name, example=example, steps=list(reasoning), ground_truth=ground_truth, root_id=root_id
        )
    prediction, ground_truth, answer, verdict = rollout_verdict(
        place=place,
        prediction=prediction,
        ground_truth=ground_truth,
        answer=answer,
        correct=correct,
        verdict_reason=verdict_reason,
    )
    fields = {
        "model": model,
        "example": example,
        "reasoning": list(reasoning),
        "prediction": prediction,
        "ground_truth": ground_truth,
        "answer": answer,
        "worker": worker,
    }
    try:
        with transaction.atomic():
            node = None
            if place is not None:
                node, nodes_added = forest_rollout_insert_counted(
                    forest_name=forest_name,
                    example=example,
                    steps=fields["reasoning"],
                    prediction=prediction,
                    answer=answer,
                    correct=verdict.correct,
                    place=place,
                )
            rollout = rollout_insert(
                **fields,
                correct=verdict.correct,
                verdict_reason=_reason(verdict),
                attributes=dict(attributes or {}),
                idempotency_key=idempotency_key,
                forest_id=node.forest_id if node is not None else None,
                node=node,
            )
            if node is not None:
                rollout_account(
                    rollout=rollout, expansion_id=expansion_id, answered_by=answered_by, nodes_added=nodes_added
                )
    except IntegrityError:
        # A concurrent post with the same key won the race; everything this one wrote was rolled back.
        stored = rollout_by_idempotency_key(idempotency_key) if idempotency_key is not None else None
        if stored is None:
            raise
        return rollout_same_or_conflict(stored, fields)
    return rollout


def receive_rollouts(
    rollouts: Iterable[Mapping[str, Any]], *, answered_by: str | None = None
) -> list[Rollout | ApplicationError]:
    """``receive_rollout`` for each of ``rollouts`` (validated fields), each in its own transaction: one refused
    rollout does not keep the others out. Answers, in order, the rollout stored or the error that refused it."""
    results: list[Rollout | ApplicationError] = []
    for fields in rollouts:
        try:
            with transaction.atomic():
                results.append(receive_rollout(**fields, answered_by=answered_by))
        except ApplicationError as exc:
            results.append(exc)
    return results


# Rollouts per INSERT statement of ``receive_rollouts_bulk``.
ROLLOUT_INSERT_BATCH = 500
# The fields a bulk rollout may carry: ``receive_rollout``'s, less the forest (one for the batch) and the expansion
# (a bulk rollout answers none).
BULK_FIELDS = frozenset(
    {"model", "example", "reasoning", "worker", "prediction", "ground_truth", "answer", "attributes", "root_id"}
    | {"idempotency_key", "correct", "verdict_reason"}
)


def _indexed(exc: ApplicationError, index: int) -> ApplicationError:
    exc.extra = {**exc.extra, "index": index}
    return exc


def receive_rollouts_bulk(rollouts: Sequence[Mapping[str, Any]], *, forest_name: str) -> list[tuple[Rollout, bool]]:
    """Store many rollouts of one forest at once, for trusted code that writes a batch inside its own transaction
    (``import_dataset``); answer ``(rollout, created)`` for each, in order. The API keeps ``receive_rollout``, one
    transaction per rollout.

    Every rule of ``receive_rollout`` applies, with its message: the steps (``steps_check``), the forest and each
    rollout's tree (``forests.trie.forest_rollouts_place``), the idempotency key (a stored rollout is answered,
    ``created`` False; other content is a ``ConflictError``; a key repeated within the batch answers its first
    rollout), the grading (``rollout_verdict``, unless the caller states ``correct``) and the growth bookkeeping
    (``forests.growth.bookkeeping.rollouts_account_many``). What changes is the number of statements: the forest is
    found once, the trees in two queries, every path goes into the trie in a few (``forests.trie.
    forest_rollouts_insert``), the rollouts in one ``INSERT`` per ``ROLLOUT_INSERT_BATCH``.

    All or nothing for the batch: the first rollout refused raises its ``ApplicationError`` with ``extra["index"]``
    (its position in ``rollouts``), before anything is written. A concurrent writer that stored one of the same steps
    or keys meanwhile (``IntegrityError``) makes the batch go in one rollout at a time through ``receive_rollout``,
    which handles those races, inside the same savepoint.
    """
    items = [dict(fields) for fields in rollouts]
    for index, fields in enumerate(items):
        unknown = set(fields) - BULK_FIELDS
        if unknown:
            raise TypeError(f"receive_rollouts_bulk got unexpected fields {sorted(unknown)}")
        try:
            steps_check(fields["reasoning"])
        except ApplicationError as exc:
            raise _indexed(exc, index) from None
    keys = {fields["idempotency_key"] for fields in items if fields.get("idempotency_key") is not None}
    stored = {rollout.idempotency_key: rollout for rollout in Rollout.objects.filter(idempotency_key__in=keys)}
    results: list[tuple[Rollout, bool] | None] = [None] * len(items)
    first_with: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []  # (index, index of the first rollout of the batch with its key)
    fresh: list[int] = []
    for index, fields in enumerate(items):
        key = fields.get("idempotency_key")
        if key is not None and key in stored:
            try:
                results[index] = (rollout_same_or_conflict(stored[key], _bulk_content(fields)), False)
            except ApplicationError as exc:
                raise _indexed(exc, index) from None
        elif key is not None and key in first_with:
            repeats.append((index, first_with[key]))
        else:
            if key is not None:
                first_with[key] = index
            fresh.append(index)
    if fresh:
        try:
            places = forest_rollouts_place(
                forest_name=forest_name,
                paths=[
                    PathWanted(
                        example=items[i]["example"],
                        steps=list(items[i]["reasoning"]),
                        ground_truth=items[i].get("ground_truth"),
                        root_id=items[i].get("root_id"),
                    )
                    for i in fresh
                ],
            )
        except ApplicationError as exc:
            raise _indexed(exc, fresh[exc.extra["index"]]) from None
    with transaction.atomic():  # all or nothing: a key repeated with other content undoes the batch
        if fresh:
            try:
                stored_now = _bulk_store([items[i] for i in fresh], places)
            except ApplicationError as exc:  # refused one at a time (a race): its index among the fresh ones
                if "index" in exc.extra:
                    exc.extra["index"] = fresh[exc.extra["index"]]
                raise
            for index, result in zip(fresh, stored_now, strict=True):
                results[index] = result
        for index, first in repeats:
            try:
                rollout = rollout_same_or_conflict(results[first][0], _bulk_content(items[index]))
            except ApplicationError as exc:
                raise _indexed(exc, index) from None
            results[index] = (rollout, False)
    return [result for result in results if result is not None]


def _bulk_content(fields: Mapping[str, Any]) -> dict[str, Any]:
    return _content_given(
        model=fields["model"],
        example=fields["example"],
        reasoning=fields["reasoning"],
        worker=fields["worker"],
        prediction=fields.get("prediction"),
        ground_truth=fields.get("ground_truth"),
        answer=fields.get("answer"),
    )


def _bulk_store(items: list[dict[str, Any]], places: list[TriePlace]) -> list[tuple[Rollout, bool]]:
    try:
        with transaction.atomic():
            return _bulk_write(items, places)
    except IntegrityError:
        # A concurrent writer stored one of these steps or keys meanwhile: one at a time, which handles that.
        return _bulk_write_one_by_one(items, forest_name=places[0].forest.name)


def _bulk_write(items: list[dict[str, Any]], places: list[TriePlace]) -> list[tuple[Rollout, bool]]:
    if not connection.features.can_return_rows_from_bulk_insert:  # the ids are needed: one at a time instead
        return _bulk_write_one_by_one(items, forest_name=places[0].forest.name)
    rows: list[Rollout] = []
    leaves: list[LeafFacts] = []
    for fields, place in zip(items, places, strict=True):
        prediction, ground_truth, answer, verdict = rollout_verdict(
            place=place,
            prediction=fields.get("prediction"),
            ground_truth=fields.get("ground_truth"),
            answer=fields.get("answer"),
            correct=fields.get("correct"),
            verdict_reason=fields.get("verdict_reason", ""),
        )
        leaves.append(LeafFacts(prediction=prediction, answer=answer, correct=verdict.correct))
        rows.append(
            Rollout(
                model=fields["model"],
                example=fields["example"],
                reasoning=list(fields["reasoning"]),
                prediction=prediction,
                ground_truth=ground_truth,
                answer=answer,
                correct=verdict.correct,
                verdict_reason=_reason(verdict),
                worker=fields["worker"],
                attributes=dict(fields.get("attributes") or {}),
                idempotency_key=fields.get("idempotency_key"),
                forest_id=place.forest.pk,
            )
        )
    leaf_ids, nodes_added = forest_rollouts_insert(places=places, steps=[row.reasoning for row in rows], leaves=leaves)
    for row, leaf_id in zip(rows, leaf_ids, strict=True):
        row.node_id = leaf_id
    Rollout.objects.bulk_create(rows, batch_size=ROLLOUT_INSERT_BATCH)
    rollouts_account_many(rollouts=rows, root_ids=[place.root.pk for place in places], nodes_added=nodes_added)
    return [(row, True) for row in rows]


def _bulk_write_one_by_one(items: list[dict[str, Any]], *, forest_name: str) -> list[tuple[Rollout, bool]]:
    keys = {fields["idempotency_key"] for fields in items if fields.get("idempotency_key") is not None}
    before = set(Rollout.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True))
    results = []
    for index, fields in enumerate(items):
        try:
            rollout = receive_rollout(**fields, forest_name=forest_name)
        except ApplicationError as exc:
            raise _indexed(exc, index) from None
        key = fields.get("idempotency_key")
        results.append((rollout, key is None or key not in before))
    return results
