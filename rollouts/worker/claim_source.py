"""The labellers' job source: rollouts claimed (leased) from ``GET /rollout`` for one ``prm_version``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollouts.worker.retry import is_fatal_client_error

logger = logging.getLogger("rollouts.worker")


@dataclass(frozen=True)
class RolloutJob:
    """One claimed rollout to label (as ``GET /rollout`` handed it out)."""

    rollout: dict[str, Any]

    @property
    def id(self) -> int:
        return int(self.rollout["id"])


CLAIM_LIMIT_MAX = 1000  # the server's largest GET /rollout limit


class ClaimSource:
    """Rollouts leased from ``GET /rollout`` for one ``prm_version``, as jobs (the AI labeller's source).

    ``claim(limit, wait_s)`` and ``release(ids)`` are the HTTP calls (blocking; they run in a thread). A claim asks for
    the free slots and a quarter of ``concurrency`` more, so no lease is taken long before its rollout is worked on;
    it long-polls ``wait_s`` seconds when the queue is empty and nothing is in flight. ``already_done(id)`` names
    rollouts whose result this worker holds already (in its spool, not yet stored: their lease ends when it arrives),
    which are not labelled again.

    A rollout the worker could not label is given back (:meth:`give_up`) and not taken again by this source: a claim
    that hands out only such rollouts is as good as empty. The source ends (``next_job`` answers ``None``) when
    ``max_jobs`` jobs succeeded or, with ``exit_when_idle``, when a claim comes back empty with nothing in flight.
    A claim in progress when the worker stops is waited for in :meth:`close` and what it brought is released.
    """

    def __init__(
        self,
        *,
        claim: Callable[[int, float], list[dict[str, Any]]],
        release: Callable[[list[int]], int],
        concurrency: int,
        wait_s: float = 10.0,
        exit_when_idle: bool = False,
        max_jobs: int | None = None,
        already_done: Callable[[int], bool] = lambda rollout_id: False,
        poll_initial_s: float = 0.5,
        poll_max_s: float = 15.0,
    ) -> None:
        self._claim = claim
        self._release = release
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.exit_when_idle = exit_when_idle
        self.max_jobs = max_jobs
        self.already_done = already_done
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self._backlog: deque[RolloutJob] = deque()
        self._handed: set[int] = set()
        self._claim_task: asyncio.Future | None = None
        self._changed = asyncio.Event()
        self.given_up: set[int] = set()
        self.claims = 0
        self.claimed = 0
        self.succeeded = 0
        self.released = 0
        self.server_errors = 0

    @property
    def in_flight(self) -> int:
        return len(self._handed)

    def _room(self) -> int:
        """How many more rollouts to claim now: the free slots and a quarter of ``concurrency`` to spare (slots free
        up one by one; a claim per slot would cost a round trip each), within what ``max_jobs`` leaves."""
        room = self.concurrency - self.in_flight - len(self._backlog) + self.concurrency // 4
        if self.max_jobs is not None:
            room = min(room, self.max_jobs - self.succeeded - self.in_flight - len(self._backlog))
        return room

    async def next_job(self) -> RolloutJob | None:
        delay = self.poll_initial_s
        while True:
            if self.max_jobs is not None and self.succeeded >= self.max_jobs:
                return None
            if self._backlog:
                job = self._backlog.popleft()
                self._handed.add(job.id)
                return job
            self._changed.clear()
            room = self._room()
            if room <= 0:  # max_jobs is taken by the work in flight: see how it ends
                await self._changed.wait()
                continue
            idle = self.in_flight == 0
            # Long-poll only when nothing is in flight: a job ending must be able to free a slot at once.
            wait_s = self.wait_s if idle else 0.0
            failed = False
            try:
                # Rollouts given up on may head the queue (active learning puts hard ones first): ask past them.
                rollouts = await self._claim_in_thread(min(CLAIM_LIMIT_MAX, room + len(self.given_up)), wait_s)
            except Exception as exc:
                if is_fatal_client_error(exc):
                    raise
                self.server_errors += 1
                logger.warning("claiming rollouts failed (%s); retrying", exc)
                rollouts, failed = [], True
            fresh = self._take(rollouts)
            if fresh:
                delay = self.poll_initial_s
                continue
            if idle and not failed and self.exit_when_idle:
                return None
            if not (idle and wait_s > 0 and not rollouts and not failed):
                # No long-poll paced this round: wait for a job to end, or claim again a little later.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=delay * random.uniform(0.8, 1.2))
                delay = min(self.poll_max_s, delay * 2)

    async def _claim_in_thread(self, limit: int, wait_s: float) -> list[dict[str, Any]]:
        # Shielded: a claim cancelled by a stopping worker goes on in its thread, and close() releases what it got.
        self._claim_task = asyncio.ensure_future(asyncio.to_thread(self._claim, limit, wait_s))
        result = await asyncio.shield(self._claim_task)
        self._claim_task = None
        return result

    def _take(self, rollouts: list[dict[str, Any]]) -> list[RolloutJob]:
        """Queue the claimed rollouts that are work; give back at once those this worker gave up on."""
        self.claims += 1
        fresh, refused = [], []
        for rollout in rollouts:
            job = RolloutJob(rollout)
            if job.id in self.given_up:
                refused.append(job.id)
            elif self.already_done(job.id):
                logger.info("rollout %d: its label is in the spool already; it is sent from there", job.id)
            else:
                fresh.append(job)
        self.claimed += len(fresh)
        self._backlog.extend(fresh)
        if refused:
            self._release_now(refused)
        return fresh

    def _release_now(self, ids: list[int]) -> None:
        try:
            self.released += int(self._release(ids))
        except Exception as exc:
            logger.warning("could not release %d rollout(s) (%s); their leases expire by themselves", len(ids), exc)

    def job_done(self, job: RolloutJob, ok: bool) -> None:
        self._handed.discard(job.id)
        if ok:
            self.succeeded += 1
        self._changed.set()

    async def give_up(self, job: RolloutJob) -> None:
        """This worker cannot label ``job``'s rollout: give its lease back, and never take it again in this run."""
        self.given_up.add(job.id)
        await asyncio.to_thread(self._release_now, [job.id])

    async def release(self, jobs: list[RolloutJob]) -> None:
        """Give back the leases of unfinished jobs and of everything queued here (the worker is stopping)."""
        for job in jobs:
            self._handed.discard(job.id)
        ids = sorted({job.id for job in [*jobs, *self._backlog]})
        self._backlog.clear()
        if ids:
            await asyncio.to_thread(self._release_now, ids)

    async def close(self) -> None:
        """Release what is queued here and what a claim still in progress brings back."""
        if self._claim_task is not None:
            try:
                rollouts = await self._claim_task
            except Exception:
                rollouts = []
            self._claim_task = None
            self._backlog.extend(RolloutJob(r) for r in rollouts if not self.already_done(int(r["id"])))
        await self.release([])
