"""Export kinds by name: kind ``name`` is the module ``forests.metrics.export.kinds.<name>`` (its schema and its
builder, see ``kinds/__init__.py``), for each name of ``names.KINDS``. Pure: no Django.

A kind's module is imported when it is first asked for: the kinds load pyarrow and datasets (heavy), and the server
imports this registry at start (the admin's export action) without exporting anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module
from types import ModuleType

from forests.metrics.export.names import KINDS
from forests.metrics.export.options import KIND_UNKNOWN, ExportOptions
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress

KINDS_PACKAGE = "forests.metrics.export.kinds"


def kind_module(name: str) -> ModuleType:
    """The module of kind ``name``; ``ValueError`` (``KIND_UNKNOWN``) for a name not in ``KINDS``."""
    if name not in KINDS:
        raise ValueError(KIND_UNKNOWN.format(kinds=", ".join(KINDS), kind=name))
    return import_module(f"{KINDS_PACKAGE}.{name}")  # deferred: a kind loads pyarrow and datasets (heavy)


def features_of(options: ExportOptions):
    """The ``datasets.Features`` of ``options.kind``'s records."""
    return kind_module(options.kind).features(options)


def export_batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    """The records of ``options.kind`` as column batches, counted in ``tally.records``; ``progress(trees_done,
    trees)`` is called as they go.

    ``Json`` columns (the tree's ``root``) hold ``json.dumps``' text, what parquet and ``save_to_disk`` store; with
    ``json_lines``, the text a JSON lines file gets instead (``dataset_write(..., raw_json=True)``).
    """
    for batch in kind_module(options.kind).batches(source, options, tally, progress, json_lines=json_lines):
        tally.records += len(next(iter(batch.values())))
        yield batch
