"""Files written whole or not at all: through a temporary file in the target's folder, renamed into place.

A reader (another process, a crash, ``ls``) sees the old file or the new one, never half of one; a failure leaves
the old file and no temporary behind. Every command output of prmsite (exports, summaries, adapter zips, rollout
files) is written through here."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The mode of a finished file: mkstemp makes it private, an output is an ordinary file.
OUTPUT_FILE_MODE = 0o644


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, make_parents: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without an exception,
    removed when it raises. ``make_parents`` creates the folder first (else a missing folder is a
    ``FileNotFoundError``)."""
    target = Path(path).expanduser()
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    handle, staged = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    try:
        yield Path(staged)
        os.chmod(staged, OUTPUT_FILE_MODE)
        os.replace(staged, target)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, *, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` whole or not at all; answer the path written."""
    with atomic_path(path, make_parents=make_parents) as staged:
        staged.write_bytes(data)
    return Path(path).expanduser()


def json_write_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON (a command's ``--output_json`` summary) whole or not at all."""
    with atomic_path(path) as staged, staged.open("w", encoding="utf-8") as sink:
        json.dump(data, sink, indent=2, sort_keys=True)
        sink.write("\n")
    return Path(path).expanduser()
