"""The generic writer of column batches (any ``datasets.Features``): JSON lines, parquet or a ``save_to_disk``
folder, through a temporary path renamed into place, so an interrupted export leaves nothing behind and the file
always loads back with ``load_dataset`` / ``load_from_disk``. Pure: no Django, and no import of the export kinds:
other apps write their datasets with it (the labelling's consensus export).

pyarrow and datasets are imported where they are used: they are heavy, and the server imports this module at start
(the labelling pages and the admin name its formats) without writing anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from prmsite.core import files

FORMATS = ("jsonl", "parquet", "hf_disk")
LINES_PER_WRITE = 8192  # JSON lines are assembled this many records at a time (Arrow's 32-bit string offsets)

FORMAT_UNKNOWN = "format must be one of {formats}, not {fmt!r}"
NOTHING_TO_EXPORT = "nothing to export: no record matches (nothing was written)"
FOLDER_MISSING = "folder {folder} does not exist"
NOT_A_SAVED_DATASET = "{target} is a folder that is not a dataset saved by save_to_disk: choose another output"
NOT_A_FILE = "{target} exists and is not a file"

Batch = dict[str, Any]  # column name -> pyarrow array or list of values, all of one length


class ExportError(ValueError):
    """The export cannot be written; nothing was."""


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (``prmsite.core.files``); the folder must exist."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(FOLDER_MISSING.format(folder=target.parent))
    files.write_atomic(target, data, make_parents=False)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_info.json").is_file() and (path / "state.json").is_file()


def _record_batch(batch: Batch, schema) -> Any:
    import pyarrow as pa  # noqa: PLC0415 (deferred: pyarrow is heavy (see the module docstring))

    def column(values: Any, arrow_type) -> Any:
        if isinstance(values, pa.Array):
            return values if values.type == arrow_type else values.cast(arrow_type)
        return pa.array(values, type=arrow_type)

    return pa.RecordBatch.from_arrays([column(batch[field.name], field.type) for field in schema], schema=schema)


def _lines_write(batches: Iterable[Batch], schema, path: Path, raw: Collection[str]) -> int:
    """Write the records as JSON lines (``json_text.json_lines``) to ``path``; return how many."""
    from prmsite.core.json_text import json_lines, text_bytes  # noqa: PLC0415 (deferred: json_text loads pyarrow, heavy)

    written = 0
    with open(path, "wb") as out:
        for batch in batches:
            record_batch = _record_batch(batch, schema)
            for start in range(0, record_batch.num_rows, LINES_PER_WRITE):
                out.write(text_bytes(json_lines(record_batch.slice(start, LINES_PER_WRITE), raw)))
            written += record_batch.num_rows
    return written


def dataset_write(
    batches: Iterable[Batch], features, output: str | os.PathLike, fmt: str, *, raw_json: bool = False
) -> int:
    """Write column ``batches`` (following ``features``) to ``output`` as ``fmt``; return how many records.

    Everything is written in a temporary folder beside ``output`` and renamed onto it. JSON lines are assembled from
    the columns by ``json_text.json_lines``: the bytes ``datasets``' ``to_json(lines=True, force_ascii=False)``
    writes, without its trip through pandas. With ``raw_json``, ``Json`` columns hold the text the lines get
    (``json_text.LINES`` style, see ``registry.export_batches``); without it, a ``Json`` column (or a column type
    ``json_lines`` does not know) sends the records through ``datasets``' ``to_json``. Parquet and ``save_to_disk``
    are written by ``datasets`` from an Arrow file of the records. A folder that is not a dataset saved by
    ``save_to_disk`` is never replaced. Raises ``ExportError`` (and writes nothing) when there are no records, since
    an empty file does not load back.
    """
    # deferred: pyarrow, datasets and json_text (which loads pyarrow) are heavy (see the module docstring)
    import pyarrow as pa  # noqa: PLC0415 (deferred: pyarrow is heavy)
    from datasets import Dataset, Json  # noqa: PLC0415 (deferred: datasets is heavy)
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled  # noqa: PLC0415 (deferred: datasets is heavy)

    from prmsite.core.json_text import json_lines_supported  # noqa: PLC0415 (deferred: it loads pyarrow, heavy)

    if fmt not in FORMATS:
        raise ExportError(FORMAT_UNKNOWN.format(formats=", ".join(FORMATS), fmt=fmt))
    target = Path(output)
    if target.is_dir() and not (fmt == "hf_disk" and _is_saved_dataset(target)):
        raise ExportError(NOT_A_SAVED_DATASET.format(target=target))
    if fmt != "hf_disk" and target.exists() and not target.is_file():
        raise ExportError(NOT_A_FILE.format(target=target))
    if not target.parent.is_dir():
        raise ExportError(FOLDER_MISSING.format(folder=target.parent))

    schema = features.arrow_schema
    json_columns = {name for name, feature in features.items() if isinstance(feature, Json)}
    lines_direct = fmt == "jsonl" and (raw_json or not json_columns) and json_lines_supported(schema, json_columns)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    bars_were_on = is_progress_bar_enabled()
    disable_progress_bar()  # the caller shows its own progress
    try:
        if lines_direct:
            staged = work / "out.jsonl"
            written = _lines_write(batches, schema, staged, json_columns)
            if written == 0:
                raise ExportError(NOTHING_TO_EXPORT)
            os.replace(staged, target)
            return written
        arrow_path = work / "records.arrow"
        written = 0
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                record_batch = _record_batch(batch, schema)
                writer.write_batch(record_batch)
                written += record_batch.num_rows
        if written == 0:
            raise ExportError(NOTHING_TO_EXPORT)
        dataset = Dataset.from_file(str(arrow_path))
        if fmt == "jsonl":
            staged = work / "out.jsonl"
            # datasets decodes JSON columns to objects to write them: a few whole trees at a time, not thousands.
            rows_per_write = 64 if json_columns else None
            dataset.to_json(str(staged), lines=True, force_ascii=False, batch_size=rows_per_write)
            os.replace(staged, target)
        elif fmt == "parquet":
            staged = work / "out.parquet"
            dataset.to_parquet(str(staged))
            os.replace(staged, target)
        else:
            staged = work / "out"
            dataset.save_to_disk(str(staged))
            del dataset
            if target.exists():
                old = work / "replaced"
                os.replace(target, old)  # the old dataset goes into the work folder, removed below
            os.replace(staged, target)
        return written
    finally:
        if bars_were_on:
            enable_progress_bar()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
