"""What the benchmarks share: free ports, manage.py, the production server (``python -m prmsite.wsgi``: uvicorn)
started on a database of the benchmark's own, a fresh PostgreSQL database for a run, and the results table."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
RATIO_HEADER = ("benchmark", "figure", "floor", "ratio")  # the columns of the rows every benchmark prints last


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py`` with ``env``; answer its stdout (``CalledProcessError`` when it fails)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def wait_http(url: str, ok: int, process: subprocess.Popen, headers: dict | None = None, timeout_s: float = 60) -> None:
    """Wait until ``url`` answers ``ok``; ``RuntimeError`` when ``process`` exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, headers=headers or {}, timeout=5).status_code == ok:
                return
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def production_server(
    env: dict[str, str], *, workers: int, token: str, start_timeout_s: float | None = None
) -> tuple[subprocess.Popen, str]:
    """Start the production server with ``env`` (its ``DATABASE_URL``) and ``workers`` processes on a free port; wait
    (up to ``start_timeout_s``, by default ``BENCH_SERVER_START_TIMEOUT_S`` or 60 s) until it answers ``token``;
    answer the process and its base URL. Stop it with ``stop``."""
    if start_timeout_s is None:
        start_timeout_s = float(os.environ.get("BENCH_SERVER_START_TIMEOUT_S", "60"))
    port = free_port()
    server_env = {
        **env,
        "WEBSERVER_HOST": "127.0.0.1",
        "WEBSERVER_PORT": str(port),
        "WEBSERVER_WORKERS": str(workers),
        "WEBSERVER_ACCESS_LOG": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "prmsite.wsgi"],
        cwd=ROOT,
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/prm_adapters", 200, process, {"Authorization": f"Token {token}"}, start_timeout_s)
    except BaseException:
        stop(process)
        raise
    return process, base


class PostgresUnavailable(Exception):
    """PostgreSQL could not be reached (or the database not created): ``reason`` is the error's type name, what the
    benchmarks print in their skipped row."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"PostgreSQL unavailable: {error!r}")
        self.reason = type(error).__name__


def _pg_admin(base_url: str, sql: str) -> None:
    import psycopg  # deferred: only the runs on PostgreSQL need it

    with psycopg.connect(f"{base_url}/postgres", autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def postgres_database(base_url: str, name: str) -> Iterator[str]:
    """A fresh database ``name`` on the server at ``base_url`` (``postgres://user@host:port``, no database): dropped if
    it was left over, created, its URL yielded, and dropped after, even when the body fails. ``PostgresUnavailable``,
    before the body runs, when the server cannot be reached or the database made::

        try:
            with postgres_database(PG_BASE, PG_NAME) as url:
                rows += bench_backend("PostgreSQL", url, ...)
        except PostgresUnavailable as exc:
            rows.append(f"| PostgreSQL | skipped: {exc.reason} | | |")
    """
    base_url = base_url.rstrip("/")
    try:
        _pg_admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        _pg_admin(base_url, f"CREATE DATABASE {name}")
    except Exception as exc:
        raise PostgresUnavailable(exc) from exc
    try:
        yield f"{base_url}/{name}"
    finally:
        _pg_admin(base_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def table_print(header: Iterable[str], rows: Iterable[str]) -> None:
    """Print a Markdown table: ``header``'s columns, its rule, then ``rows`` (each already a ``| … |`` line)."""
    header = list(header)
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print(row)
