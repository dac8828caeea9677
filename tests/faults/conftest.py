"""Fault injection: the production server and the commands as real processes, killed with real SIGKILLs.

``server_factory`` (tests/conftest.py) runs ``python -m prmsite.wsgi`` (uvicorn) in a process group of its own on a
fixed port, so ``kill9()`` takes down the supervisor and its worker processes at once, as a crash of the machine
would, and ``start()`` brings it back on the same port. The same tests run on SQLite and on PostgreSQL
(``DATABASE_URL``).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.adapters.conftest import adapter_folder, adapter_zip  # noqa: F401 - fixtures of the storage scenario
from tests.factories import make_worker_token
from tests.rollouts.worker.conftest import dataset, stub  # noqa: F401 - fixtures of the rollout_worker scenario


@pytest.fixture
def token(transactional_db, django_user_model) -> str:
    return make_worker_token(django_user_model.objects.create_user(username="fault-worker"))


def wait_for(condition: Callable[[], object], timeout: float = 300, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill9(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
