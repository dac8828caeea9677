"""Benchmark of the AI step labeller's throughput: N judge requests in flight against a stub judge that answers after a
fixed latency L, so the ideal is N / L labels per second.

    .venv/bin/python bench/bench_labeller.py          # or: python bench/run.py bench_labeller

For N in ``BENCH_LABELLER_N`` (default 32,128) and L = ``BENCH_LABELLER_LATENCY_S`` (default 1.0): the production server
(uvicorn, SQLite, on this machine, like the stub) holds ``BENCH_LABELLER_ROUNDS`` x N rollouts of the synthetic task
(default 8 rounds); one ``manage.py ai_label_worker --num_processes N --exit_when_idle`` process claims them (active
learning), has the stub (``tests/stub_openai.py --judge``) grade every step, parses the answers and posts one label per
rollout. The figure is its labels per second from its first claim to its last label stored (its own JSON summary,
checked against the database), as a share of N / L, and its peak RSS. The floor, measured in the same run against the
same stub: the ``openai`` async client alone sending the same prompts (same schema, same transport, same N), nothing
claimed, parsed or stored. Ratio = labeller / floor: what claiming, parsing, the spool and posting cost."""

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

NS = [int(n) for n in os.environ.get("BENCH_LABELLER_N", "32,128").split(",")]
LATENCY_S = float(os.environ.get("BENCH_LABELLER_LATENCY_S", "1.0"))
ROUNDS = int(os.environ.get("BENCH_LABELLER_ROUNDS", "8"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))

FLOOR = r"""
import asyncio, json, sys, time
import httpx2, openai
from adapters.prm.synthetic import synthetic_rows
from rollouts.worker.judge_prompt import PromptTemplate
from rollouts.worker.verdicts import structured_output_body
base, n, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
template = PromptTemplate.default()
rows = synthetic_rows(prompts=total, rollouts_per_prompt=1, seed=seed)
requests = [(template.render({"example": r["prompt"], "reasoning": r["completions"], "prediction": 1,
                              "ground_truth": 1}), len(r["completions"])) for r in rows]
async def main():
    limits = httpx2.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    http = openai.DefaultAioHttpClient(timeout=httpx2.Timeout(600, connect=10), limits=limits)
    client = openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0, http_client=http)
    slots = asyncio.Semaphore(n)
    async def one(prompt, steps):
        async with slots:
            schema = structured_output_body("json_schema", steps)
            r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                     temperature=0.0, extra_body=schema)
            return r.choices[0].message.content
    started = time.perf_counter()
    await asyncio.gather(*[one(p, s) for p, s in requests])
    elapsed = time.perf_counter() - started
    await client.close()
    print(json.dumps({"rate": total / elapsed}))
asyncio.run(main())
"""

SEED = r"""
import sys
from adapters.prm.synthetic import synthetic_rows
from prmsite.core.client import PrmsiteClient
base, token, total, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = synthetic_rows(prompts=total, rollouts_per_prompt=1, seed=seed)
bodies = [{"model": "bench", "example": r["prompt"], "reasoning": r["completions"], "worker": "bench",
           "prediction": int(all(r["labels"])), "ground_truth": 1} for r in rows]
with PrmsiteClient(base, token) as client:
    for start in range(0, len(bodies), 500):
        results = client.post_rollouts(bodies[start:start + 500])
        assert all("id" in r for r in results), results[:3]
"""


def run_labeller(env: dict[str, str], scheme: str, n: int, spool: Path) -> tuple[dict, float]:
    """Run the labeller; answer its JSON summary and its peak RSS in MB (VmHWM, polled until it exits)."""
    command = [sys.executable, "manage.py", "ai_label_worker", "--labelling_scheme_version", scheme]
    command += ["--num_processes", str(n), "--exit_when_idle", "--wait", "0", "--spool_dir", str(spool)]
    command += ["--log_json", "--model_name", "stub", "--worker_name", f"bench-{n}"]
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
        raise RuntimeError(f"the labeller failed: {err[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    return summary, peak / 1024


def main() -> int:
    started = time.monotonic()
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="prmsite-bench-labeller-") as folder_name:
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
        stub_command = [sys.executable, "-m", "tests.stub_openai", "--port", str(stub_port), "--judge"]
        stub = subprocess.Popen(
            [*stub_command, "--latency_s", str(LATENCY_S)],
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
            labeller_env = {
                **env,
                "OPENAI_API_BASE": stub_base,
                "OPENAI_API_KEY": "x",
                "WEBSERVER_API_BASE": server_base,
                "WEBSERVER_API_TOKEN": token,
            }
            for n in NS:
                total = ROUNDS * n
                scheme = f"bench-judge-{n}"
                # Each run labels its own scheme; the rollouts of earlier runs are labelled too (the queue spans the
                # server), so every run seeds enough fresh ones and labels all rollouts there are.
                subprocess.run(
                    [sys.executable, "-c", SEED, server_base, token, str(total), str(n)], cwd=ROOT, env=env, check=True
                )
                present = _count(database, "SELECT COUNT(*) FROM rollouts_rollout")
                summary, peak_mb = run_labeller(labeller_env, scheme, n, folder / f"spool-{n}")
                stored = _count(
                    database, "SELECT COUNT(*) FROM rollouts_processrewardlabel WHERE prm_version=?", scheme
                )
                if stored != present or summary["sent"] != present or summary["malformed"]:
                    raise RuntimeError(f"N={n}: {summary['sent']} labels sent, {stored} stored, {present} rollouts")
                rate = present / summary["elapsed_s"]
                floor = json.loads(
                    subprocess.run(
                        [sys.executable, "-c", FLOOR, stub_base, str(n), str(present), str(n)],
                        cwd=ROOT,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                )["rate"]
                ideal = n / LATENCY_S
                rows.append(
                    f"| ai_label_worker, N={n} in flight, stub judge latency {LATENCY_S:g} s, {present} rollouts "
                    f"labelled ({summary['steps']} steps, SQLite) | {rate:.0f} labels/s = {rate / ideal:.2f} of N/L; "
                    f"peak RSS {peak_mb:.0f} MB | openai client alone, same prompts, stub and N: {floor:.0f} req/s "
                    f"({floor / ideal:.2f} of N/L) | {rate / floor:.2f} |"
                )
        finally:
            if server is not None:
                stop(server)
            stop(stub)
    print(
        f"{len(NS)} runs, {ROUNDS} rounds of N rollouts seeded per run, uvicorn {WORKERS} worker processes, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s"
    )
    print("| benchmark | figure | floor | ratio |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(row)
    return 0


def _count(database: Path, query: str, *params: str) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute(query, params).fetchone()[0]


if __name__ == "__main__":
    raise SystemExit(main())
