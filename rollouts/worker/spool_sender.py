"""Sending a spool's records to the server: :class:`SpoolSender` posts what is pending in batches while a worker runs,
backs off while the server is away, keeps refused records aside (``rejected.jsonl``) and drops skipped ones; the
outcome of each record is :class:`Sent`, :class:`Refused` or :class:`Skipped`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rollouts.worker.spool import Spool, SpoolRecord

logger = logging.getLogger("rollouts.worker")


@dataclass(frozen=True)
class Sent:
    """The server stored the record (``result`` is its answer, e.g. the id)."""

    result: Any = None


@dataclass(frozen=True)
class Refused:
    """The server refused the record for good (``error`` says why)."""

    error: Any


@dataclass(frozen=True)
class Skipped:
    """The server did not store the record and never will, and that is no error: another worker's result came first
    (an AI label of a rollout someone else labelled). Acknowledged like a sent record, not kept."""

    reason: Any = None


class ServerUnavailableError(Exception):
    """The whole batch could not be delivered now (server down, 5xx): try again later."""


SendBatch = Callable[[list[SpoolRecord]], Awaitable[list[Sent | Refused | Skipped]]]


class SpoolSender:
    """Sends a spool's pending records in batches while a worker runs, backing off while the server is unavailable.

    ``send_batch(records)`` answers one outcome per record (:class:`Sent`, :class:`Refused` or :class:`Skipped`), or
    raises :class:`ServerUnavailableError` (or any
    ``OSError``) when nothing could be delivered. Up to ``concurrency`` batches are in flight; a batch is whatever is
    pending when a slot frees up, so batches grow by themselves when the server is slow.
    """

    def __init__(
        self,
        spool: Spool,
        send_batch: SendBatch,
        *,
        batch_size: int = 256,
        max_bytes: int = 4 * 1024 * 1024,
        concurrency: int = 2,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_sent: Callable[[SpoolRecord, Sent], None] | None = None,
        on_refused: Callable[[SpoolRecord, Refused], None] | None = None,
        on_skipped: Callable[[SpoolRecord, Skipped], None] | None = None,
    ) -> None:
        self.spool = spool
        self.send_batch = send_batch
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_sent = on_sent
        self.on_refused = on_refused
        self.on_skipped = on_skipped
        self.sent = 0
        self.failures_in_a_row = 0
        self.last_error: str = ""
        self.fatal: BaseException | None = None
        self._wake = asyncio.Event()
        self._batches: set[asyncio.Task] = set()
        self._resume_at = 0.0
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def unavailable(self) -> bool:
        return self.failures_in_a_row > 0

    def notify(self) -> None:
        """New records are pending."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spool-sender")

    async def drain(self, timeout_s: float | None) -> bool:
        """Wait until every record is sent (``True``) or ``timeout_s`` passes (``False``); then stop sending."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._resume_at = min(self._resume_at, time.monotonic())  # try again right away
        self.notify()
        try:
            while self.spool.unsent:
                if self.fatal is not None or (self._task is not None and self._task.done()):
                    return False
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.05)
            return True
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for batch in list(self._batches):
            batch.cancel()
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            wait_s = self._resume_at - time.monotonic()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
                self._wake.clear()
                continue
            if self.spool.pending and len(self._batches) < self.concurrency:
                records = self.spool.take(limit=self.batch_size, max_bytes=self.max_bytes)
                task = asyncio.create_task(self._send(records))
                self._batches.add(task)
                task.add_done_callback(self._batch_done)
                continue
            self._wake.clear()
            await self._wake.wait()

    def _batch_done(self, task: asyncio.Task) -> None:
        # Only now is the slot free: wake the loop (a wake-up from inside the task would come too early).
        self._batches.discard(task)
        self._wake.set()

    async def _send(self, records: list[SpoolRecord]) -> None:
        try:
            outcomes = await self.send_batch(records)
            if len(outcomes) != len(records):
                raise ServerUnavailableError(f"{len(outcomes)} answers for {len(records)} records")
        except asyncio.CancelledError:
            self.spool.requeue(records)
            raise
        except (ServerUnavailableError, OSError) as exc:
            self.spool.requeue(records)
            self.failures_in_a_row += 1
            self.last_error = str(exc) or type(exc).__name__
            ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (self.failures_in_a_row - 1))
            self._resume_at = time.monotonic() + random.uniform(ceiling / 2, ceiling)
            logger.warning("sending %d result(s) failed (%s); retrying in %.1f s", len(records), exc, ceiling)
        except Exception as exc:
            # Not a passing outage (a bad token, say): keep the records and stop sending; the worker reports it.
            self.spool.requeue(records)
            self.fatal = exc
            self._stopping = True
        else:
            self.failures_in_a_row = 0
            acked = []
            for record, outcome in zip(records, outcomes, strict=True):
                if isinstance(outcome, Refused):
                    self.spool.reject(record, outcome.error)
                    if self.on_refused is not None:
                        self.on_refused(record, outcome)
                elif isinstance(outcome, Skipped):
                    acked.append(record.key)
                    if self.on_skipped is not None:
                        self.on_skipped(record, outcome)
                else:
                    acked.append(record.key)
                    self.sent += 1
                    if self.on_sent is not None:
                        self.on_sent(record, outcome)
            self.spool.ack(acked)
