"""Importing a public step-labelled dataset (PRM800K, ProcessBench, Math-Shepherd, our stepwise export) as a forest
and a labelling scheme: ``import_dataset``.

The file is read twice, one record at a time (``prmsite.core.step_datasets``): first every record is checked (it
parses, its text can be stored, every path passes the intake's step rules, a problem seen twice has one reference
answer) and the file's content hashed, before anything is written; then everything is written in ONE transaction:
the forest (its ``rollout_config`` carries the answer kind), one root per problem (the reference answer, and the
original item without its steps, with its ``subset``), every path through the one intake
(``forests.intake.receive_rollouts_bulk``, a batch of records at a time: shared step prefixes merge in the trie, the
answer is graded there unless the dataset states the path's correctness) and every path's step labels as a label of
the scheme (``rollouts.labels.label_create_many``, as trusted code: ``labelled_by`` empty). A failure anywhere leaves
nothing of the file behind.

Importing the same file again adds nothing: the forest's name is derived from the format, the file's stem and (with
no ``--forest_name_suffix``) the first characters of the file's sha256, so the second run finds the same forest;
every rollout's idempotency key is derived from the file's sha256, its record number and the path's index, so the
intake answers the stored rollout instead of storing it again, and ``label_create_many`` answers the stored label.
A forest of that name holding another file (another sha256) or another answer kind is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import F

from forests.intake import receive_rollouts_bulk, steps_check
from forests.models import Forest, Node, text_sha256
from forests.services import forest_name_make
from prmsite.core import step_datasets
from prmsite.core.errors import ApplicationError, ConflictError
from prmsite.core.grading import AnswerSpec
from prmsite.parsers import text_problem
from rollouts.labels import label_create_many
from rollouts.models import LabellingScheme, Rollout

IMPORT_WORKER = "import_dataset"  # the worker name of imported rollouts and labels
DEFAULT_ANSWER_KIND = "math"  # all four formats are math datasets
IMPORT_KEY = "import"  # the forest's attributes keep what was imported under this key
WRITE_BATCH = 200  # records whose roots are written, then whose paths are stored, at a time
SCHEME_TITLE = "{fmt} labels imported from {name}"

AT = "{where} {number}: {problem}"
FILE_EMPTY = "{path} holds no path to import"
REFERENCE_DIFFERS = "problem first seen at {where} {first} with reference answer {expected!r}, here {given!r}"
NOT_A_LABEL = "answer kind label needs an integer reference answer, not {reference!r}"
OTHER_FILE = "forest {name!r} holds an import of another file (sha256 {stored}); choose another --forest_name_suffix"
NOT_IMPORTED = "forest {name!r} exists and was not made by import_dataset; choose another --forest_name_suffix"
OTHER_KIND = "forest {name!r} was imported with answer kind {stored!r}, not {given!r}"
PATH_REFUSED = "{where} {number}, path {path}: {problem}"
LABEL_REFUSED = "{where} {number}, path {path}: its labels were refused: {problem}"


@dataclass(frozen=True)
class ImportSummary:
    """What ``import_dataset`` did; ``summary()`` is its last line of output."""

    forest_name: str
    labelling_scheme_version: str
    rollouts: int  # stored by this run
    labels: int  # stored by this run
    paths: int  # in the file
    problems: int
    records: int
    forest_created: bool
    sha256: str

    def summary(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _FileCheck:
    sha256: str
    records: int
    paths: int
    problems: int
    where: str


def _at(where: str, number: int, problem: str) -> ApplicationError:
    return ApplicationError(AT.format(where=where, number=number, problem=problem))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _where(path: Path) -> str:
    """How the parser names a record of ``path``: by line, by row (Parquet) or by item (a JSON array)."""
    for where, _, _ in step_datasets.raw_items(path):
        return where
    return "line"


def _records(path: Path, fmt: str, *, alternatives: bool, on_bytes=None) -> Iterator[step_datasets.StepRecord]:
    default_subset = path.stem if fmt == step_datasets.PROCESSBENCH else None
    return step_datasets.records_read(
        path, fmt, default_subset=default_subset, alternatives=alternatives, on_bytes=on_bytes
    )


def _record_check(record: step_datasets.StepRecord, spec: AnswerSpec) -> None:
    """What the intake and the database would refuse of ``record``, found before anything is written."""
    problem = text_problem(record.problem, where="the problem") or text_problem(record.item, where="the item")
    if problem:
        raise ApplicationError(problem)
    if spec.kind == "label" and record.reference is not None and _integer(record.reference) is None:
        raise ApplicationError(NOT_A_LABEL.format(reference=record.reference))
    for index, path in enumerate(record.paths):
        try:
            problem = text_problem(path.steps, where="the steps") or text_problem(path.answer, where="the answer")
            problem = problem or text_problem(path.attributes, where="the path") or text_problem(path.model)
            if problem:
                raise ApplicationError(problem)
            steps_check(path.steps)
        except ApplicationError as exc:
            raise ApplicationError(f"path {index}: {exc.message}") from exc


def _integer(text: str) -> int | None:
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        return None


def dataset_file_check(
    path: Path, fmt: str, *, spec: AnswerSpec, alternatives: bool = True, on_bytes: Callable[[int], None] | None = None
) -> _FileCheck:
    """Read and check every record of ``path`` without writing anything; ``ApplicationError`` naming the first bad
    record. Memory: one record, and the reference answer of each problem (to refuse a problem with two)."""
    where = _where(path)
    references: dict[str, tuple[int, str | None]] = {}
    records = paths = 0
    try:
        for record in _records(path, fmt, alternatives=alternatives, on_bytes=on_bytes):
            records += 1
            try:
                _record_check(record, spec)
            except ApplicationError as exc:
                raise _at(where, record.number, exc.message) from exc
            if not record.paths:
                continue
            key = text_sha256(record.problem)
            first = references.setdefault(key, (record.number, record.reference))
            if first[1] != record.reference and record.reference is not None and first[1] is not None:
                raise _at(
                    where,
                    record.number,
                    REFERENCE_DIFFERS.format(where=where, first=first[0], expected=first[1], given=record.reference),
                )
            if first[1] is None and record.reference is not None:
                references[key] = (first[0], record.reference)
            paths += len(record.paths)
    except RecursionError as exc:
        raise ApplicationError(f"{path}: nested too deeply") from exc
    if not paths:
        raise ApplicationError(FILE_EMPTY.format(path=path))
    return _FileCheck(sha256=file_sha256(path), records=records, paths=paths, problems=len(references), where=where)


def import_names(path: Path, fmt: str, *, sha256: str, suffix: str = "", version: str | None = None) -> tuple[str, str]:
    """``(forest name, labelling scheme version)`` of an import: ``<format>-<stem>-<suffix>``, the suffix defaulting
    to the first 12 hex digits of the file's sha256 (so the same file finds the same forest); ``<format>-<stem>``."""
    name = forest_name_make(config_name=fmt, dataset_split=path.stem, suffix=suffix or sha256[:12])
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem).strip("_") or "file"
    return name, version or f"{fmt}-{stem}"[:200]


def _forest_for(*, name: str, fmt: str, path: Path, check: _FileCheck, spec: AnswerSpec) -> tuple[Forest, bool]:
    """The import's forest, created when missing; a forest of that name holding something else is refused."""
    forest = Forest.objects.select_for_update().filter(name=name).first()
    if forest is not None:
        stored = (forest.attributes or {}).get(IMPORT_KEY)
        if not isinstance(stored, dict):
            raise ConflictError(NOT_IMPORTED.format(name=name))
        if stored.get("sha256") != check.sha256:
            raise ConflictError(OTHER_FILE.format(name=name, stored=stored.get("sha256")))
        kind = AnswerSpec.from_settings(forest.rollout_config).kind
        if kind != spec.kind:
            raise ConflictError(OTHER_KIND.format(name=name, stored=kind, given=spec.kind))
        return forest, False
    forest = Forest.objects.create(
        name=name,
        config_name=fmt,
        dataset_split=path.stem[:100],
        rollout_config=spec.as_settings(),
        attributes={IMPORT_KEY: {"format": fmt, "file": path.name, "sha256": check.sha256, "records": check.records}},
    )
    return forest, True


def _roots_known(forest: Forest) -> dict[str, int]:
    return dict(Node.objects.filter(forest=forest, parent__isnull=True).values_list("text_sha256", "id"))


def _roots_create(
    forest: Forest, records: list[step_datasets.StepRecord], known: dict[str, int], spec: AnswerSpec
) -> None:
    """One root per problem of ``records`` that ``known`` (problem sha256 -> root id) lacks; ``known`` updated."""
    new: dict[str, Node] = {}
    for record in records:
        key = text_sha256(record.problem)
        if not record.paths or key in known or key in new:
            continue
        item = dict(record.item)
        if record.subset is not None:
            item["subset"] = record.subset
        new[key] = Node(
            forest=forest,
            depth=0,
            text=record.problem,
            text_sha256=key,
            reference_answer=record.reference,
            ground_truth=_integer(record.reference) if spec.kind == "label" and record.reference else None,
            serialized_item=item,
        )
    if not new:
        return
    created = Node.objects.bulk_create(list(new.values()))
    if any(node.pk is None for node in created):  # a backend that does not return ids
        ids = dict(
            Node.objects.filter(forest=forest, parent__isnull=True, text_sha256__in=list(new)).values_list(
                "text_sha256", "id"
            )
        )
    else:
        ids = {key: node.pk for key, node in zip(new, created, strict=True)}
    Node.objects.filter(pk__in=list(ids.values())).update(tree_id=F("id"))
    known.update(ids)


def dataset_import(
    *,
    path: Path,
    fmt: str,
    forest_name_suffix: str = "",
    labelling_scheme_version: str | None = None,
    answer_kind: str | None = None,
    alternatives: bool = True,
    on_check: Callable[[int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import ``path`` (format ``fmt``) as a forest and a labelling scheme (see the module docstring): checked whole
    first, then written in one transaction. ``on_check(bytes read)``, ``on_progress(paths stored, paths)``."""
    if fmt not in step_datasets.FORMATS:
        raise ApplicationError(
            step_datasets.UNKNOWN_FORMAT.format(format=fmt, formats=", ".join(step_datasets.FORMATS))
        )
    spec = AnswerSpec.from_settings({"answer_kind": answer_kind or DEFAULT_ANSWER_KIND})
    check = dataset_file_check(path, fmt, spec=spec, alternatives=alternatives, on_bytes=on_check)
    name, version = import_names(
        path, fmt, sha256=check.sha256, suffix=forest_name_suffix, version=labelling_scheme_version
    )
    key_prefix = f"{IMPORT_WORKER}:{check.sha256[:40]}"
    rollouts = labels = done = 0
    with transaction.atomic():
        forest, created = _forest_for(name=name, fmt=fmt, path=path, check=check, spec=spec)
        LabellingScheme.objects.get_or_create(
            prm_version=version, defaults={"title": SCHEME_TITLE.format(fmt=fmt, name=path.name)[:200]}
        )
        known = _roots_known(forest)
        records = _records(path, fmt, alternatives=alternatives)
        while batch := list(itertools.islice(records, WRITE_BATCH)):
            _roots_create(forest, batch, known, spec)
            stored, added = _paths_store(
                forest=forest, batch=batch, known=known, key_prefix=key_prefix, fmt=fmt, where=check.where, spec=spec
            )
            rollouts += added
            labels += _labels_store(stored=stored, version=version, where=check.where)
            done += len(stored)
            if on_progress is not None:
                on_progress(done, check.paths)
    return ImportSummary(
        forest_name=name,
        labelling_scheme_version=version,
        rollouts=rollouts,
        labels=labels,
        paths=check.paths,
        problems=check.problems,
        records=check.records,
        forest_created=created,
        sha256=check.sha256,
    )


def _paths_store(
    *,
    forest: Forest,
    batch: list[step_datasets.StepRecord],
    known: dict[str, int],
    key_prefix: str,
    fmt: str,
    where: str,
    spec: AnswerSpec,
) -> tuple[list[tuple[step_datasets.StepRecord, int, Rollout]], int]:
    """Store every path of ``batch`` through the intake (``receive_rollouts_bulk``: the intake's rules, a few
    statements for the batch); answer ``(record, path index, rollout)`` for each, and how many were new."""
    fields: list[dict[str, Any]] = []
    owners: list[tuple[step_datasets.StepRecord, int]] = []
    for record in batch:
        root_id = known.get(text_sha256(record.problem))
        # A label forest's rollouts state their tree's class label, as its stored rollouts do: a path without an
        # answer imported again then carries the same content as the first time.
        label = _integer(record.reference) if spec.kind == "label" and record.reference is not None else None
        for index, path in enumerate(record.paths):
            fields.append(
                {
                    "model": path.model[:300],
                    "example": record.problem,
                    "reasoning": path.steps,
                    "worker": IMPORT_WORKER,
                    "answer": path.answer,
                    "ground_truth": label,
                    "correct": path.correct,
                    "attributes": {
                        **path.attributes,
                        IMPORT_KEY: {"format": fmt, where: record.number, "path": index},
                    },
                    "root_id": root_id,
                    "idempotency_key": f"{key_prefix}:{record.number}:{index}",
                }
            )
            owners.append((record, index))
    try:
        results = receive_rollouts_bulk(fields, forest_name=forest.name)
    except ApplicationError as exc:
        record, index = owners[exc.extra["index"]]
        raise ApplicationError(
            PATH_REFUSED.format(where=where, number=record.number, path=index, problem=exc.message)
        ) from exc
    stored = [(record, index, rollout) for (record, index), (rollout, _) in zip(owners, results, strict=True)]
    return stored, sum(created for _, created in results)


def _labels_store(*, stored: list[tuple[step_datasets.StepRecord, int, Rollout]], version: str, where: str) -> int:
    """Each stored path's step labels as a label of ``version`` (trusted code: no lease, ``labelled_by`` empty), in
    one ``label_create_many`` for the batch."""
    try:
        results = label_create_many(
            labels=[(rollout.pk, record.paths[index].labels) for record, index, rollout in stored],
            prm_version=version,
            worker=IMPORT_WORKER,
            labelled_by=None,
        )
    except ApplicationError as exc:
        record, index, _ = stored[exc.extra["index"]]
        raise ApplicationError(
            LABEL_REFUSED.format(where=where, number=record.number, path=index, problem=exc.message)
        ) from exc
    return sum(created for _, created in results)
