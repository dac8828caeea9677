"""Benchmark of the growth scheduler's expansion leases, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_expansions.py      # or: python bench/run.py bench_expansions

1. Claims per second: 32 client threads claim the expansions of a forest one at a time
   (``POST /forest/<name>/expansions/claim``, limit 1) from the production server until none is left, every expansion
   handed out once; floor: the same claims through the service (``expansion_claim``) in one process, one after the
   other, on a twin forest of the same database. Planning (roots queued a batch at a time) is part of both.
2. Claim latency against forest size: the median time of one claim (service call, limit 1) in a forest of
   ``BENCH_BIG_NODES`` nodes (default 1,000,000: 100,000 trees of 10 nodes) as a ratio to the same in a forest of
   1,000 nodes (100 trees of 10 nodes), ``BENCH_LATENCY_CLAIMS`` claims each (default 400).

``BENCH_CLAIM_ROOTS`` (default 2000) sets the forests of part 1. PostgreSQL: database ``prmsite_expansions_bench``
on ``BENCH_PG_URL`` (default ``postgres://postgres@127.0.0.1:5432``), dropped at the end.
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
CLAIM_ROOTS = int(os.environ.get("BENCH_CLAIM_ROOTS", "2000"))
BIG_NODES = int(os.environ.get("BENCH_BIG_NODES", "1000000"))
LATENCY_CLAIMS = int(os.environ.get("BENCH_LATENCY_CLAIMS", "400"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = "prmsite_expansions_bench"
TREE_NODES = 10


def _django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    django.setup()


def seed_forest(name: str, trees: int) -> None:
    """A forest of ``trees`` trees, each a chain of TREE_NODES nodes (roots first, then the steps), with a repeats
    plan (one rollout per root): every root becomes one expansion."""
    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from forests.growth.plan import growth_plan_set
    from forests.models import Forest, Node, text_sha256

    with transaction.atomic():
        forest = Forest.objects.create(name=name, rollout_config={"reasoning_delimiter_pattern": "Step"})
        batch = 20_000
        for start in range(0, trees, batch):
            Node.objects.bulk_create(
                [
                    Node(forest=forest, depth=0, text=f"q{i}", text_sha256=text_sha256(f"q{i}"), ground_truth=1)
                    for i in range(start, min(trees, start + batch))
                ],
                batch_size=batch,
            )
        Node.objects.filter(forest=forest, depth=0).update(tree=F("id"))
    parents = list(Node.objects.filter(forest=forest, depth=0).order_by("id").values_list("id", flat=True))
    trees = list(parents)  # the root of each chain, aligned with ``parents``
    for depth in range(1, TREE_NODES):
        text = f"Step {depth}"
        created: list[int] = []
        for start in range(0, len(parents), 20_000):
            nodes = [
                Node(
                    forest=forest, tree_id=tree, parent_id=parent, depth=depth, text=text, text_sha256=text_sha256(text)
                )
                for tree, parent in zip(trees[start : start + 20_000], parents[start : start + 20_000], strict=True)
            ]
            created += [node.pk for node in Node.objects.bulk_create(nodes, batch_size=20_000)]
        parents = created
    growth_plan_set(forest_name=name, given={"policy": "repeats", "num_repeats": 1}, now=timezone.now())


def setup() -> None:
    _django()
    from forests.models import Node

    for name, trees in (("claims-http", CLAIM_ROOTS), ("claims-orm", CLAIM_ROOTS), ("small", 100)):
        seed_forest(name, trees)
    seed_forest("big", BIG_NODES // TREE_NODES)
    print(json.dumps({"nodes": Node.objects.count()}))


def orm_floor() -> None:
    _django()
    from django.utils import timezone

    from forests.growth.queue import expansion_claim

    started = time.perf_counter()
    claimed = 0
    while expansion_claim(forest_name="claims-orm", claimed_by="bench", now=timezone.now(), limit=1).expansions:
        claimed += 1
    print(json.dumps({"claimed": claimed, "seconds": time.perf_counter() - started}))


def latency() -> None:
    _django()
    from django.utils import timezone

    from forests.growth.queue import expansion_claim
    from forests.models import Node

    result = {}
    for name in ("small", "big"):
        expansion_claim(forest_name=name, claimed_by="bench", now=timezone.now(), limit=1)  # plans the first batch
        times = []
        for _ in range(LATENCY_CLAIMS):
            started = time.perf_counter()
            got = expansion_claim(forest_name=name, claimed_by="bench", now=timezone.now(), limit=1).expansions
            times.append(time.perf_counter() - started)
            if not got:
                break
        result[name] = {
            "nodes": Node.objects.filter(forest__name=name).count(),
            "median_ms": statistics.median(times) * 1000,
            "p90_ms": statistics.quantiles(times, n=10)[-1] * 1000,
        }
    print(json.dumps(result))


def child(env: dict[str, str], flag: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, flag], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def http_claims(base: str, token: str) -> tuple[int, float, list[float]]:
    seen: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)
    errors: list[BaseException] = []

    def claimer() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Token {token}"
            barrier.wait()
            try:
                while True:
                    started = time.perf_counter()
                    response = session.post(
                        f"{base}/forest/claims-http/expansions/claim", json={"limit": 1}, timeout=120
                    )
                    elapsed = time.perf_counter() - started
                    response.raise_for_status()
                    got = response.json()["expansions"]
                    if not got:
                        return
                    with lock:
                        seen.extend(e["id"] for e in got)
                        latencies.append(elapsed * 1000)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=claimer) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} claimer(s) failed, first: {errors[0]!r}")
    if len(seen) != len(set(seen)) or len(seen) != CLAIM_ROOTS:
        raise RuntimeError(f"{len(seen)} claims, {len(set(seen))} distinct, expected {CLAIM_ROOTS}: a lease went twice")
    return len(seen), elapsed, latencies


def bench_backend(label: str, database_url: str, env_base: dict[str, str]) -> list[str]:
    env = {**env_base, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_worker_token", "bench").strip().splitlines()[-1]
    child(env, "--setup")
    server, base = production_server(env, workers=WORKERS, token=token)
    try:
        claims, seconds, latencies = http_claims(base, token)
    finally:
        stop(server)
    floor = child(env, "--orm-floor")
    sizes = child(env, "--latency")
    rate, floor_rate = claims / seconds, floor["claimed"] / floor["seconds"]
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100)[-1]
    small, big = sizes["small"], sizes["big"]
    return [
        f"| expansion claims (limit 1), {label}, {CLIENTS} clients, {claims} expansions | {rate:.0f} claims/s, "
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms | service in 1 process: {floor_rate:.0f} claims/s | "
        f"{rate / floor_rate:.2f} |",
        f"| claim latency, {label}, forest of {big['nodes']:,} nodes (median of {LATENCY_CLAIMS}) | "
        f"{big['median_ms']:.2f} ms (p90 {big['p90_ms']:.2f} ms) | forest of {small['nodes']:,} nodes: "
        f"{small['median_ms']:.2f} ms (p90 {small['p90_ms']:.2f} ms) | {big['median_ms'] / small['median_ms']:.2f} |",
    ]


def main() -> int:
    env_base = {**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0", "PYTHONPATH": str(ROOT)}
    rows: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prmsite-bench-expansions-") as folder:
        rows += bench_backend("SQLite", f"sqlite:///{Path(folder) / 'bench.sqlite3'}", env_base)
    try:
        with postgres_database(PG_BASE, PG_NAME) as url:
            rows += bench_backend("PostgreSQL", url, env_base)
    except PostgresUnavailable as exc:  # no PostgreSQL here: say so rather than fail the SQLite figures
        rows.append(f"| PostgreSQL | skipped: {exc.reason} | | |")
    print(
        f"{CLAIM_ROOTS} expansions claimed by {CLIENTS} clients, uvicorn {WORKERS} worker processes, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s"
    )
    table_print(RATIO_HEADER, rows)
    return 0


if __name__ == "__main__":
    if "--setup" in sys.argv:
        setup()
    elif "--orm-floor" in sys.argv:
        orm_floor()
    elif "--latency" in sys.argv:
        latency()
    else:
        raise SystemExit(main())
