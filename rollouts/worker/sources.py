"""Where a rollout worker's generation requests come from.

- :class:`DatasetSource` (dataset mode): every item of a dataset split x ``num_repeats``, in requests of up to ``n``
  answers. A unit (item, request) whose rollouts are in the spool (sent or not) is done: a restarted worker skips it.
  With several OS processes, process ``i`` of ``P`` takes the items whose index is ``i`` modulo ``P``.
- :class:`ForestSource` (forest mode): the server's growth scheduler. Expansions are leased from it as slots free up,
  each split into requests of up to ``n`` answers; what is not finished when the worker stops is released. The
  source ends when the server says the policy has nothing left to grow, after the worker's own results are all
  stored (they may give the server new work), unless ``wait_for_work`` keeps it polling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("rollouts.worker")


@dataclass(frozen=True)
class GenerationJob:
    """One generation request: ``n`` answers to ``prompt``, each continuing ``prefix`` (steps)."""

    key: str  # identity of the request, e.g. "17:0" (item 17, first request) or "e42:1"
    prompt: str
    ground_truth: int
    n: int
    prefix: tuple[str, ...] = ()
    meta: Any = None  # kept in the spool with each result: what a restarted worker has done
    extra: dict[str, Any] = field(default_factory=dict)  # fields added to every rollout of the request
    expansion_id: int | None = None
    first_index: int = 0  # index of the first answer among the unit's repeats


# --- dataset mode ----------------------------------------------------------------------------------------------------


def request_sizes(total: int, n: int) -> list[int]:
    """``total`` answers in requests of at most ``n``."""
    n = max(1, n)
    return [min(n, total - start) for start in range(0, total, n)]


@dataclass(frozen=True)
class DatasetItem:
    index: int
    prompt: str
    ground_truth: int


class DatasetSource:
    """Items x repeats of one split, skipping the units a previous run on the same spool finished."""

    def __init__(
        self,
        items: Iterable[DatasetItem | Exception],
        *,
        num_repeats: int,
        n: int,
        done: set[tuple[int, int]],
        fields_of: Callable[[DatasetItem], dict[str, Any]] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.num_repeats = num_repeats
        self.n = max(1, n)
        self.done = done
        self.fields_of = fields_of
        self.shard = shard
        self.skipped_units = 0
        self.bad_items: list[str] = []
        self._jobs = self._generate(items)

    def _generate(self, items: Iterable[DatasetItem | Exception]) -> Iterator[GenerationJob]:
        index, count = self.shard
        sizes = request_sizes(self.num_repeats, self.n)
        for position, item in enumerate(items):
            if position % count != index:
                continue
            if isinstance(item, Exception):
                self.bad_items.append(f"item #{position}: {item}")
                logger.error("item #%d cannot be used: %s", position, item)
                continue
            extra = self.fields_of(item) if self.fields_of else {}
            first = 0
            for chunk, size in enumerate(sizes):
                if (item.index, chunk) in self.done:
                    self.skipped_units += 1
                else:
                    yield GenerationJob(
                        key=f"{item.index}:{chunk}",
                        prompt=item.prompt,
                        ground_truth=item.ground_truth,
                        n=size,
                        meta=[item.index, chunk],
                        extra=extra,
                        first_index=first,
                    )
                first += size

    async def next_job(self) -> GenerationJob | None:
        return next(self._jobs, None)

    def job_done(self, job: GenerationJob, ok: bool) -> None:
        pass

    async def release(self, jobs: list[GenerationJob]) -> None:
        # Nothing to give back: a unit without results in the spool is generated again by the next run.
        logger.info("%d request(s) unfinished; the next run with the same flags does them", len(jobs))


def done_units(metas: Iterable[Any]) -> set[tuple[int, int]]:
    """The (item, request) units recorded in a spool's metas."""
    units = set()
    for meta in metas:
        if isinstance(meta, list) and len(meta) == 2 and all(isinstance(x, int) for x in meta):
            units.add((meta[0], meta[1]))
    return units


# --- forest mode -----------------------------------------------------------------------------------------------------


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
                if _is_fatal_client_error(exc):
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
            with _suppress_timeout():
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


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, TimeoutError)


def _is_fatal_client_error(exc: BaseException) -> bool:
    """A refusal that retrying will not change (bad token, unknown forest, no plan): stop the worker."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)


def total_requests(items: int | None, num_repeats: int, n: int) -> int | None:
    return None if items is None else items * math.ceil(num_repeats / max(1, n))


# --- labelling: rollouts claimed from GET /rollout -------------------------------------------------------------------


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
                if _is_fatal_client_error(exc):
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
                with _suppress_timeout():
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
