"""SQLite's write queue (prmsite/db/sqlite3): every write transaction, and every write statement outside one, holds an
exclusive flock on ``<database>.write-lock`` while it runs, so writers wait in the kernel instead of polling."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, connections, transaction

from prmsite.db.sqlite3 import base
from prmsite.db.sqlite3.base import flock_within
from rollouts.models import Rollout
from tests.factories import make_rollout

pytestmark = pytest.mark.skipif("sqlite3" not in settings.DATABASES["default"]["ENGINE"], reason="SQLite only")

ROOT = Path(__file__).resolve().parent.parent.parent


def _lock_file() -> str:
    return f"{connection.settings_dict['NAME']}.write-lock"


def _lock_is_free() -> bool:
    """Whether another open file (as another process would hold) could take the lock now."""
    fd = os.open(_lock_file(), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


@pytest.mark.django_db(transaction=True)
def test_a_write_transaction_holds_the_lock_file_until_it_commits_or_rolls_back():
    assert _lock_is_free()
    with transaction.atomic():
        make_rollout()
        assert not _lock_is_free()
    assert _lock_is_free()
    with pytest.raises(RuntimeError), transaction.atomic():
        make_rollout()
        assert not _lock_is_free()
        raise RuntimeError
    assert _lock_is_free()


@pytest.mark.django_db(transaction=True)
def test_a_write_statement_outside_a_transaction_takes_the_lock_too(monkeypatch):
    rollout = make_rollout()
    calls: list[int] = []
    real = base.fcntl.flock
    monkeypatch.setattr(base.fcntl, "flock", lambda fd, op: (calls.append(op), real(fd, op))[1])
    Rollout.objects.filter(pk=rollout.pk).update(worker="someone else")
    assert calls == [fcntl.LOCK_EX | fcntl.LOCK_NB, fcntl.LOCK_UN]  # free: taken at once, no waiting thread
    calls.clear()
    assert Rollout.objects.filter(pk=rollout.pk).count() == 1  # reads take nothing
    assert calls == []


@pytest.mark.django_db(transaction=True)
def test_a_writer_in_another_process_waits_for_the_lock_and_then_writes():
    """Another process writing while this one holds a transaction blocks in flock (not on SQLite's busy handler) and
    goes on the moment the transaction commits."""
    rollout = make_rollout()
    script = (
        "import django, os, time; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'prmsite.settings'); django.setup()\n"
        "from django.db import connection\n"
        f"connection.settings_dict['NAME'] = {connection.settings_dict['NAME']!r}\n"
        "from rollouts.models import Rollout\n"
        "print('ready', flush=True); started = time.monotonic()\n"
        f"Rollout.objects.filter(pk={rollout.pk}).update(worker='other process')\n"
        "print(f'{time.monotonic() - started:.3f}', flush=True)\n"
    )
    env = {**os.environ, "SQLITE_BUSY_TIMEOUT_S": "20"}
    with transaction.atomic():
        Rollout.objects.filter(pk=rollout.pk).update(worker="this process")
        child = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(2)
        assert child.poll() is None
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert float(out.strip()) >= 1.5
    assert Rollout.objects.get(pk=rollout.pk).worker == "other process"


@pytest.mark.django_db(transaction=True)
def test_a_writer_waits_no_longer_than_the_busy_timeout_then_fails_as_locked():
    """A transaction that does not end makes the other writers fail after the busy timeout (the API's 503), not hang."""
    rollout = make_rollout()
    script = (
        "import django, os, sys, time; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'prmsite.settings')\n"
        "django.setup()\n"
        "from django.db import OperationalError, connection\n"
        f"connection.settings_dict['NAME'] = {connection.settings_dict['NAME']!r}\n"
        "from rollouts.models import Rollout\n"
        "print('ready', flush=True); started = time.monotonic()\n"
        "try:\n"
        f"    Rollout.objects.filter(pk={rollout.pk}).update(worker='other process')\n"
        "except OperationalError as exc:\n"
        "    timeout = connection.settings_dict['OPTIONS']['timeout']\n"
        "    print(f'{time.monotonic() - started:.3f} {timeout} {exc}', flush=True); sys.exit(3)\n"
    )
    env = {**os.environ, "SQLITE_BUSY_TIMEOUT_S": "1"}
    with transaction.atomic():
        Rollout.objects.filter(pk=rollout.pk).update(worker="this process")
        child = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        out, err = child.communicate(timeout=120)  # while this transaction is still open
    assert child.returncode == 3, err
    waited, timeout, message = out.strip().split(" ", 2)
    # It waited the busy timeout it was given (1 s), then failed; the communicate above gives up on a hang.
    assert timeout == "1" and float(waited) >= 0.9
    assert "database is locked" in message
    assert Rollout.objects.get(pk=rollout.pk).worker == "this process"


def test_a_waiter_that_gave_up_lets_the_lock_go_once_it_gets_it(tmp_path):
    path = tmp_path / "db.write-lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    waiter = os.open(path, os.O_RDWR)
    assert not flock_within(waiter, 0.2)
    fcntl.flock(holder, fcntl.LOCK_UN)
    probe = os.open(path, os.O_RDWR)
    deadline = time.monotonic() + 10
    while True:  # the abandoned waiter takes the lock, then lets it go and closes its descriptor
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            assert time.monotonic() < deadline, "the abandoned waiter kept the lock"
            time.sleep(0.01)
    with pytest.raises(BlockingIOError):  # the probe holds it now
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(probe)
    assert flock_within(holder, 5)
    os.close(holder)


@pytest.mark.django_db(transaction=True)
def test_threads_of_one_process_exclude_each_other():
    """Each connection has a lock file of its own (flock locks belong to the open file), so two threads' transactions
    never overlap."""
    inside = threading.Event()
    overlaps: list[bool] = []
    active = [0]

    def write() -> None:
        try:
            for _ in range(5):
                with transaction.atomic():
                    active[0] += 1
                    overlaps.append(active[0] > 1)
                    inside.set()
                    make_rollout()
                    time.sleep(0.01)
                    active[0] -= 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inside.is_set()
    assert not any(overlaps)
    assert Rollout.objects.count() == 15
