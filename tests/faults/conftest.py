"""Fault injection: the production server and the commands as real processes, killed with real SIGKILLs.

``Server`` runs ``python -m prmsite.wsgi`` (uvicorn) in a process group of its own on a fixed port, so ``kill9()``
takes down the supervisor and its worker processes at once, as a crash of the machine would, and ``start()`` brings
it back on the same port. The same tests run on SQLite and on PostgreSQL (``DATABASE_URL``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.adapters.conftest import adapter_folder, adapter_zip  # noqa: F401 - fixtures of the storage scenario
from tests.rollouts.worker.conftest import dataset, stub  # noqa: F401 - fixtures of the rollout_worker scenario
from tests.servers import PROJECT_ROOT, database_url_for_subprocess, free_port


class Server:
    """``python -m prmsite.wsgi`` on the test database, which a test can kill -9 and start again."""

    def __init__(self, tmp_path: Path, *, wrap: list[str] | None = None, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"server-{self.port}.log"
        self.wrap = wrap or []
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url_for_subprocess(),
            "WEBSERVER_HOST": "127.0.0.1",
            "WEBSERVER_PORT": str(self.port),
            "WEBSERVER_WORKERS": "2",
            "WEBSERVER_ACCESS_LOG": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> Server:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*self.wrap, sys.executable, "-m", "prmsite.wsgi"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/rollout", timeout=2).status_code == 401:
                    return self
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"the server did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill9(self) -> None:
        """SIGKILL to the whole process group: the supervisor and every worker process die at once."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        # The kernel frees the port once the processes are gone; wait until nothing answers on it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                requests.get(f"{self.url}/rollout", timeout=0.5)
            except requests.ConnectionError:
                return
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.process = None


@pytest.fixture
def server_factory(transactional_db, tmp_path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(**env: str) -> Server:
        servers.append(Server(tmp_path, **env))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def token(transactional_db, django_user_model) -> str:
    from tests.factories import make_worker_token

    return make_worker_token(django_user_model.objects.create_user(username="fault-worker"))


def wait_for(condition: Callable[[], object], timeout: float = 60, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
