"""Fixtures of the API tests: servers on free ports, on the test database. (The worker, its token and its client
are in tests/conftest.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.factories import rollout_fields

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def rollout_body(**fields) -> dict:
    return rollout_fields(**{"worker": "rollout-worker", **fields})


def database_url_for_subprocess() -> str:
    """DATABASE_URL of the database this test run uses, for a server started in a subprocess."""
    from django.db import connection

    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or "postgres"
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = f"{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 5432}"
    return f"postgres://{user}{password}@{host}/{settings['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def wsgi_server(transactional_db, tmp_path):
    """``python -m prmsite.wsgi`` (gunicorn, 3 worker processes of 4 threads) on a free port, on the test database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "WEBSERVER_HOST": "127.0.0.1",
        "WEBSERVER_PORT": str(port),
        "WEBSERVER_WORKERS": "3",
        "WEBSERVER_THREADS": "4",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server
    log_file = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prmsite.wsgi"], cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{base}/rollout", timeout=2).status_code == 401:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


@pytest.fixture
def live_api_server(transactional_db, live_server):
    """pytest-django's live server, its request threads closing their database connection after every request.

    The live server keeps HTTP connections alive, and with persistent database connections (CONN_MAX_AGE) a request
    thread would hold its session open after the test, so the test database could not be dropped at the end.
    """
    from django.db import connections

    settings_dict = connections.settings["default"]
    previous = settings_dict["CONN_MAX_AGE"]
    settings_dict["CONN_MAX_AGE"] = 0
    try:
        yield live_server
    finally:
        settings_dict["CONN_MAX_AGE"] = previous
