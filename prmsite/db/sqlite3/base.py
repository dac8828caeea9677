"""Django's SQLite backend, with write transactions queued on an OS file lock instead of SQLite's busy handler.

Every transaction here starts with ``BEGIN IMMEDIATE`` (``transaction_mode``), so it holds the database's one write
lock from its first statement. When that lock is taken, SQLite's busy handler sleeps and tries again (1, 2, 5 … then
100 ms at a time until the busy timeout); the waiters never queue. Under contention a transaction that has backed off
to 100 ms sleeps keeps losing the lock to newcomers that find it free between two of its sleeps, so some requests wait
seconds while most wait milliseconds (bench/bench_load.py, SQLite: POST /rollout p99 of seconds under 64 clients).

Here a transaction first takes an exclusive ``flock`` on ``<database>.write-lock`` beside the database file, just
before ``BEGIN IMMEDIATE``, and lets it go when the transaction commits, rolls back or its connection closes. A waiter
then blocks in the kernel and is woken the moment the holder lets go: no sleeping through a free lock, no waiter
starved by the backoff. Every server process, management command and test using this backend queues on the same file.
A write statement outside a transaction (an ``UPDATE`` in autocommit mode) is a transaction of its own and queues the
same way: left to the busy handler it would hardly ever find the lock free between two queued transactions. The busy
timeout stays for other programs on the same file.

A writer waits at most the busy timeout (``OPTIONS["timeout"]``, ``SQLITE_BUSY_TIMEOUT_S``) for the queue, as it would
for SQLite's lock, and then fails with ``OperationalError("database is locked")`` (the API answers 503): a transaction
that never ends makes the others fail, not hang. The wait itself blocks in the kernel, in a helper thread when the
lock is taken (a blocking ``flock`` cannot time out); a waiter that gives up leaves its descriptor to that thread,
which lets the lock go and closes it as soon as it gets it.

A lock file descriptor belongs to one connection (flock locks belong to the open file, so two threads of a process
sharing one descriptor would not exclude each other). The kernel drops the lock of a process that dies.
``SQLITE_WRITE_QUEUE=0`` turns the queue off (``OPTIONS["write_queue"]``).

Every connection also knows ``prmsite_search_words(text)`` (``prmsite.core.search_words``): the triggers that keep
the forest page's word index (migration ``forests.0009_tree_words``) read a text's words with it, so a program that
writes nodes through another SQLite connection must register it too.
"""

from __future__ import annotations

import fcntl
import os
import threading

from django.db import OperationalError
from django.db.backends.sqlite3 import base

from prmsite.core.search_words import search_words_json

# Statements that write; one of these outside a transaction is a transaction of its own and queues like one.
_WRITES = ("insert", "update", "delete", "replace")


def _writes(query: str) -> bool:
    return query.lstrip()[:7].lower().startswith(_WRITES)


def flock_within(fd: int, timeout_s: float) -> bool:
    """Take an exclusive flock on ``fd``, waiting at most ``timeout_s``; False when it was not taken in time, in which
    case ``fd`` belongs to a helper thread from then on (it unlocks and closes it once it gets the lock)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    taken = threading.Event()
    guard = threading.Lock()
    abandoned = False

    def wait() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            else:
                taken.set()

    threading.Thread(target=wait, name="sqlite-write-queue", daemon=True).start()
    if taken.wait(timeout_s):
        return True
    with guard:
        if taken.is_set():
            return True
        abandoned = True
    return False


class QueuedCursorWrapper(base.SQLiteCursorWrapper):
    """Django's cursor; a write statement in autocommit mode (outside ``atomic``) takes the write queue around it."""

    queue: DatabaseWrapper | None = None

    def _alone(self, query: str) -> bool:
        db = self.queue
        return db is not None and not db._write_lock_held and not self.connection.in_transaction and _writes(query)

    def execute(self, query, params=None):
        if not self._alone(query):
            return super().execute(query, params)
        self.queue._write_lock_acquire()
        try:
            return super().execute(query, params)
        finally:
            self.queue._write_lock_release()

    def executemany(self, query, param_list):
        if not self._alone(query):
            return super().executemany(query, param_list)
        self.queue._write_lock_acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            self.queue._write_lock_release()


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock_fd: int | None = None
        self._write_lock_held = False

    def get_connection_params(self) -> dict:
        params = super().get_connection_params()
        params.pop("write_queue", None)  # ours, not sqlite3.connect's
        return params

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        connection.create_function("prmsite_search_words", 1, search_words_json, deterministic=True)
        return connection

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=QueuedCursorWrapper)
        cursor.queue = self
        return cursor

    def _write_lock_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        if (
            not self.settings_dict["OPTIONS"].get("write_queue", True)
            or self.is_in_memory_db()
            or name.startswith("file:")
        ):
            return None
        return f"{name}.write-lock"

    def _write_lock_acquire(self) -> None:
        if self._write_lock_held:
            return
        if self._write_lock_fd is None:
            path = self._write_lock_path()
            if path is None:
                return
            self._write_lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        timeout_s = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        if not flock_within(self._write_lock_fd, timeout_s):
            self._write_lock_fd = None  # the waiting thread owns it now
            raise OperationalError(f"database is locked (waited {timeout_s:g} s for the write queue)")
        self._write_lock_held = True

    def _write_lock_release(self) -> None:
        if self._write_lock_held and self._write_lock_fd is not None:
            self._write_lock_held = False
            fcntl.flock(self._write_lock_fd, fcntl.LOCK_UN)

    def _start_transaction_under_autocommit(self) -> None:
        self._write_lock_acquire()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._write_lock_release()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._write_lock_release()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._write_lock_release()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._write_lock_release()
            if self._write_lock_fd is not None:
                os.close(self._write_lock_fd)
                self._write_lock_fd = None
