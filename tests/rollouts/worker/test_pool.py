"""The in-flight loop: concurrency, the end of the work, and stopping cleanly."""

from __future__ import annotations

import asyncio
import os
import signal

from rollouts.worker.pool import Shutdown, run_pool


class ListSource:
    def __init__(self, jobs):
        self.jobs = list(jobs)
        self.done: list[tuple[int, bool]] = []
        self.released: list[int] = []

    async def next_job(self):
        return self.jobs.pop(0) if self.jobs else None

    def job_done(self, job, ok):
        self.done.append((job, ok))

    async def release(self, jobs):
        self.released += jobs


def test_no_more_than_concurrency_jobs_run_at_once_and_every_job_runs():
    source = ListSource(range(50))
    running = {"now": 0, "most": 0}

    async def handle(job):
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.001)
        running["now"] -= 1
        return job % 10 != 0  # every tenth job fails

    async def main():
        return await run_pool(source, handle, concurrency=7, shutdown=Shutdown())

    result = asyncio.run(main())
    assert running["most"] == 7
    assert result.finished == 45 and result.failed == 5 and not result.stopped
    assert sorted(job for job, _ in source.done) == list(range(50))


def test_sigterm_stops_taking_work_lets_work_in_flight_finish_and_exits():
    source = ListSource(range(100))
    finished = []

    async def handle(job):
        if job == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.2)
        finished.append(job)
        return True

    async def main():
        shutdown = Shutdown().install()
        try:
            return await run_pool(source, handle, concurrency=4, shutdown=shutdown, grace_s=5)
        finally:
            shutdown.uninstall()

    result = asyncio.run(main())
    assert result.stopped and result.finished == len(finished) and 1 <= len(finished) <= 5
    # Every job taken either finished or was given back; nothing else was taken.
    taken = 100 - len(source.jobs)
    assert sorted(finished + source.released) == list(range(taken)) and taken <= 6


def test_work_still_in_flight_after_the_grace_period_is_cancelled_and_released():
    source = ListSource(range(10))

    async def handle(job):
        await asyncio.sleep(30)
        return True

    async def main():
        shutdown = Shutdown()
        asyncio.get_running_loop().call_later(0.1, shutdown.request, "test")
        return await run_pool(source, handle, concurrency=3, shutdown=shutdown, grace_s=0.2)

    result = asyncio.run(main())
    assert result.stopped and sorted(source.released) == [0, 1, 2] and result.finished == 0


def test_a_fatal_error_stops_the_pool_and_is_reported():
    source = ListSource(range(20))

    class Misconfigured(Exception):
        pass

    async def handle(job):
        await asyncio.sleep(0.01)
        if job == 3:
            raise Misconfigured("wrong model")
        return True

    async def main():
        return await run_pool(
            source, handle, concurrency=2, shutdown=Shutdown(), is_fatal=lambda e: isinstance(e, Misconfigured)
        )

    result = asyncio.run(main())
    assert isinstance(result.fatal, Misconfigured) and result.stopped and len(source.jobs) > 10
