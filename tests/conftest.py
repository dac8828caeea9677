"""Shared fixtures. The same suite runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import make_worker_token
from tests.servers import (
    PROJECT_ROOT,
    SERVER_START_TIMEOUT_S,
    ServerProcess,
    database_url_for_subprocess,
    free_port,
)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="PostgreSQL only (DATABASE_URL=postgres://…)")
    if connection.vendor != "postgresql":
        for item in items:
            if "requires_postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="a-long-test-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def worker_user(django_user_model):
    return django_user_model.objects.create_user(username="worker-1")


@pytest.fixture
def worker_token(worker_user) -> str:
    return make_worker_token(worker_user)


@pytest.fixture
def api(worker_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_token}")
    return client


@pytest.fixture
def production_server(transactional_db, tmp_path):
    """``python -m prmsite.wsgi`` (the production server: uvicorn, 3 worker processes) on a free port, on the test
    database."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "WEBSERVER_HOST": "127.0.0.1",
        "WEBSERVER_PORT": str(port),
        "WEBSERVER_WORKERS": "3",
        "WEBSERVER_ACCESS_LOG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server
    log_file = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "prmsite.wsgi"], cwd=PROJECT_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{base}/rollout", timeout=10).status_code == 401:
                    break
            except requests.RequestException:  # not listening yet, or too busy to answer in time
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {SERVER_START_TIMEOUT_S} s")
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
def server_factory(transactional_db, tmp_path):
    """Make ``ServerProcess``es (the production server on the test database, which a test can stop, kill -9 and start
    again on the same port); every one made is stopped at the end."""
    servers: list[ServerProcess] = []

    def make(**env: str) -> ServerProcess:
        servers.append(ServerProcess(tmp_path, **env))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


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


@pytest.fixture
def browser(tmp_path):
    """A headless chromium driven by Selenium (see tests/browser.py); mark the test with ``requires_chromium``."""
    from tests.browser import chromium

    yield from chromium(tmp_path / "chromium-profile")
