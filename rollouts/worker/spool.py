"""An on-disk spool: finished results wait here until the server has them, across server outages and restarts.

A worker puts every finished result (a rollout, a label, …) into the spool before anything else happens to it, and a
:class:`~rollouts.worker.spool_sender.SpoolSender` sends what is pending in batches, acknowledging what the server
stored. Nothing is lost while the server is unreachable, and nothing is lost when the worker is killed: the next run
on the same folder sends what is left. Results carry a unique ``key`` (the idempotency key the server deduplicates
on), so sending one again after a lost answer stores it once.

Files in the folder (one process at a time; a lock file enforces it):

- ``seg-<n>.jsonl``: records ``{"key", "payload", "meta"}``, one JSON line each, appended and flushed to the OS at
  every put (a killed process loses nothing); ``fsync`` at most every ``fsync_interval_s`` (a power cut loses at most
  that much) and when a segment is closed.
- ``seg-<n>.acked``: keys of that segment the server has; a segment whose records are all acknowledged is retired.
- ``history.jsonl``: the ``meta`` of retired records (what a restarted worker needs to know is done).
- ``rejected.jsonl``: records the server refused for good (kept for inspection, not sent again).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("rollouts.worker")

SEGMENT_PREFIX = "seg-"


class SpoolBusyError(RuntimeError):
    """Another process uses this spool folder."""


@dataclass(frozen=True)
class SpoolRecord:
    key: str
    payload: dict[str, Any]
    meta: Any = None

    def line(self) -> str:
        return json.dumps({"key": self.key, "payload": self.payload, "meta": self.meta}, ensure_ascii=False) + "\n"


@dataclass
class _Segment:
    number: int
    records: int = 0
    acked: int = 0
    metas: list[Any] | None = None  # kept to move to history on retirement


class Spool:
    """A durable FIFO of records with acknowledgements. Not thread-safe: use it from one asyncio loop."""

    def __init__(self, folder: str | Path, *, segment_records: int = 10_000, fsync_interval_s: float = 1.0) -> None:
        self.folder = Path(folder)
        self.segment_records = segment_records
        self.fsync_interval_s = fsync_interval_s
        self._pending: OrderedDict[str, SpoolRecord] = OrderedDict()
        self._in_flight: dict[str, SpoolRecord] = {}
        self._segment_of: dict[str, int] = {}
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._file: TextIO | None = None
        self._lock_file: TextIO | None = None
        self._last_sync = time.monotonic()
        self._history: list[Any] = []
        self.recovered = 0  # records found pending when the spool was opened
        self.rejected = 0

    # --- opening and closing ----------------------------------------------------------------------------------------

    def open(self) -> Spool:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.folder / "lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            self._lock_file = None
            raise SpoolBusyError(
                f"another worker is using the spool folder {self.folder}; give each worker its own --spool_dir"
            ) from exc
        history = self.folder / "history.jsonl"
        if history.exists():
            self._history = list(_read_lines(history, what="history"))
        numbers = sorted(int(p.stem[len(SEGMENT_PREFIX) :]) for p in self.folder.glob(f"{SEGMENT_PREFIX}*.jsonl"))
        for number in numbers:
            self._load_segment(number)
        for number in numbers:
            self._retire_if_done(number)
        self.recovered = len(self._pending)
        self._start_segment((numbers[-1] + 1) if numbers else 0)
        return self

    def _load_segment(self, number: int) -> None:
        segment = _Segment(number=number, metas=[])
        acked_path = self._acked_path(number)
        acked = set(_read_lines(acked_path, what="acks", raw=True)) if acked_path.exists() else set()
        for data in _read_lines(self._segment_path(number), what="records"):
            record = SpoolRecord(key=data["key"], payload=data["payload"], meta=data.get("meta"))
            segment.records += 1
            segment.metas.append(record.meta)
            self._segment_of[record.key] = number
            if record.key in acked:
                segment.acked += 1
            else:
                self._pending[record.key] = record
        self._segments[number] = segment

    def close(self) -> None:
        if self._file is not None:
            self._sync(force=True)
            self._file.close()
            self._file = None
            if self._current is not None and self._current.records == 0:
                self._segment_path(self._current.number).unlink(missing_ok=True)
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Spool:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing ----------------------------------------------------------------------------------------------------

    def put(self, record: SpoolRecord) -> None:
        """Keep ``record`` until it is acknowledged; on disk (flushed to the OS) when this returns."""
        if record.key in self._segment_of:
            raise ValueError(f"spool already holds a record with key {record.key!r}")
        assert self._file is not None and self._current is not None, "open the spool first"
        self._file.write(record.line())
        self._file.flush()
        self._current.records += 1
        assert self._current.metas is not None
        self._current.metas.append(record.meta)
        self._segment_of[record.key] = self._current.number
        self._pending[record.key] = record
        self._sync()
        if self._current.records >= self.segment_records:
            self._start_segment(self._current.number + 1)

    def take(self, *, limit: int, max_bytes: int | None = None) -> list[SpoolRecord]:
        """The oldest pending records (at most ``limit``, about ``max_bytes`` of JSON), now in flight."""
        taken: list[SpoolRecord] = []
        size = 0
        for key in list(self._pending):
            record = self._pending[key]
            if taken and max_bytes is not None:
                size += len(json.dumps(record.payload))
                if size > max_bytes:
                    break
            taken.append(record)
            del self._pending[key]
            self._in_flight[key] = record
            if len(taken) >= limit:
                break
        return taken

    def ack(self, keys: Sequence[str]) -> None:
        """The server has these records: they will not be sent again."""
        touched: dict[int, list[str]] = {}
        for key in keys:
            if self._in_flight.pop(key, None) is None and self._pending.pop(key, None) is None:
                continue
            touched.setdefault(self._segment_of[key], []).append(key)
        for number, segment_keys in touched.items():
            with self._acked_path(number).open("a", encoding="utf-8") as acked:
                acked.write("".join(f"{json.dumps(k)}\n" for k in segment_keys))
            self._segments[number].acked += len(segment_keys)
            self._retire_if_done(number)

    def requeue(self, records: Sequence[SpoolRecord]) -> None:
        """Sending failed: these records are pending again (in their original order, ahead of newer ones)."""
        for record in reversed(records):
            if self._in_flight.pop(record.key, None) is not None:
                self._pending[record.key] = record
                self._pending.move_to_end(record.key, last=False)

    def reject(self, record: SpoolRecord, error: Any) -> None:
        """The server refused this record for good: keep it in ``rejected.jsonl`` and never send it again."""
        with (self.folder / "rejected.jsonl").open("a", encoding="utf-8") as rejected:
            rejected.write(json.dumps({"key": record.key, "payload": record.payload, "error": error}) + "\n")
        self.rejected += 1
        self.ack([record.key])

    # --- reading ----------------------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def unsent(self) -> int:
        return len(self._pending) + len(self._in_flight)

    def unsent_records(self) -> list[SpoolRecord]:
        """The records the server does not have yet (pending or being sent), oldest first."""
        return [*self._in_flight.values(), *self._pending.values()]

    def metas(self) -> Iterator[Any]:
        """The ``meta`` of every record this folder ever held (sent or not): what a restarted worker has done."""
        yield from self._history
        for segment in self._segments.values():
            yield from segment.metas or []

    # --- internals --------------------------------------------------------------------------------------------------

    def _segment_path(self, number: int) -> Path:
        return self.folder / f"{SEGMENT_PREFIX}{number:08d}.jsonl"

    def _acked_path(self, number: int) -> Path:
        return self.folder / f"{SEGMENT_PREFIX}{number:08d}.acked"

    def _start_segment(self, number: int) -> None:
        if self._file is not None:
            self._sync(force=True)
            self._file.close()
            previous = self._current
            self._current = None
            if previous is not None:
                self._retire_if_done(previous.number)
        segment = _Segment(number=number, metas=[])
        self._segments[number] = segment
        self._current = segment
        self._file = self._segment_path(number).open("a", encoding="utf-8")

    def _retire_if_done(self, number: int) -> None:
        """Delete a closed segment whose records are all acknowledged, keeping their metas in the history."""
        segment = self._segments.get(number)
        if segment is None or segment is self._current or segment.acked < segment.records:
            return
        metas = [m for m in segment.metas or [] if m is not None]
        if metas:
            history = self.folder / "history.jsonl"
            with history.open("a", encoding="utf-8") as out:
                out.write("".join(json.dumps(m) + "\n" for m in metas))
                out.flush()
                os.fsync(out.fileno())
            self._history.extend(metas)
        self._segment_path(number).unlink(missing_ok=True)
        self._acked_path(number).unlink(missing_ok=True)
        del self._segments[number]

    def _sync(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._file is not None and (force or now - self._last_sync >= self.fsync_interval_s):
            os.fsync(self._file.fileno())
            self._last_sync = now


def _read_lines(path: Path, *, what: str, raw: bool = False) -> Iterator[Any]:
    """JSON lines of ``path``; a torn last line (a process killed mid-write) is skipped."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.endswith("\n"):
                logger.warning("%s: ignoring a torn last line (%d) of %s", path, number, what)
                return
            try:
                yield json.loads(line)
            except ValueError:
                logger.warning("%s: ignoring unreadable line %d of %s", path, number, what)
