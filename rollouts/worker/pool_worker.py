"""The life of an asyncio worker, shared by the rollout worker and the AI step labeller, and the options they share.

:class:`PoolWorkerOptions` holds what every pool worker is configured with (the servers, the model, the pool, the
spool and how it reports); ``WorkerOptions`` (the rollout worker) and ``LabellerOptions`` (the AI labeller) extend it.
:class:`PoolWorker` opens the spool, makes the clients, sets up the job source, starts the spool's sender and the
progress ticker, runs the pool until the work runs out, a signal arrives or a fatal error happens, gives back what it
will not finish, tries to store what is in the spool, and closes everything — whatever goes wrong. The clients (the
server's, the sender's and the LLM's) are made here from the options (``_make_clients``). A subclass says what is
specific: its job source (``_setup``), a job (``_handle``), how results reach the server (``send_batch``,
``_on_sent``, ``_on_refused``, ``_on_skipped``) and what its summary adds (``_summary_extra``).
``await worker.run()`` answers the summary dict (``status``: completed, stopped or failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import openai

from prmsite.core.client import PrmsiteAPIError, PrmsiteClient
from rollouts.worker.llm import API_CHAT, LLMClient, SamplingParams, load_tokenizer
from rollouts.worker.pool import JobSource, PoolResult, Shutdown, run_pool
from rollouts.worker.progress import Counters, Progress
from rollouts.worker.retry import FatalGenerationError
from rollouts.worker.spool import Spool, SpoolBusyError, SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent, Skipped, SpoolSender

logger = logging.getLogger("rollouts.worker")

J = TypeVar("J")

STATUS_COMPLETED = "completed"
STATUS_STOPPED = "stopped"
STATUS_FAILED = "failed"
EXIT_OK = 0
EXIT_FAILED = 1  # the exit status of a run whose summary says failed


def exit_status(summary: dict[str, Any]) -> int:
    """The exit status of a run from its summary."""
    return EXIT_FAILED if summary["status"] == STATUS_FAILED else EXIT_OK


class WorkerError(Exception):
    """The worker cannot run as configured (one clear line for the user)."""


@dataclass(frozen=True, kw_only=True)
class PoolWorkerOptions:
    """What every pool worker is configured with; a worker's options extend it (and may change its defaults)."""

    openai_base_url: str
    openai_api_key: str
    webserver_url: str
    webserver_token: str
    model: str = ""  # empty: the only model the OpenAI-compatible server lists
    worker_name: str = ""
    # the model's requests
    api: str = API_CHAT
    tokenizer: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    concurrency: int = 128
    request_timeout_s: float = 600.0
    max_attempts: int = 8
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # the spool, stopping, reporting
    spool_dir: str | None = None
    shutdown_grace_s: float = 20.0
    drain_timeout_s: float = 600.0
    batch_size: int = 256
    send_backoff_max_s: float = 30.0
    log_json: bool = False
    show_bar: bool = True


def spool_root(spool_dir: str | None, tool: str = "rollout_worker") -> Path:
    """Where a worker's spool folders live: ``spool_dir``, else ``~/.cache/prmsite/<tool>`` (``XDG_CACHE_HOME``)."""
    if spool_dir:
        return Path(spool_dir).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "prmsite" / tool


def api_error_line(exc: PrmsiteAPIError) -> str:
    detail = exc.body.get("detail") if isinstance(exc.body, dict) else exc.body
    return f"the server refused ({exc.status_code}): {detail}"


def error_line(exc: BaseException) -> str:
    if isinstance(exc, PrmsiteAPIError):
        return api_error_line(exc)
    return str(exc) or type(exc).__name__


class PoolWorker(Generic[J]):
    """One process's worker; see the module docstring."""

    def __init__(
        self,
        options: PoolWorkerOptions,
        *,
        progress: Progress | None = None,
        report: Callable[[Counters], None] | None = None,
    ) -> None:
        self.options = options
        self.progress = progress or self._make_progress()
        self.report = report
        self.counters = self.progress.counters
        self.shutdown = Shutdown()
        self.spool: Spool | None = None
        self.sender: SpoolSender | None = None
        self.llm: LLMClient | None = None
        self.source: JobSource[J] | None = None
        self._api: PrmsiteClient | None = None
        self.sender_api: PrmsiteClient | None = None

    # --- what a subclass says ---------------------------------------------------------------------------------------

    def _make_progress(self) -> Progress:
        return Progress(log_json=self.options.log_json, show_bar=self.options.show_bar)

    def _spool_folder(self) -> Path:
        raise NotImplementedError

    def _make_clients(self) -> None:
        """Set ``self.llm``, ``self._api`` and ``self.sender_api`` from the options (``WorkerError`` when they cannot
        be made)."""
        o = self.options
        self._api = PrmsiteClient(o.webserver_url, o.webserver_token, read_timeout=60, max_attempts=4)
        # The sender backs off by itself: its client tries once, so that stopping never waits on a retry loop.
        self.sender_api = PrmsiteClient(o.webserver_url, o.webserver_token, read_timeout=30, max_attempts=1)
        tokenizer = None
        if o.tokenizer:
            try:
                tokenizer = load_tokenizer(o.tokenizer)
            except Exception as exc:
                raise WorkerError(f"cannot load the tokenizer {o.tokenizer!r}: {exc}") from exc
        try:
            self.llm = LLMClient(
                base_url=o.openai_base_url,
                api_key=o.openai_api_key,
                model=o.model or "",
                api=o.api,
                tokenizer=tokenizer,
                max_connections=o.concurrency,
                request_timeout_s=o.request_timeout_s,
                max_attempts=o.max_attempts,
                backoff_initial_s=o.backoff_initial_s,
                backoff_max_s=o.backoff_max_s,
            )
        except ValueError as exc:
            raise WorkerError(str(exc)) from exc

    async def _setup(self) -> JobSource[J]:
        raise NotImplementedError

    async def _handle(self, job: J) -> bool:
        raise NotImplementedError

    async def send_batch(self, records: list[SpoolRecord]) -> list[Sent | Refused | Skipped]:
        """Post ``records`` to the server with ``sender_api``: one outcome per record, or ``ServerUnavailableError``
        when none could be delivered now. The spool's sender calls it."""
        raise NotImplementedError

    def _on_sent(self, record: SpoolRecord, outcome: Sent) -> None:
        self.counters.sent += 1

    def _on_refused(self, record: SpoolRecord, outcome: Refused) -> None:
        self.counters.refused += 1
        folder = self.spool.folder if self.spool else "the spool"
        logger.error("the server refused a result (kept in %s/rejected.jsonl): %s", folder, outcome.error)

    def _on_skipped(self, record: SpoolRecord, outcome: Skipped) -> None:
        pass

    def _is_fatal(self, exc: BaseException) -> bool:
        return isinstance(exc, FatalGenerationError | PrmsiteAPIError | WorkerError)

    async def _after_pool(self) -> None:
        """The pool has stopped: give back what the source still holds (leases of work not started)."""

    def _start_fields(self) -> dict[str, Any]:
        return {}

    def _summary_extra(self) -> dict[str, Any]:
        return {}

    # --- shared -----------------------------------------------------------------------------------------------------

    async def _resolve_model(self) -> str:
        """The model named in the options, else the only one the OpenAI-compatible server lists."""
        assert self.llm is not None
        if self.llm.model:
            return self.llm.model
        try:
            models = await self.llm.list_models()
        except openai.OpenAIError as exc:
            raise WorkerError(f"no --model_name, and listing the server's models failed: {exc}") from exc
        if len(models) != 1:
            raise WorkerError(f"no --model_name, and the server lists {len(models)} models ({', '.join(models)})")
        self.llm.model = models[0]
        return models[0]

    async def _tick(self) -> None:
        while True:
            self.counters.unsent = self.spool.unsent if self.spool else 0
            self.progress.refresh()
            if self.report is not None:
                self.report(self.counters)
            await asyncio.sleep(0.5)

    def _in_flight(self, running: int) -> None:
        self.counters.in_flight = running

    async def run(self) -> dict[str, Any]:
        o = self.options
        status, error = STATUS_COMPLETED, ""
        result: PoolResult | None = None
        ticker: asyncio.Task | None = None
        folder = self._spool_folder()
        self.shutdown.install()
        try:
            try:
                self.spool = Spool(folder).open()
            except SpoolBusyError as exc:
                raise WorkerError(str(exc)) from exc
            if self.spool.recovered:
                logger.info("%d finished result(s) of an earlier run are in the spool", self.spool.recovered)
            self._make_clients()
            await self._resolve_model()
            self.source = await self._setup()
            self.sender = SpoolSender(
                self.spool,
                self.send_batch,
                batch_size=o.batch_size,
                backoff_max_s=o.send_backoff_max_s,
                on_sent=self._on_sent,
                on_refused=self._on_refused,
                on_skipped=self._on_skipped,
            )
            self.sender.start()
            ticker = asyncio.create_task(self._tick())
            self.progress.emit("start", spool=str(folder), **self._start_fields())
            self.progress.started = time.monotonic()  # rates count from here, not from the set-up
            result = await run_pool(
                self.source,
                self._handle,
                concurrency=o.concurrency,
                shutdown=self.shutdown,
                grace_s=o.shutdown_grace_s,
                is_fatal=self._is_fatal,
                on_change=self._in_flight,
            )
            if result.fatal is not None:
                status, error = STATUS_FAILED, error_line(result.fatal)
            elif result.stopped:
                status = STATUS_STOPPED
            await self._after_pool()
            drain_s = o.drain_timeout_s if status == STATUS_COMPLETED else min(o.drain_timeout_s, 10.0)
            drained = await self._drain(drain_s)
            if self.sender.fatal is not None:
                status, error = STATUS_FAILED, error_line(self.sender.fatal)
            elif not drained:
                if self.shutdown.requested.is_set() and status == STATUS_COMPLETED:
                    status = STATUS_STOPPED
                logger.warning(
                    "%d result(s) are not stored yet; they stay in %s and the next run with the same flags sends them",
                    self.spool.unsent,
                    folder,
                )
        except WorkerError as exc:
            status, error = STATUS_FAILED, str(exc)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if self.sender is not None:
                await self.sender.stop()
            self.counters.unsent = self.spool.unsent if self.spool else 0
            if self.spool is not None:
                self.spool.close()
            if self.llm is not None:
                await self.llm.aclose()
            for client in (self._api, self.sender_api):
                if client is not None:
                    client.close()
            self.shutdown.uninstall()
        extra: dict[str, Any] = {"spool": str(folder), **self._summary_extra()}
        if error:
            extra["error"] = error
        if self.report is not None:
            self.report(self.counters)
        return self.progress.finish(status=status, **extra)

    async def _drain(self, timeout_s: float) -> bool:
        assert self.sender is not None
        drain = asyncio.create_task(self.sender.drain(timeout_s))
        # Stop draining on the next signal (the first one, if the work ran out by itself).
        signal_event = self.shutdown.forced if self.shutdown.requested.is_set() else self.shutdown.requested
        stop = asyncio.create_task(signal_event.wait())
        await asyncio.wait({drain, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not drain.done():
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            return False
        return drain.result()
