"""Writes of forests: seeding a forest from an experiment config, and deleting one fast.

Seeding is all-or-nothing: the forest and all its roots are written in one transaction, so a failure half-way (a bad
item, an interrupted command, a dataset that stops reading) leaves no forest behind and the same command can simply
be run again. There is no resume: a forest that exists is complete.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import F
from django.utils import timezone

from forests.growth.delete import forest_growth_delete
from forests.metrics.beam import Aggregation
from forests.metrics.plot import search_plot
from forests.metrics.values import LABELLED
from forests.metrics_reading import value_function_parse
from forests.models import Forest, Node, TreeWord, text_sha256
from forests.models import SearchReport as SearchReportRow
from forests.provenance import Provenance, provenance_of
from forests.search_reports import AGGREGATION_UNKNOWN, SEARCH_REPORT_KEY, forest_coverage
from prmsite.core.configs.interfaces import (
    RolloutConfig,
    check_generation_settings,
    check_label,
    check_reference_answer,
    check_serialized,
)
from prmsite.core.errors import ApplicationError, ConfigError, ConflictError
from rollouts.models import Rollout

SEED_BATCH_SIZE = 2000
NAME_PART = re.compile(r"^[A-Za-z0-9_.-]+$")
FOREST_NAME_MAX = Forest._meta.get_field("name").max_length

ERROR_FOREST_EXISTS = "a forest named {name!r} already exists; choose another --forest_name_suffix"
ERROR_BAD_SUFFIX = "forest name suffix {suffix!r} may hold only letters, digits, '_', '-' and '.'"
ERROR_NAME_TOO_LONG = "forest name {name!r} is longer than {max} characters"
ERROR_BAD_LIMIT = "limit must be a positive integer, got {limit!r}"
ERROR_EMPTY = "split {split!r} of config {config!r} has no items: no forest was created"
WARNING_DIRTY = "the folder of config {config!r} ({folder}) has uncommitted changes: the recorded commit {commit} does "
WARNING_DIRTY += "not hold the config as it was used (its source text is recorded on the forest)"


@dataclass(frozen=True)
class SeedResult:
    forest: Forest
    trees: int
    provenance: Provenance
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON object ``seed_forest`` prints."""
        return {
            "forest_name": self.forest.name,
            "trees": self.trees,
            "config_name": self.forest.config_name,
            "dataset_split": self.forest.dataset_split,
            "answer_kind": (self.forest.rollout_config or {}).get("answer_kind", "label"),
            "config_sha256": self.forest.config_sha256,
            "config_git_commit": self.forest.config_git_commit or None,
            "config_git_dirty": self.forest.config_git_dirty,
        }


@dataclass(frozen=True)
class DeleteResult:
    forest_name: str
    nodes: int
    rollouts_detached: int


def forest_name_make(*, config_name: str, dataset_split: str, suffix: str = "", now: datetime | None = None) -> str:
    """``<config_name>-<split>-<suffix>``, the suffix defaulting to a UTC timestamp; safe in a URL path segment."""
    suffix = suffix.strip()
    if suffix and not NAME_PART.match(suffix):
        raise ApplicationError(ERROR_BAD_SUFFIX.format(suffix=suffix))
    if not suffix:
        suffix = (now or timezone.now()).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    split = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_split).strip("_") or "split"
    name = f"{config_name}-{split}-{suffix}"
    if len(name) > FOREST_NAME_MAX:
        raise ApplicationError(ERROR_NAME_TOO_LONG.format(name=name, max=FOREST_NAME_MAX))
    return name


def forest_seed(
    *,
    config: RolloutConfig,
    dataset_split: str,
    forest_name_suffix: str = "",
    limit: int | None = None,
    batch_size: int = SEED_BATCH_SIZE,
    on_progress: Callable[[int, int | None], None] | None = None,
    now: datetime | None = None,
) -> SeedResult:
    """Create a forest with one root per item of ``dataset_split`` (the first ``limit`` items when given).

    Each root holds the config's prompt for the item, its reference answer as text (``reference_answer``), for the
    ``label`` answer kind also its integer label as ``ground_truth`` (null for the other kinds), and the serialized
    item; the forest holds the config's generation settings, answer kind and provenance. All or nothing: on any error
    nothing is written.
    ``on_progress(done, total)`` is called after every batch (``total`` is ``None`` for an unsized dataset).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ApplicationError(ERROR_BAD_LIMIT.format(limit=limit))
    check_generation_settings(config)
    label_kind = config.answer_spec().kind == "label"
    name = forest_name_make(
        config_name=config.config_name, dataset_split=dataset_split, suffix=forest_name_suffix, now=now
    )
    if Forest.objects.filter(name=name).exists():
        raise ConflictError(ERROR_FOREST_EXISTS.format(name=name))
    provenance = provenance_of(config.source_path)
    warnings = []
    if provenance.git_dirty:
        folder = os.path.dirname(config.source_path)
        warnings.append(WARNING_DIRTY.format(config=config.config_name, folder=folder, commit=provenance.git_commit))
    items = _call(config.get_dataset_iterator, dataset_split, what="get_dataset_iterator")
    total = _size(items)
    if limit is not None:
        total = limit if total is None else min(total, limit)
        items = itertools.islice(items, limit)

    try:
        with transaction.atomic():
            forest = Forest.objects.create(
                name=name,
                config_name=config.config_name,
                dataset_split=dataset_split,
                config_source=provenance.source,
                config_sha256=provenance.sha256,
                config_git_commit=provenance.git_commit,
                config_git_dirty=provenance.git_dirty,
                rollout_config=config.get_rollout_config(),
                attributes={"limit": limit} if limit is not None else {},
            )
            trees = 0
            for batch in _batches(items, batch_size):
                roots = [
                    _root(forest, config, item, index, label_kind=label_kind)
                    for index, item in enumerate(batch, start=trees)
                ]
                Node.objects.bulk_create(roots, batch_size=batch_size)
                trees += len(roots)
                if on_progress is not None:
                    on_progress(trees, total)
            if trees == 0:
                raise ConfigError(ERROR_EMPTY.format(split=dataset_split, config=config.config_name))
            # Every root is its own tree: one statement for all of them.
            Node.objects.filter(forest=forest, parent__isnull=True).update(tree=F("id"))
    except IntegrityError as exc:
        if Forest.objects.filter(name=name).exists():
            raise ConflictError(ERROR_FOREST_EXISTS.format(name=name)) from exc
        raise
    return SeedResult(forest=forest, trees=trees, provenance=provenance, warnings=warnings)


def forest_delete(*, forest: Forest) -> DeleteResult:
    """Delete ``forest`` and all its nodes with set-based statements (no per-node Python cascade).

    Rollouts that point into the forest are kept, detached (``forest`` and ``node`` set to null), as ``SET_NULL``
    would. Foreign keys between nodes are checked at commit (deferred), so the nodes go in one ``DELETE``.
    """
    using = router.db_for_write(Node)
    with transaction.atomic(using=using):
        detached = Rollout.objects.filter(forest=forest).update(forest=None, node=None)
        detached += Rollout.objects.filter(node__forest=forest).update(node=None)
        forest_growth_delete(forest=forest)
        TreeWord.objects.filter(forest=forest)._raw_delete(using)
        nodes = Node.objects.filter(forest=forest)._raw_delete(using)
        name = forest.name
        Forest.objects.filter(pk=forest.pk)._raw_delete(using)
    return DeleteResult(forest_name=name, nodes=nodes, rollouts_detached=detached)


def _root(forest: Forest, config: RolloutConfig, item: Mapping[str, Any], index: int, *, label_kind: bool) -> Node:
    prompt = _call(config.get_root_prompt, item, what="get_root_prompt", index=index)
    if not isinstance(prompt, str):
        raise ConfigError(f"item #{index}: get_root_prompt must return a str, got {type(prompt).__name__}")
    try:
        if label_kind:  # the reference of a label forest is its integer label as text, whatever else the config says
            label: int | None = check_label(_call(config.get_label, item, what="get_label", index=index))
            reference = str(label)
        else:
            label = None
            reference = check_reference_answer(
                _call(config.get_reference_answer, item, what="get_reference_answer", index=index)
            )
        serialized = check_serialized(
            _call(config.serialize_dataset_item, item, what="serialize_dataset_item", index=index)
        )
    except ConfigError as exc:
        raise ConfigError(exc.message if exc.message.startswith("item #") else f"item #{index}: {exc.message}") from exc
    return Node(
        forest=forest,
        depth=0,
        text=prompt,
        text_sha256=text_sha256(prompt),
        ground_truth=label,
        reference_answer=reference,
        serialized_item=serialized,
        attributes={},
    )


def _call(method: Callable[..., Any], arg: Any, *, what: str, index: int | None = None) -> Any:
    """Call a config method, turning any failure into a :class:`ConfigError` that says which method and item."""
    where = f"item #{index}: " if index is not None else ""
    try:
        return method(arg)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc.message}") from exc
    except Exception as exc:
        raise ConfigError(f"{where}{what} raised {type(exc).__name__}: {exc}") from exc


def _size(items: Iterable[Any]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


def _batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


LEGACY_STAMP = "%Y-%m-%d %H:%M UTC"  # how reports saved in Forest.attributes dated themselves


def _report_row(
    *, forest: Forest, report: Mapping[str, Any], created_by: Any, when: datetime | None
) -> SearchReportRow:
    """A ``SearchReport`` row for ``report``, with the forest's size and the value source's coverage now and its
    plot (the queries and the drawing happen here, before the caller's lock is taken)."""
    option = str(report.get("value_function_option") or LABELLED)
    aggregation = str(report.get("aggregation") or "")
    if aggregation not in {a.value for a in Aggregation}:
        choices = ", ".join(a.value for a in Aggregation)
        raise ApplicationError(AGGREGATION_UNKNOWN.format(choices=choices, aggregation=aggregation[:100]))
    coverage = forest_coverage(forest=forest, value_function=value_function_parse(option))
    results = [row for row in report.get("results") or [] if isinstance(row, Mapping)]
    row = SearchReportRow(
        forest=forest,
        value_function=option,
        aggregation=aggregation,
        num_beam_values=[row.get("num_beams") for row in results],
        results={key: value for key, value in report.items() if key != "computed_at"},
        forest_rollouts=coverage.rollouts,
        forest_trees=coverage.trees,
        forest_nodes=coverage.nodes,
        covered_rollouts=coverage.covered_rollouts,
        covered_trees=coverage.covered_trees,
        plot_svg=search_plot([report]).decode(),
        created_by=created_by,
    )
    row.created_at = when  # set after auto_now_add by _row_keep when given
    return row


def _row_keep(row: SearchReportRow) -> SearchReportRow:
    when = row.created_at
    row.save()
    if when is not None:
        SearchReportRow.objects.filter(pk=row.pk).update(created_at=when)
        row.created_at = when
    return row


def forest_search_report_save(
    *, forest: Forest, report: Mapping[str, Any], created_by: Any = None, now: datetime | None = None
) -> SearchReportRow:
    """Keep ``report`` (a ``SearchReport.as_dict()``) as a new ``SearchReport`` row of the forest, beside the earlier
    ones, with the forest's size, the value source's coverage and the report's plot, drawn now.

    A report an older version saved in ``Forest.attributes`` is kept first as a row of its own (dated by its
    ``computed_at``; its size and coverage are the forest's now) and removed from the attributes. The forest row is
    locked meanwhile, so keys that others keep in the attributes are not lost and the old report is kept once.
    """
    row = _report_row(forest=forest, report=report, created_by=created_by, when=now)
    legacy = _legacy_row(forest)
    with transaction.atomic():
        locked = Forest.objects.select_for_update().get(pk=forest.pk)
        attributes = dict(locked.attributes or {})
        if SEARCH_REPORT_KEY in attributes:
            old = attributes.pop(SEARCH_REPORT_KEY)
            if legacy is not None and old == (forest.attributes or {}).get(SEARCH_REPORT_KEY):
                _row_keep(legacy)
            locked.attributes = attributes
            locked.save(update_fields=["attributes"])
        _row_keep(row)
    forest.attributes = locked.attributes
    return row


def _legacy_row(forest: Forest) -> SearchReportRow | None:
    """The report an older version kept in ``forest.attributes``, as a row to keep (``None`` when there is none)."""
    old = (forest.attributes or {}).get(SEARCH_REPORT_KEY)
    if not (isinstance(old, dict) and isinstance(old.get("results"), list)):
        return None
    try:
        when = datetime.strptime(str(old.get("computed_at")), LEGACY_STAMP).replace(tzinfo=UTC)
    except ValueError:
        when = None
    try:
        return _report_row(forest=forest, report=old, created_by=None, when=when)
    except ApplicationError:  # its value function no longer parses: it is dropped with the key
        return None
