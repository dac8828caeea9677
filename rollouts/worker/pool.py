"""The in-flight loop: up to ``concurrency`` jobs at once in one asyncio loop, fed by a job source, stopped cleanly.

A job source hands out jobs one at a time (``next_job``: wait for one; ``None`` when there is no more work), hears
how each ended (``job_done``) and takes back the jobs that were handed out but not finished when the worker stops
(``release``: a lease to give back, a dataset unit to redo on the next run, …).

Stopping (:class:`Shutdown`): the first SIGINT or SIGTERM stops taking work; jobs in flight get ``grace_s`` seconds
to finish (their results are kept), then they are cancelled and released. A second signal cancels at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger("rollouts.worker")

J = TypeVar("J")


class JobSource(Protocol[J]):
    async def next_job(self) -> J | None:
        """The next job, waiting for one if needed; ``None`` when there is no more work."""

    def job_done(self, job: J, ok: bool) -> None:
        """``job`` ended: ``ok`` when its result is kept, ``False`` when it failed."""

    async def release(self, jobs: list[J]) -> None:
        """Take back jobs that were handed out but not finished (the worker is stopping)."""


class Shutdown:
    """SIGINT/SIGTERM handling for an asyncio worker: the first signal asks to stop, the second forces it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self.reason = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> Shutdown:
        self._loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def uninstall(self) -> None:
        if self._loop is not None:
            for sig in self.SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._loop.remove_signal_handler(sig)
            self._loop = None

    def request(self, reason: str) -> None:
        if not self.requested.is_set():
            self.reason = reason
            self.requested.set()
        else:
            self.forced.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self.requested.is_set():
            logger.warning("%s again: cancelling the work in flight", name)
        else:
            logger.warning("%s: finishing the work in flight, taking no more (again to stop at once)", name)
        self.request(f"stopped by {name}")


@dataclass
class PoolResult(Generic[J]):
    finished: int = 0
    failed: int = 0
    released: list[J] = field(default_factory=list)
    stopped: bool = False  # stopped by a signal or a fatal error, not because the work ran out
    fatal: BaseException | None = None


async def run_pool(
    source: JobSource[J],
    handle: Callable[[J], Awaitable[bool]],
    *,
    concurrency: int,
    shutdown: Shutdown,
    grace_s: float = 30.0,
    is_fatal: Callable[[BaseException], bool] = lambda exc: False,
    on_change: Callable[[int], None] | None = None,
) -> PoolResult[J]:
    """Run ``handle(job)`` for every job of ``source``, ``concurrency`` at a time, until the source has no more work
    or ``shutdown`` is requested.

    ``handle`` answers whether the job succeeded; an exception it lets out fails that job (logged), and one for
    which ``is_fatal`` holds stops the pool like a signal (reported in ``PoolResult.fatal``). ``on_change(in_flight)``
    is called whenever the number of running jobs changes.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    result: PoolResult[J] = PoolResult()
    slots = asyncio.Semaphore(concurrency)
    running: dict[asyncio.Task, J] = {}
    stop_wait = asyncio.create_task(shutdown.requested.wait())

    async def run_one(job: J) -> None:
        ok = False
        try:
            ok = bool(await handle(job))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_fatal(exc):
                result.fatal = result.fatal or exc
                shutdown.request(f"fatal: {exc}")
            else:
                logger.exception("a job failed: %r", job)
        finally:
            slots.release()
        if ok:
            result.finished += 1
        else:
            result.failed += 1
        source.job_done(job, ok)

    def forget(task: asyncio.Task) -> None:
        running.pop(task, None)
        if on_change is not None:
            on_change(len(running))

    try:
        while not shutdown.requested.is_set():
            acquire = asyncio.create_task(slots.acquire())
            await asyncio.wait({acquire, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                acquire.cancel()
                break
            fetch = asyncio.create_task(source.next_job())
            await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetch
                slots.release()
                break
            job = fetch.result()
            if job is None:
                slots.release()
                break
            if shutdown.requested.is_set():
                result.released.append(job)
                slots.release()
                break
            task = asyncio.create_task(run_one(job))
            running[task] = job
            task.add_done_callback(forget)
            if on_change is not None:
                on_change(len(running))
        if shutdown.requested.is_set():
            result.stopped = True
            if running:
                everything = asyncio.gather(*running, return_exceptions=True)
                force = asyncio.create_task(shutdown.forced.wait())
                await asyncio.wait({everything, force}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
                force.cancel()
                unfinished = {task: job for task, job in running.items() if not task.done()}
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
                result.released += [job for task, job in unfinished.items() if task.cancelled()]
        elif running:
            await asyncio.gather(*running, return_exceptions=True)
    finally:
        stop_wait.cancel()
        for task in list(running):
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    if result.released:
        await source.release(result.released)
    return result
