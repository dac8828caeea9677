"""Two replicas of the production server on one PostgreSQL, adapters in a shared object store (moto's S3 server),
behind a real HAProxy (Debian's ``/usr/sbin/haproxy``, running ``deploy/haproxy.cfg`` as the manual shows it): the
load mix of ``bench/bench_load.py`` runs through the balancer, then the audit.

The audit: every rollout stored once under its key, every claimed rollout labelled once, no lease left (the bench's
audit, read from the database), both replicas served the mix, and every adapter downloads, byte for byte, from
either replica asked directly. Slow, so CI runs it once, in its SQLite pass: the test makes a PostgreSQL database
of its own on 127.0.0.1:5432 (user postgres) and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from bench import bench_load
from bench.servers import manage, production_server, stop
from tests.servers import PROJECT_ROOT, SERVER_START_TIMEOUT_S, S3Server, free_port

HAPROXY = "/usr/sbin/haproxy"
HAPROXY_CONFIG = PROJECT_ROOT / "deploy" / "haproxy.cfg"
PG_BASE = os.environ.get("REPLICAS_PG_URL", "postgres://postgres@127.0.0.1:5432")
MIX_SECONDS = 30
MIX_CLIENTS = 8

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(HAPROXY).exists(), reason=f"HAProxy is not installed ({HAPROXY}; apt install haproxy)"),
]


def _pg_admin(sql: str) -> None:
    import psycopg  # deferred: only this test talks to PostgreSQL itself

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _haproxy_stats(sock_path: Path) -> dict[str, int]:
    """Sessions each replica served, from HAProxy's own counters (``show stat`` on its stats socket)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(sock_path))
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {
        row["svname"]: int(row["stot"])
        for row in rows
        if row["pxname"] == "replicas" and row["svname"] not in {"", "BACKEND", "FRONTEND"}
    }


@pytest.fixture
def database():
    name = f"prmsite_replicas_{os.getpid()}"
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {name}")
    yield f"{PG_BASE}/{name}"
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def s3(tmp_path):
    server = S3Server(tmp_path).start()
    yield server
    server.stop()


def test_two_replicas_behind_haproxy_keep_every_guarantee_under_the_load_mix(database, s3, tmp_path):
    bucket = "prmsite-adapters"
    s3.client().create_bucket(Bucket=bucket)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PRM_ADAPTER_STORAGE", "AWS_"))},
        **s3.env(bucket),
        "DATABASE_URL": database,
        "DJANGO_DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(PROJECT_ROOT),
        "BENCH_LOAD_GROW_ROOTS": "100",
    }
    manage(env, "migrate", "--noinput")
    seeded = bench_load.child(env, "--setup")
    roots, token = seeded["roots"], seeded["token"]
    headers = {"Authorization": f"Token {token}"}

    replicas, haproxy = [], None
    try:
        for index in (1, 2):  # each with a media folder of its own: nothing may live on one replica's disk
            replica_env = {
                **env,
                "DJANGO_MEDIA_ROOT": str(tmp_path / f"media-{index}"),
                "WEBSERVER_FORWARDED_ALLOW_IPS": "127.0.0.1",
            }
            replicas.append(
                production_server(replica_env, workers=1, token=token, start_timeout_s=SERVER_START_TIMEOUT_S)
            )
        lb_port, stats = free_port(), tmp_path / "haproxy.sock"
        lb_env = {
            **os.environ,
            "PRMSITE_LB_BIND": f"127.0.0.1:{lb_port}",
            "PRMSITE_REPLICA_1": replicas[0][1].removeprefix("http://"),
            "PRMSITE_REPLICA_2": replicas[1][1].removeprefix("http://"),
            "PRMSITE_LB_STATS": str(stats),
        }
        log = (tmp_path / "haproxy.log").open("w")
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(HAPROXY_CONFIG)], env=lb_env, stdout=log, stderr=log)
        lb = f"http://127.0.0.1:{lb_port}"
        deadline = time.monotonic() + 60
        while not (stats.exists() and all(_haproxy_stats(stats).get(f"replica{i}") is not None for i in (1, 2))):
            assert haproxy.poll() is None and time.monotonic() < deadline, (tmp_path / "haproxy.log").read_text()
            time.sleep(0.1)
        while requests.get(f"{lb}/prm_adapters", headers=headers, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "HAProxy did not pass requests on"
            time.sleep(0.2)

        # Adapters: the mix's own through the balancer, and one more through each replica directly.
        adapters: dict[str, bytes] = {bench_load.ADAPTER_VERSION: bench_load.adapter_zip()}
        targets = {bench_load.ADAPTER_VERSION: lb}
        for index, (_, base) in enumerate(replicas, start=1):
            name = f"direct-{index}"
            adapters[name] = adapters[bench_load.ADAPTER_VERSION]  # the same bytes under another version
            targets[name] = base
        for version, data in adapters.items():
            response = requests.post(
                f"{targets[version]}/prm_adapter",
                params={"prm_version": version, "base_model": "tiny-llama", "worker": "replicas"},
                data=data,
                headers={**headers, "Content-Type": "application/zip"},
                timeout=120,
            )
            assert response.status_code == 200, response.text

        before = _haproxy_stats(stats)
        bench_load.SECONDS, bench_load.CLIENTS = MIX_SECONDS, MIX_CLIENTS
        expected = hashlib.sha256(adapters[bench_load.ADAPTER_VERSION]).hexdigest()
        seen, _elapsed = asyncio.run(bench_load.run_mix(lb, token, roots, expected))
        after = _haproxy_stats(stats)

        assert sum(seen.errors.values()) == 0, seen.error_samples
        served = {name: after[name] - before.get(name, 0) for name in after}
        assert all(served[f"replica{i}"] > 0 for i in (1, 2)), served  # the balancer used both
        counts = {name: len(values) for name, values in seen.latencies_ms.items()}
        print(f"replicas: {served} connections; {sum(counts.values())} requests in {_elapsed:.0f} s: {counts}")

        for _, base in replicas:  # every adapter, from either replica asked directly
            listed = requests.get(f"{base}/prm_adapters", headers=headers, timeout=60).json()
            assert sorted(a["prm_version"] for a in listed) == sorted(adapters)
            for version, data in adapters.items():
                got = requests.get(f"{base}/prm_adapter", params={"prm_version": version}, headers=headers, timeout=60)
                assert got.status_code == 200 and got.content == data, (base, version, got.status_code)
        for index in (1, 2):
            media = tmp_path / f"media-{index}"
            assert not media.exists() or not [p for p in media.rglob("*") if p.is_file()]
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(timeout=30)
        for process, _ in replicas:
            stop(process)

    seen_path = tmp_path / "seen.json"
    seen_path.write_text(
        json.dumps(
            {
                "posted": seen.posted,
                "claimed": seen.claimed,
                "labels": {str(k): v for k, v in seen.labels.items()},
                "expansions": {str(k): v for k, v in seen.expansions.items()},
                "expansion_leases": seen.expansion_leases,
            }
        )
    )
    audited = bench_load.child(env, "--audit", str(seen_path))
    assert audited["ok"], audited["failures"]
    assert audited["claimed"] > 0 and audited["claimed"] == audited["labels"]
    assert audited["rollouts"] > 0
