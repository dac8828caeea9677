"""Benchmark of posting labels in batches: ``prm_label_worker``'s loop labelling a queue through the production server,
posting with ``POST /process_reward_label/batch`` against posting one label per request, on SQLite and on PostgreSQL.

    .venv/bin/python bench/bench_label_batch.py        # or: python bench/run.py bench_label_batch

Each backend gets a fresh database (a temporary SQLite file; the PostgreSQL database ``prmsite_label_batch_bench`` on
``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432``), migrated, with a worker token; the production server
(``python -m prmsite.wsgi``: uvicorn, ``BENCH_WORKERS`` processes, default 2 x cores + 1) serves it on a free port of
127.0.0.1. ``BENCH_N`` rollouts (default 2000, 500 with ``BENCH_SHORT``) of three steps go in through
``POST /rollout/batch``. Then ``adapters.prm.inference_worker.label_loop`` (what ``prm_label_worker`` runs once its
model is loaded) labels all of them with a scorer that answers at once, so the figure is what claiming and posting
cost: claims of 256, scored chunks of 64, 4 posting threads, each with its own ``PrmsiteClient``:

1. posting in batches (the client as it is);
2. posting one by one: the same loop and client with ``label_batches`` off (what it does against an older server),
   for another ``prm_version`` of the same rollouts, so both label the same queue;
3. the service floor, in a child process on the same database: ``checkout_claim`` (limit 256) and
   ``label_create_each`` for a third ``prm_version``, without HTTP.

Every mode's labels are counted in the database (one per rollout) before its figure is kept. The last lines are
Markdown rows ``| benchmark | figure | floor | ratio |``: batches against one by one (the gain), and batches against
the service in one process. Everything started here is stopped, and the databases are removed, even on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import (  # noqa: E402
    RATIO_HEADER,
    PostgresUnavailable,
    manage,
    postgres_database,
    production_server,
    stop,
    table_print,
)

SHORT = os.environ.get("BENCH_SHORT") == "1"
N = int(os.environ.get("BENCH_N", "500" if SHORT else "2000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = "prmsite_label_batch_bench"
CLAIM_SIZE = 256
SCORE_BATCH = 64
POST_THREADS = 4
ROLLOUT = {
    "model": "bench-model",
    "example": "Is the statement 'the sky is green' true?",
    "reasoning": [
        "Step 1: the sky is usually blue. ",
        "Step 2: so the statement is false. ",
        "Verdict: False (code: 0)",
    ],
    "prediction": 0,
    "ground_truth": 0,
    "worker": "bench-worker",
}


class InstantScorer:
    """Rewards at once (0.5 per step): the benchmark measures claiming and posting, not a model."""

    def score(self, rollouts):
        return [[0.5] * len(steps) for _prompt, steps in rollouts]


def seed(base: str, token: str) -> None:
    from prmsite.core.client import PrmsiteClient

    with PrmsiteClient(base, token) as client:
        for start in range(0, N, 500):
            count = min(500, N - start)
            bodies = [{**ROLLOUT, "example": f"{ROLLOUT['example']} #{start + i}"} for i in range(count)]
            results = client.post_rollouts(bodies)
            if any("id" not in result for result in results):
                raise RuntimeError(f"a rollout was refused: {results[:3]}")


def worker_run(base: str, token: str, prm_version: str, *, batches: bool) -> float:
    """``label_loop`` over the whole queue of ``prm_version``; answer its labels per second."""
    from adapters.prm.inference_worker import LabelWorkerSettings, label_loop
    from prmsite.core.client import PrmsiteClient

    def make_client() -> PrmsiteClient:
        client = PrmsiteClient(base, token)
        client.label_batches = batches
        return client

    settings = LabelWorkerSettings(
        prm_version=prm_version,
        worker="bench-prm",
        batch_size=SCORE_BATCH,
        claim_size=CLAIM_SIZE,
        wait=0.0,
        exit_when_idle=True,
        post_threads=POST_THREADS,
    )
    with make_client() as claimer:
        summary = label_loop(InstantScorer(), claimer, settings, stop=threading.Event(), client_factory=make_client)
    if (summary.labelled, summary.skipped, summary.refused) != (N, 0, 0):
        raise RuntimeError(f"{prm_version}: {summary.line()}")
    return summary.labelled / summary.seconds


def service_floor() -> None:
    """Child process: claim and label the queue of one version through the services, in one process; prints JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    django.setup()
    from django.utils import timezone

    from rollouts.labels import label_create_each
    from rollouts.queue import checkout_claim

    version = "bench-floor"
    started = time.perf_counter()
    labelled = 0
    while rollouts := checkout_claim(
        prm_version=version, claimed_by="bench", now=timezone.now(), limit=CLAIM_SIZE
    ).rollouts:
        bodies = [
            {"rollout_id": r.pk, "prm_output": [0.5] * len(r.reasoning), "prm_version": version, "worker": "bench-prm"}
            for r in rollouts
        ]
        results = label_create_each(bodies, labelled_by="bench")
        labelled += sum(1 for result in results if isinstance(result, tuple))
    print(json.dumps({"labelled": labelled, "seconds": time.perf_counter() - started}))


def labels_in_database(env: dict[str, str], prm_version: str) -> int:
    code = (
        "import django; django.setup(); from rollouts.models import ProcessRewardLabel as L; "
        f"print(L.objects.filter(prm_version={prm_version!r}).values('rollout_id').distinct().count(), "
        f"L.objects.filter(prm_version={prm_version!r}).count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "prmsite.settings"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    distinct, total = int(out[-2]), int(out[-1])
    if distinct != total:
        raise RuntimeError(f"{prm_version}: {total} labels for {distinct} rollouts")
    return total


def bench_backend(label: str, database_url: str, env_base: dict[str, str]) -> list[str]:
    env = {**env_base, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_worker_token", "bench").strip().splitlines()[-1]
    server, base = production_server(env, workers=WORKERS, token=token)
    try:
        seed(base, token)
        batched = worker_run(base, token, "bench-batches", batches=True)
        single = worker_run(base, token, "bench-single", batches=False)
    finally:
        stop(server)
    for version in ("bench-batches", "bench-single"):
        if labels_in_database(env, version) != N:
            raise RuntimeError(f"{version}: not one label per rollout")
    floor = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--service-floor"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    if floor["labelled"] != N:
        raise RuntimeError(f"the service floor labelled {floor['labelled']} of {N}")
    floor_rate = floor["labelled"] / floor["seconds"]
    return [
        f"| prm_label_worker labels/s, {label}: in batches vs one by one | {batched:.0f} labels/s | one by one: "
        f"{single:.0f} labels/s | {batched / single:.2f} |",
        f"| prm_label_worker labels/s, {label}: in batches vs the services in one process | {batched:.0f} labels/s | "
        f"checkout_claim + label_create_each: {floor_rate:.0f} labels/s | {batched / floor_rate:.2f} |",
    ]


def main() -> int:
    env_base = {**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0", "PYTHONPATH": str(ROOT)}
    rows: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prmsite-bench-") as folder:
        rows += bench_backend("SQLite", f"sqlite:///{Path(folder) / 'bench.sqlite3'}", env_base)
    try:
        with postgres_database(PG_BASE, PG_NAME) as url:
            rows += bench_backend("PostgreSQL", url, env_base)
    except PostgresUnavailable as exc:  # no PostgreSQL here: say so in the table rather than fail the SQLite figures
        rows.append(f"| PostgreSQL | skipped: {exc.reason} | | |")
    print(
        f"{N} rollouts of 3 steps per backend; claims of {CLAIM_SIZE}, scored chunks of {SCORE_BATCH}, "
        f"{POST_THREADS} posting threads; uvicorn {WORKERS} worker processes, {os.cpu_count()} cores, "
        f"{time.monotonic() - started:.0f} s"
    )
    table_print(RATIO_HEADER, rows)
    return 0


if __name__ == "__main__":
    if "--service-floor" in sys.argv:
        service_floor()
    else:
        raise SystemExit(main())
