"""Forest mode's job source: the server's growth scheduler.

Expansions are leased from it as slots free up, each split into requests of up to ``n`` answers; what is not finished
when the worker stops is released. The source ends when the server says the policy has nothing left to grow, after
the worker's own results are all stored (they may give the server new work), unless ``wait_for_work`` keeps it
polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rollouts.worker.generation_job import GenerationJob, request_sizes
from rollouts.worker.retry import is_fatal_client_error

logger = logging.getLogger("rollouts.worker")


class ForestSource:
    """Expansions leased from the server, as generation requests.

    ``claim(limit, max_rollouts)`` and ``release(ids, failed, error)`` are the HTTP calls (blocking; they run in a
    thread). ``results_pending()`` tells how many of this worker's results the server does not have yet.
    """

    def __init__(
        self,
        *,
        forest_name: str,
        claim: Callable[[int, int], dict[str, Any]],
        release: Callable[[list[int], bool, str], int],
        results_pending: Callable[[], int],
        concurrency: int,
        n: int,
        wait_for_work: bool = False,
        poll_initial_s: float = 0.5,
        poll_max_s: float = 15.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.forest_name = forest_name
        self._claim = claim
        self._release = release
        self._results_pending = results_pending
        self.concurrency = concurrency
        self.n = max(1, n)
        self.wait_for_work = wait_for_work
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.extra = extra or {}
        self._backlog: deque[GenerationJob] = deque()
        self._outstanding: dict[int, int] = {}  # expansion id -> requests handed out or queued, not finished
        self._changed = asyncio.Event()
        self.claims = 0
        self.expansions = 0
        self.server_done = False
        self.reason = ""
        self.server_errors = 0
        self.last_server_error = ""

    @property
    def outstanding(self) -> int:
        return sum(self._outstanding.values())

    def _enqueue(self, expansion: dict[str, Any]) -> None:
        sizes = request_sizes(int(expansion["count"]), self.n)
        expansion_id = int(expansion["id"])
        self._outstanding[expansion_id] = self._outstanding.get(expansion_id, 0) + len(sizes)
        extra = {
            **self.extra,
            "forest_name": self.forest_name,
            "root_id": int(expansion["root_id"]),
            "expansion_id": expansion_id,
        }
        for seq, size in enumerate(sizes):
            self._backlog.append(
                GenerationJob(
                    key=f"e{expansion_id}:{seq}:{time.monotonic_ns()}",
                    prompt=expansion["prompt"],
                    ground_truth=expansion["ground_truth"],
                    n=size,
                    prefix=tuple(expansion["prefix"]),
                    extra=extra,
                    expansion_id=expansion_id,
                )
            )
        self.expansions += 1

    async def next_job(self) -> GenerationJob | None:
        delay = self.poll_initial_s
        while True:
            if self._backlog:
                return self._backlog.popleft()
            self._changed.clear()  # before looking: a change from now on ends the wait below at once
            idle = self.outstanding == 0 and self._results_pending() == 0
            # Ask for about what the free slots can start now, with some to spare.
            want = max(1, self.concurrency - self.outstanding) + self.concurrency // 4
            try:
                answer = await asyncio.to_thread(self._claim, min(1000, want), want * self.n)
            except Exception as exc:  # the server is unreachable or failing: keep what is in flight, retry later
                if is_fatal_client_error(exc):
                    raise
                self.server_errors += 1
                self.last_server_error = str(exc)
                logger.warning("claiming expansions failed (%s); retrying", exc)
                answer = {"expansions": [], "done": False}
            self.claims += 1
            for expansion in answer.get("expansions", []):
                self._enqueue(expansion)
            if self._backlog:
                continue
            self.server_done = bool(answer.get("done"))
            self.reason = answer.get("reason") or ""
            logger.debug(
                "claim: nothing; done=%s idle=%s outstanding=%d pending=%d",
                self.server_done,
                idle,
                self.outstanding,
                self._results_pending(),
            )
            if self.server_done and idle and not self.wait_for_work:
                return None
            # Nothing to do now: wait for a change here (a request finished, results stored) or poll again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=delay * random.uniform(0.8, 1.2))
            delay = min(self.poll_max_s, delay * 2)

    def notify(self) -> None:
        """Something changed that may give the server new work (results were stored)."""
        self._changed.set()

    def job_done(self, job: GenerationJob, ok: bool) -> None:
        self._finish(job)
        self._changed.set()

    def job_failed(self, job: GenerationJob, error: str) -> None:
        """The model could not answer this request: give the expansion back as failed (it counts as an attempt)."""
        if job.expansion_id is not None:
            try:
                self._release([job.expansion_id], True, error)
            except Exception as exc:
                logger.warning("could not report expansion %s as failed: %s", job.expansion_id, exc)

    def _finish(self, job: GenerationJob) -> None:
        if job.expansion_id is None:
            return
        left = self._outstanding.get(job.expansion_id, 0) - 1
        if left <= 0:
            self._outstanding.pop(job.expansion_id, None)
        else:
            self._outstanding[job.expansion_id] = left

    async def release(self, jobs: list[GenerationJob]) -> None:
        """Give back the leases of unfinished requests and of everything still queued here."""
        for job in jobs:
            self._finish(job)
        ids = sorted({job.expansion_id for job in [*jobs, *self._backlog] if job.expansion_id is not None})
        self._backlog.clear()
        self._outstanding.clear()
        if not ids:
            return
        try:
            released = await asyncio.to_thread(self._release, ids, False, "")
            logger.info("released %d of %d leased expansion(s)", released, len(ids))
        except Exception as exc:
            logger.warning("could not release %d expansion(s) (%s); their leases expire by themselves", len(ids), exc)

    async def release_backlog(self) -> None:
        await self.release([])
