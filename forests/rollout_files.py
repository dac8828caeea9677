"""A forest's rollouts as a JSON-lines file, and back: to move rollouts between servers, or to ship the demo forest's.

Each line is a rollout in the body format of ``POST /rollout`` (``model``, ``example``, ``reasoning``, ``prediction``,
``ground_truth``, ``worker``, the extra fields it was posted with, such as ``usage``), with an ``idempotency_key``:
the one it was posted with, else one naming where it came from (``export:<forest>:<id>``). Importing stores each
rollout into the forest named on import, through the same path as ``POST /rollout`` (the trie and the growth
bookkeeping), so importing a file twice stores nothing the second time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from forests.models import Forest
from prmsite.errors import ApplicationError

LINE_NOT_A_ROLLOUT = "line {line}: {problem}"
FILE_EMPTY = "{path} holds no rollout"


@dataclass(frozen=True)
class ImportResult:
    created: int
    already_there: int


def forest_rollouts_export(*, forest: Forest) -> Iterator[dict[str, Any]]:
    """Every rollout stored in ``forest``, oldest first, as ``POST /rollout`` bodies (see the module docstring)."""
    from rollouts.models import Rollout

    rollouts = Rollout.objects.filter(forest=forest).order_by("id").iterator(chunk_size=2000)
    for rollout in rollouts:
        yield {
            **(rollout.attributes or {}),
            "model": rollout.model,
            "example": rollout.example,
            "reasoning": rollout.reasoning,
            "prediction": rollout.prediction,
            "ground_truth": rollout.ground_truth,
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


def rollouts_file_read(path: Path, *, validate: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    """The rollouts of a JSON-lines file, each passed through ``validate`` (which answers the fields to store or
    raises ``ApplicationError``); ``ApplicationError`` naming the line at the first bad one."""
    records = []
    with path.open(encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:
                raise ApplicationError(LINE_NOT_A_ROLLOUT.format(line=number, problem=f"not JSON ({exc})")) from exc
            if not isinstance(record, dict):
                raise ApplicationError(LINE_NOT_A_ROLLOUT.format(line=number, problem="not a JSON object"))
            try:
                records.append(validate(record))
            except ApplicationError as exc:
                raise ApplicationError(LINE_NOT_A_ROLLOUT.format(line=number, problem=exc.message)) from exc
    if not records:
        raise ApplicationError(FILE_EMPTY.format(path=path))
    return records


def forest_rollouts_import(
    *, forest_name: str, records: Iterable[dict[str, Any]], on_progress: Callable[[int], None] | None = None
) -> ImportResult:
    """Store validated rollout fields into ``forest_name`` as ``POST /rollout`` would, all or nothing (one
    transaction). A rollout whose idempotency key is stored already is not stored again (the same key with other
    content is a ``ConflictError``)."""
    from forests.growth_services import rollout_receive
    from rollouts.models import Rollout

    created = already = 0
    with transaction.atomic():
        for index, fields in enumerate(records, start=1):
            key = fields.get("idempotency_key")
            existed = bool(key) and Rollout.objects.filter(idempotency_key=key).exists()
            rollout_receive(**{**fields, "forest_name": forest_name})
            already += existed
            created += not existed
            if on_progress is not None:
                on_progress(index)
    return ImportResult(created=created, already_there=already)
