"""Running the rollout worker: in this process, or in several OS processes (``--num_os_processes``), each with its
share of ``concurrency`` and its own spool folder, their counters summed into one progress bar and one summary.

``run(options)`` answers the exit status and the summary; ``python manage.py rollout_worker`` calls it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import os
import signal
from typing import Any

from rollouts.worker.pool_worker import (
    STATUS_COMPLETED,
    STATUS_FAILED,
    STATUS_STOPPED,
    exit_status,
)
from rollouts.worker.progress import Counters, Progress
from rollouts.worker.rollout_worker import RolloutWorker, WorkerOptions


def run(options: WorkerOptions) -> tuple[int, dict[str, Any]]:
    """Run the worker (``options.processes`` OS processes, each with its share of ``concurrency``); answer the exit
    status and the summary."""
    if options.processes <= 1:
        summary = asyncio.run(RolloutWorker(options).run())
        return exit_status(summary), summary
    return run_processes(options)


def _child(options: WorkerOptions, queue) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def report(counters: Counters) -> None:
        queue.put(("counters", options.process_index, dataclasses.asdict(counters)))

    progress = Progress(log_json=False, show_bar=False, out=open(os.devnull, "w"))  # noqa: SIM115
    summary = asyncio.run(RolloutWorker(options, progress=progress, report=report).run())
    queue.put(("summary", options.process_index, summary))


def run_processes(options: WorkerOptions) -> tuple[int, dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    count = options.processes
    shares = [options.concurrency // count + (1 if i < options.concurrency % count else 0) for i in range(count)]
    children = []
    for index in range(count):
        child_options = dataclasses.replace(
            options,
            process_index=index,
            concurrency=max(1, shares[index]),
            worker_name=f"{options.worker_name}/p{index}",
            show_bar=False,
            log_json=False,
        )
        process = context.Process(target=_child, args=(child_options, queue), name=f"rollout-worker-{index}")
        process.start()
        children.append(process)
    progress = Progress(log_json=options.log_json, show_bar=options.show_bar)
    latest: dict[int, Counters] = {}
    summaries: dict[int, dict[str, Any]] = {}

    def forward(signum, frame) -> None:
        for child in children:
            if child.is_alive():
                os.kill(child.pid, signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while len(summaries) < count:
            try:
                kind, index, data = queue.get(timeout=0.5)
            except Exception:  # queue.Empty
                if not any(child.is_alive() for child in children) and queue.empty():
                    break
                continue
            if kind == "counters":
                latest[index] = Counters(**data)
            else:
                summaries[index] = data
                latest[index] = Counters(**{k: data[k] for k in Counters.__dataclass_fields__ if k in data})
            total = Counters()
            for counters in latest.values():
                total.add(counters)
            progress.counters.__dict__.update(total.__dict__)
            progress.refresh()
    finally:
        for child in children:
            child.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    statuses = [summaries.get(i, {}).get("status", STATUS_FAILED) for i in range(count)]
    status = (
        STATUS_FAILED
        if STATUS_FAILED in statuses
        else STATUS_STOPPED
        if STATUS_STOPPED in statuses
        else STATUS_COMPLETED
    )
    errors = sorted({s["error"] for s in summaries.values() if s.get("error")})
    extra: dict[str, Any] = {"processes": count}
    if errors:
        extra["error"] = "; ".join(errors)
    missing = [i for i in range(count) if i not in summaries]
    if missing:
        extra["error"] = (extra.get("error", "") + f"; process(es) {missing} died").strip("; ")
        status = STATUS_FAILED
    summary = progress.finish(status=status, **extra)
    return exit_status(summary), summary
