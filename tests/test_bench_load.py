"""The load generator itself (bench/bench_load.py), run for a few seconds with few clients on the test database's
engine: every kind of call is made, none fails, and the audit it reads from the database passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from tests.servers import SERVER_START_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent


def _engine_env() -> dict[str, str]:
    database = settings.DATABASES["default"]
    if "sqlite3" in database["ENGINE"]:
        return {"BENCH_LOAD_DATABASES": "sqlite"}
    user = database.get("USER") or "postgres"
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return {
        "BENCH_LOAD_DATABASES": "postgresql",
        "BENCH_PG_URL": f"postgres://{user}@{host}:{port}",
        "BENCH_LOAD_PG_NAME": f"prmsite_load_smoke_{os.getpid()}",
    }


def test_load_generator_runs_every_operation_without_errors_and_its_audit_passes(tmp_path):
    results = tmp_path / "load.json"
    env = {
        **os.environ,
        **_engine_env(),
        "BENCH_LOAD_SECONDS": "5",
        "BENCH_LOAD_CLIENTS": "8",
        "BENCH_LOAD_FLOOR_S": "0",
        "BENCH_LOAD_GROW_ROOTS": "100",
        "BENCH_WORKERS": "2",
        "BENCH_LOAD_JSON": str(results),
        "BENCH_SERVER_START_TIMEOUT_S": str(SERVER_START_TIMEOUT_S),
    }
    proc = subprocess.run(
        [sys.executable, "bench/bench_load.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = json.loads(results.read_text())
    assert result["errors"] == 0, result["error_samples"]
    assert result["audit"]["ok"], result["audit"]["failures"]
    assert result["audit"]["claimed"] > 0
    assert result["audit"]["claimed"] == result["audit"]["labels"]
    counts = {op["operation"]: op["requests"] for op in result["operations"]}
    retries = {"POST /rollout retry (same key)", "POST /process_reward_label retry"}  # 1 in 20: may not happen
    assert all(n > 0 for name, n in counts.items() if name not in retries), counts
    assert "| audit, " in proc.stdout
