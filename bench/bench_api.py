"""Benchmark of the active-learning API: POST /rollout and the GET /rollout claim under 32 concurrent clients against
the production server, on SQLite and on PostgreSQL, next to the same work done directly through the ORM in one process.

    .venv/bin/python bench/bench_api.py            # or: make bench  (bench/run.py runs every bench/bench_*.py)

Each backend gets a fresh database (a temporary SQLite file; the PostgreSQL database ``prmsite_api_bench`` on
``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432``), migrated, with a worker token; the production server
(``python -m prmsite.wsgi``: uvicorn, ``BENCH_WORKERS`` processes, default 2 x cores + 1) serves it on a free port of
127.0.0.1. Then:

1. ``BENCH_N`` (default 1500) POST /rollout spread over 32 client threads (one requests.Session each);
2. the same 32 clients claim them back one at a time (GET /rollout?prm_version=…&limit=1) until none is left;
3. the ORM floor, in a child process on the same database: the same inserts (``rollout_create``) and claims
   (``checkout_claim``, limit 1), one after the other, without HTTP.

The last lines are Markdown rows ``| benchmark | figure | floor | ratio |``; ratio = HTTP throughput / ORM throughput.
Everything started here is stopped, and the databases are removed, even on failure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

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

CLIENTS = 32
N = int(os.environ.get("BENCH_N", "1500"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = "prmsite_api_bench"
PRM_VERSION = "bench-prm"
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


@dataclass
class Phase:
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else float("nan")
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


def run_clients(worker) -> Phase:
    """Run ``worker(session, record)`` in CLIENTS threads started together; collect every request's latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    barrier = threading.Barrier(CLIENTS + 1)

    def record(ms: float) -> None:
        with lock:
            latencies.append(ms)

    def target(index: int) -> None:
        with requests.Session() as session:
            session.headers.update(HEADERS)
            barrier.wait()
            try:
                worker(index, session, record)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed, first: {errors[0]!r}")
    return Phase(len(latencies), elapsed, latencies)


HEADERS: dict[str, str] = {}


def bench_http(base: str) -> tuple[Phase, Phase]:
    per_client = [N // CLIENTS + (1 if i < N % CLIENTS else 0) for i in range(CLIENTS)]

    def post(index, session, record):
        for _ in range(per_client[index]):
            t = time.perf_counter()
            response = session.post(f"{base}/rollout", json=ROLLOUT, timeout=60)
            record((time.perf_counter() - t) * 1000)
            response.raise_for_status()

    def claim(index, session, record):
        while True:
            t = time.perf_counter()
            response = session.get(f"{base}/rollout", params={"prm_version": PRM_VERSION, "limit": 1}, timeout=60)
            elapsed = (time.perf_counter() - t) * 1000
            response.raise_for_status()
            if not response.json():
                return
            record(elapsed)

    posted = run_clients(post)
    claimed = run_clients(claim)
    if claimed.requests != N:
        raise RuntimeError(f"claimed {claimed.requests} rollouts, expected {N}: a rollout was handed out twice or lost")
    return posted, claimed


def orm_floor() -> None:
    """Child process: the same inserts and claims through the ORM, sequentially; prints JSON timings."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.utils import timezone

    from forests.intake import receive_rollout
    from rollouts.models import Rollout
    from rollouts.queue import checkout_claim

    Rollout.objects.all().delete()
    started = time.perf_counter()
    for _ in range(N):
        receive_rollout(**ROLLOUT)
    inserts = time.perf_counter() - started
    started = time.perf_counter()
    claimed = 0
    while batch := checkout_claim(prm_version="orm-floor", claimed_by="bench", now=timezone.now(), limit=1).rollouts:
        claimed += len(batch)
    claims = time.perf_counter() - started
    print(json.dumps({"inserts_s": inserts, "claims_s": claims, "claimed": claimed}))


def bench_backend(label: str, database_url: str, env_base: dict[str, str]) -> list[str]:
    env = {**env_base, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_worker_token", "bench").strip().splitlines()[-1]
    HEADERS["Authorization"] = f"Token {token}"
    server, base = production_server(env, workers=WORKERS, token=token)
    try:
        posted, claimed = bench_http(base)
    finally:
        stop(server)
    floor = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--orm-floor"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    insert_rate = N / floor["inserts_s"]
    claim_rate = floor["claimed"] / floor["claims_s"]
    return [
        f"| POST /rollout, {label}, {CLIENTS} clients | {posted.rate:.0f} req/s, p50 {posted.percentile(50):.1f} ms, "
        f"p99 {posted.percentile(99):.1f} ms | ORM, 1 process: {insert_rate:.0f} inserts/s | "
        f"{posted.rate / insert_rate:.2f} |",
        f"| GET /rollout claim (limit=1), {label}, {CLIENTS} clients | {claimed.rate:.0f} req/s, "
        f"p50 {claimed.percentile(50):.1f} ms, p99 {claimed.percentile(99):.1f} ms | "
        f"ORM, 1 process: {claim_rate:.0f} claims/s | {claimed.rate / claim_rate:.2f} |",
    ]


def main() -> int:
    env_base = {
        **os.environ,
        "DJANGO_LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "0",
        "PYTHONPATH": str(ROOT),
    }
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
        f"{N} rollouts per backend, {CLIENTS} client threads, uvicorn {WORKERS} worker processes, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s"
    )
    table_print(RATIO_HEADER, rows)
    return 0


if __name__ == "__main__":
    if "--orm-floor" in sys.argv:
        orm_floor()
    else:
        raise SystemExit(main())
