"""Benchmark of the rollout worker's throughput: N generations in flight against a stub server that answers after a
fixed latency L, so the ideal is N / L rollouts per second.

    .venv/bin/python bench/bench_worker.py          # or: python bench/run.py bench_worker

For N in ``BENCH_WORKER_N`` (default 32,128,512) and L = ``BENCH_WORKER_LATENCY_S`` (default 1.0): one worker process
(``manage.py rollout_worker``, dataset mode, ``--num_processes N``) generates ``BENCH_WORKER_ROUNDS`` x N rollouts
(default 8 rounds) and posts them to this project's production server (SQLite, on the same machine, like the stub).
The figure is the worker's rollouts per second from its first request to its last rollout stored (its own JSON
summary, checked against the database), as a share of N / L, and its peak RSS. The floor, measured in the same run
against the same stub: the ``openai`` async client alone (same transport, same N, nothing stored), requests per
second. Ratio = worker / floor: what the worker's own work (steps, spool, posting, bookkeeping) costs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import free_port, manage, production_server, stop, wait_http  # noqa: E402

NS = [int(n) for n in os.environ.get("BENCH_WORKER_N", "32,128,512").split(",")]
LATENCY_S = float(os.environ.get("BENCH_WORKER_LATENCY_S", "1.0"))
ROUNDS = int(os.environ.get("BENCH_WORKER_ROUNDS", "8"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))

FLOOR = r"""
import asyncio, json, sys, time
import httpx2, openai
base, n, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def main():
    limits = httpx2.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    http = openai.DefaultAioHttpClient(timeout=httpx2.Timeout(600, connect=10), limits=limits)
    client = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0, http_client=http)
    slots = asyncio.Semaphore(n)
    async def one(i):
        async with slots:
            r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"item {i}"}])
            return r.choices[0].message.content
    started = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(total)])
    elapsed = time.perf_counter() - started
    await client.close()
    print(json.dumps({"rate": total / elapsed}))
asyncio.run(main())
"""


def run_worker(env: dict[str, str], template: Path, n: int, spool: Path) -> tuple[dict, float]:
    """Run the worker; answer its JSON summary and its peak RSS in MB (VmHWM, polled until it exits)."""
    command = [sys.executable, "manage.py", "rollout_worker", "--template_json", str(template), "--num_processes"]
    command += [str(n), "--num_repeats", "1", "--spool_dir", str(spool), "--log_json", "--model_name", "stub"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]))
        except (OSError, StopIteration, ValueError):
            peak = max(peak, watched.memory_info().rss // 1024) if watched.is_running() else peak
        time.sleep(0.05)
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the worker failed: {err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    return summary, peak / 1024


def main() -> int:
    started = time.monotonic()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prmsite-bench-worker-") as folder_name:
        folder = Path(folder_name)
        database = folder / "bench.sqlite3"
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{database}",
            "DJANGO_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(folder / "hf"),
            "PYTHONPATH": str(ROOT),
        }
        manage(env, "migrate", "--noinput")
        token = manage(env, "create_worker_token", "bench").strip().splitlines()[-1]
        stub_port = free_port()
        stub = subprocess.Popen(
            [sys.executable, "-m", "tests.stub_openai", "--port", str(stub_port), "--latency_s", str(LATENCY_S)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = None
        try:
            stub_base = f"http://127.0.0.1:{stub_port}/v1"
            wait_http(f"{stub_base}/models", 200, stub)
            server, server_base = production_server(env, workers=WORKERS, token=token)
            worker_env = {
                **env,
                "OPENAI_API_BASE": stub_base,
                "OPENAI_API_KEY": "x",
                "WEBSERVER_API_BASE": server_base,
                "WEBSERVER_API_TOKEN": token,
            }
            for n in NS:
                total = ROUNDS * n
                data = folder / f"items-{n}.jsonl"
                data.write_text(
                    "".join(
                        json.dumps({"statement": f"Statement {i} of run {n}.", "label": i % 2}) + "\n"
                        for i in range(total)
                    )
                )
                template = folder / f"template-{n}.json"
                template.write_text(
                    json.dumps(
                        {
                            "rollout_config_version": "bench",
                            "template": "Is it true? {statement}",
                            "reasoning_delimiter_pattern": "Step|Verdict",
                            "prediction_pattern": r"code: ([-0-9]+)",
                            "dataset_name": str(data),
                        }
                    )
                )
                before = _count(database)
                summary, peak_mb = run_worker(worker_env, template, n, folder / f"spool-{n}")
                stored = _count(database) - before
                if stored != total or summary["results"] != total:
                    raise RuntimeError(f"N={n}: {summary['results']} generated, {stored} stored, expected {total}")
                rate = total / summary["elapsed_s"]
                floor = json.loads(
                    subprocess.run(
                        [sys.executable, "-c", FLOOR, stub_base, str(n), str(total)],
                        cwd=ROOT,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                )["rate"]
                ideal = n / LATENCY_S
                rows.append(
                    f"| rollout_worker, N={n} in flight, stub latency {LATENCY_S:g} s, {total} rollouts stored "
                    f"(SQLite) | {rate:.0f} rollouts/s = {rate / ideal:.2f} of N/L; peak RSS {peak_mb:.0f} MB | "
                    f"openai client alone, same stub and N: {floor:.0f} req/s ({floor / ideal:.2f} of N/L) | "
                    f"{rate / floor:.2f} |"
                )
        finally:
            if server is not None:
                stop(server)
            stop(stub)
    print(
        f"{len(NS)} runs, {ROUNDS} rounds each, uvicorn {WORKERS} worker processes, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s"
    )
    print("| benchmark | figure | floor | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(row)
    return 0


def _count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT COUNT(*) FROM rollouts_rollout").fetchone()[0]


if __name__ == "__main__":
    raise SystemExit(main())
