"""A forest's rollouts as a JSON-lines file, and back: to move rollouts between servers, or to ship the demo forest's.

Each line is a rollout in the body format of ``POST /rollout`` (``model``, ``example``, ``reasoning``, ``prediction``
and ``ground_truth`` or, for a forest whose answers are not class labels, ``answer``, ``worker``, the extra fields it
was posted with, such as ``usage``), with an ``idempotency_key``:
the one it was posted with, else one naming where it came from (``export:<forest>:<id>``). Importing stores each
rollout into the forest named on import, through the same path as ``POST /rollout`` (the trie and the growth
bookkeeping), so importing a file twice stores nothing the second time.

An import reads the file twice, one line at a time (memory bounded by the longest line allowed, whatever the file
holds): first it checks every line (JSON, the rules of ``POST /rollout``, the forest has its tree), so that a bad line
is reported with its number before anything is stored; then it stores the rollouts in short transactions of
``IMPORT_BATCH_SIZE``, so that workers posting meanwhile are not locked out. A line without an idempotency key gets
one from the forest, its line number and its text: an import interrupted in the middle and run again stores only
what is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from forests.intake import receive_rollout, rollout_check
from forests.models import Forest
from prmsite.core.errors import ApplicationError
from rollouts.models import Rollout

LINE_NOT_A_ROLLOUT = "line {line}: {problem}"
LINE_NOT_STORED = (
    "line {line}: {problem} ({stored} rollouts before it are stored; run the import again once the line is fixed: "
    "what is stored is not stored twice)"
)
FILE_EMPTY = "{path} holds no rollout"
LINE_TOO_LONG = "longer than {limit} bytes (the largest line an import reads, DJANGO_DATA_UPLOAD_MAX_BYTES)"
NOT_UTF8 = "not UTF-8 text (an invalid byte at offset {offset} of the line)"
NOT_A_JSON_NUMBER = "{value} is not a JSON number (NaN and Infinity are not, nor numbers beyond float range)"
BAD_BATCH_SIZE = "The batch size must be at least 1."
# Rollouts stored per transaction by an import: about a second of work (20-50 ms a rollout), so writers waiting
# meanwhile (on SQLite the database has one write lock) wait that long, not for the whole import.
IMPORT_BATCH_SIZE = 50


def forest_rollouts_export(*, forest: Forest) -> Iterator[dict[str, Any]]:
    """Every rollout stored in ``forest``, oldest first, as ``POST /rollout`` bodies (see the module docstring)."""
    rollouts = Rollout.objects.filter(forest=forest).order_by("id").iterator(chunk_size=2000)
    for rollout in rollouts:
        body = {
            **(rollout.attributes or {}),
            "model": rollout.model,
            "example": rollout.example,
            "reasoning": rollout.reasoning,
        }
        if rollout.ground_truth is None:  # an answer rollout (math, number, text): its tree holds the reference
            body["answer"] = rollout.answer
        else:  # a class label rollout, in the specification's fields
            body |= {"prediction": rollout.prediction, "ground_truth": rollout.ground_truth}
        yield body | {
            "worker": rollout.worker,
            "idempotency_key": rollout.idempotency_key or f"export:{forest.name}:{rollout.pk}",
        }


def rollouts_file_write(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write ``records`` as JSON lines to ``path`` (a temporary file, then renamed: nothing half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # opened plainly: the file gets the umask's mode
    count = 0
    try:
        with temporary.open("w", encoding="utf-8") as sink:
            for record in records:
                sink.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                count += 1
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


@dataclass(frozen=True)
class ImportResult:
    created: int
    already_there: int
    batches: int = 0  # write transactions


class _NotJSONNumber(ValueError):
    """A number JSON does not have (``NaN``, ``Infinity``) or that no float holds (``1e400``)."""


def _refuse_constant(name: str) -> Any:
    raise _NotJSONNumber(NOT_A_JSON_NUMBER.format(value=name))


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSONNumber(NOT_A_JSON_NUMBER.format(value=text[:40]))
    return value


def _line_error(number: int, problem: str) -> ApplicationError:
    return ApplicationError(LINE_NOT_A_ROLLOUT.format(line=number, problem=problem))


def rollout_lines(
    path: Path, *, max_line_bytes: int, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """``(line number, raw line, JSON object)`` for each non-blank line of a JSON-lines file, read one line at a time
    (memory bounded by ``max_line_bytes``, whatever the file holds); ``ApplicationError`` naming the line at the first
    that is longer than ``max_line_bytes`` (refused before it is read whole), not UTF-8, not JSON (``NaN`` and
    ``Infinity`` are not, nor numbers beyond float range) or not an object. ``on_bytes(n)``: bytes read so far."""
    done = 0
    with path.open("rb") as source:
        for number in itertools.count(1):
            raw = source.readline(max_line_bytes + 1)
            if not raw:
                return
            done += len(raw)
            if on_bytes is not None:
                on_bytes(done)
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                raise _line_error(number, LINE_TOO_LONG.format(limit=max_line_bytes))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _line_error(number, NOT_UTF8.format(offset=exc.start)) from exc
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
            except _NotJSONNumber as exc:
                raise _line_error(number, str(exc)) from exc
            except (ValueError, RecursionError) as exc:
                raise _line_error(number, f"not JSON ({exc})") from exc
            if not isinstance(record, dict):
                raise _line_error(number, "not a JSON object")
            yield number, raw, record


def _key_of_line(*, forest_name: str, number: int, raw: bytes) -> str:
    """The idempotency key of a line that brings none: the same line of the same file imported into the same forest
    again (a run after an interrupted one) has the same key, so it is stored once."""
    digest = hashlib.sha256(b"%s\n%d\n%s" % (forest_name.encode("utf-8"), number, raw.rstrip(b"\r\n")))
    return f"import:{digest.hexdigest()}"


Validate = Callable[[dict[str, Any]], dict[str, Any]]


def rollouts_file_fields(
    path: Path,
    *,
    forest_name: str,
    validate: Validate,
    max_line_bytes: int,
    on_bytes: Callable[[int], None] | None = None,
    check_forest: bool = False,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, fields to store)`` for each rollout of a JSON-lines file: each record passed through
    ``validate`` (which answers the fields to store or raises ``ApplicationError``), given an idempotency key when it
    has none (``_key_of_line``) and, with ``check_forest``, checked against the forest by reads only (its tree is
    found, its ground truth matches; storing it checks that again). ``ApplicationError`` naming the line at the first
    bad one."""
    for number, raw, record in rollout_lines(path, max_line_bytes=max_line_bytes, on_bytes=on_bytes):
        try:
            fields = validate(record)
            if check_forest:
                rollout_check(
                    reasoning=fields["reasoning"],
                    example=fields["example"],
                    ground_truth=fields.get("ground_truth"),
                    forest_name=forest_name,
                )
        except ApplicationError as exc:
            raise _line_error(number, exc.message) from exc
        if not fields.get("idempotency_key"):
            fields["idempotency_key"] = _key_of_line(forest_name=forest_name, number=number, raw=raw)
        yield number, fields


def rollouts_file_check(path: Path, **arguments: Any) -> int:
    """Read and check every rollout of the file (``rollouts_file_fields``, same arguments, against the forest too)
    without storing any; answer how many it holds. Streams: memory stays bounded by one line."""
    count = sum(1 for _ in rollouts_file_fields(path, **arguments, check_forest=True))
    if not count:
        raise ApplicationError(FILE_EMPTY.format(path=path))
    return count


def forest_rollouts_import(
    *,
    forest_name: str,
    records: Iterable[tuple[int, dict[str, Any]]],
    batch_size: int = IMPORT_BATCH_SIZE,
    on_progress: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ImportResult:
    """Store ``(line number, validated fields)`` into ``forest_name`` as ``POST /rollout`` would, ``batch_size``
    rollouts per transaction, so that other writers (workers posting meanwhile; on SQLite the database has one write
    lock) wait for one batch at most, never for the whole import. A rollout whose idempotency key is stored already
    is not stored again (the same key with other content is a ``ConflictError``): a run after an interrupted one adds
    only what is missing. A rollout refused while writing (``ApplicationError``) rolls back its batch and is reported
    with its line and what the batches before it stored. ``on_batch(stored)`` runs after each commit, outside any
    transaction."""
    if batch_size < 1:
        raise ApplicationError(BAD_BATCH_SIZE)
    created = already = batches = 0
    for batch in _batched(records, batch_size):
        keys = [fields["idempotency_key"] for _, fields in batch if fields.get("idempotency_key")]
        stored = set(Rollout.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True))
        with transaction.atomic():
            for number, fields in batch:
                try:
                    receive_rollout(**{**fields, "forest_name": forest_name})
                except ApplicationError as exc:
                    raise ApplicationError(
                        LINE_NOT_STORED.format(line=number, problem=exc.message, stored=created + already)
                    ) from exc
        batch_already = sum(1 for _, fields in batch if fields.get("idempotency_key") in stored)
        already += batch_already
        created += len(batch) - batch_already
        batches += 1
        if on_progress is not None:
            on_progress(created + already)
        if on_batch is not None:
            on_batch(created + already)
    return ImportResult(created=created, already_there=already, batches=batches)


def _batched(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
