"""Exporting a forest's preferences and step-level data to a file (``export_preferences`` and the admin download).

Reads the forest with a handful of streaming queries (rollouts, nodes, labels for a PRM or scheme value function,
texts, and rollout models for ``processbench``), then builds the kind's records (``forests.metrics.export.registry``)
and writes them (``prmsite.core.dataset_files``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from forests.metrics.export.names import PROCESSBENCH
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.registry import export_batches, features_of
from forests.metrics.export.source import ExportSource, ExportTally, Progress, export_texts
from forests.metrics_reading import forest_arrays_load, forest_values, rollout_models_load, value_function_parse
from forests.models import Forest
from prmsite.core.dataset_files import FORMAT_UNKNOWN, FORMATS, ExportError, dataset_write
from prmsite.core.errors import ApplicationError


@dataclass(frozen=True)
class ExportSummary:
    forest_name: str
    kind: str
    format: str
    output: str
    records: int
    skipped: dict[str, int]

    def line(self) -> str:
        skipped = ", ".join(f"{count} skipped ({reason})" for reason, count in sorted(self.skipped.items()))
        return (
            f"Exported {self.records} {self.kind} records of forest {self.forest_name} to {self.output} "
            f"({self.format}){'; ' + skipped if skipped else ''}"
        )


def export_options(**fields) -> ExportOptions:
    try:
        return ExportOptions(**fields)
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc


def preferences_export(
    *,
    forest: Forest,
    output: str | os.PathLike,
    fmt: str,
    options: ExportOptions,
    value_function_option: str = "labelled",
    on_rows: Callable[[int], None] | None = None,
    on_progress: Progress | None = None,
) -> ExportSummary:
    """Write ``options.kind`` records of ``forest`` to ``output`` (all or nothing; see ``dataset_write``)."""
    if fmt not in FORMATS:
        raise ApplicationError(FORMAT_UNKNOWN.format(formats=", ".join(FORMATS), fmt=fmt))
    value_function = value_function_parse(value_function_option)
    arrays = forest_arrays_load(forest=forest, on_rows=on_rows, with_texts=True)
    values = forest_values(forest=forest, arrays=arrays, value_function=value_function)
    texts = export_texts(arrays.texts, consume=True)  # held once, in Arrow, not also as a million Python strings
    arrays.texts = None
    source = ExportSource(
        forest_name=forest.name,
        forest=arrays,
        values=values,
        texts=texts,
        rollout_models=rollout_models_load(forest=forest) if options.kind == PROCESSBENCH else {},
    )
    tally = ExportTally()
    lines = fmt == "jsonl"  # the tree's JSON written as the lines want it, spliced in as it is
    try:
        batches = export_batches(source, options, tally, on_progress, json_lines=lines)
        written = dataset_write(batches, features_of(options), output, fmt, raw_json=lines)
    except ExportError as exc:
        raise ApplicationError(str(exc)) from exc
    return ExportSummary(
        forest_name=forest.name,
        kind=options.kind,
        format=fmt,
        output=str(output),
        records=written,
        skipped=dict(tally.skipped),
    )


DOWNLOAD_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "hf_disk": ".zip"}


def preferences_export_download(
    *, forest: Forest, fmt: str, options: ExportOptions, value_function_option: str = "labelled"
) -> tuple[Path, str, ExportSummary]:
    """Export into a fresh temporary folder for a download: ``(file, download name, summary)``.

    A ``hf_disk`` export is zipped (the folder ``save_to_disk`` wrote, at the top of the archive). The caller removes
    the file's folder (``file.parent``) once it is sent.
    """
    folder = Path(tempfile.mkdtemp(prefix="prmsite-export-"))
    try:
        name = f"{forest.name}-{options.kind}"
        target = folder / (name if fmt == "hf_disk" else name + DOWNLOAD_SUFFIX[fmt])
        summary = preferences_export(
            forest=forest, output=target, fmt=fmt, options=options, value_function_option=value_function_option
        )
        if fmt == "hf_disk":
            archive = shutil.make_archive(str(folder / name), "zip", root_dir=folder, base_dir=name)
            shutil.rmtree(target)
            target = Path(archive)
        return target, target.name, summary
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
