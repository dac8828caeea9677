"""The production server's request threads (``prmsite.asgi.RequestThreads``): a request runs in a thread kept from
one request to the next, with its database connection, instead of a new thread (and on SQLite a new connection) for
every request."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_started
from django.db import connection, connections
from django.db.backends.signals import connection_created

from prmsite.asgi import OneHopASGIHandler, RequestThreads, django_application
from tests.factories import make_worker_token


def test_a_thread_given_back_idle_serves_the_next_request():
    threads = RequestThreads(idle_max=2)
    try:
        first = threads.take()
        ident = first.submit(threading.get_ident).result(timeout=10)
        threads.give_back(first)
        again = threads.take()
        assert again is first
        assert again.submit(threading.get_ident).result(timeout=10) == ident
        threads.give_back(again)
    finally:
        threads.close()


def test_a_thread_still_busy_when_given_back_is_not_kept_and_ends_after_its_work():
    threads = RequestThreads(idle_max=2)
    release = threading.Event()
    busy = threads.take()
    running = busy.submit(release.wait, 10)  # a cancelled request's view, still running in its thread
    threads.give_back(busy)
    other = threads.take()
    assert other is not busy
    release.set()
    assert running.result(timeout=10) is True
    busy._thread.join(timeout=10)
    assert not busy._thread.is_alive()
    threads.give_back(other)
    threads.close()
    assert not other._thread.is_alive()


def test_no_more_threads_than_idle_max_are_kept():
    threads = RequestThreads(idle_max=1)
    taken = [threads.take() for _ in range(3)]
    for thread in taken:
        threads.give_back(thread)
    for thread in taken[1:]:
        thread._thread.join(timeout=10)
    assert [thread._thread.is_alive() for thread in taken] == [True, False, False]
    threads.close()
    assert not taken[0]._thread.is_alive()


def test_an_error_reaches_the_caller_and_the_thread_stays_usable():
    threads = RequestThreads()
    thread = threads.take()
    try:
        with pytest.raises(ZeroDivisionError):
            thread.submit(lambda: 1 / 0).result(timeout=10)
        assert thread.idle
        assert thread.submit(lambda: 2).result(timeout=10) == 2
    finally:
        threads.give_back(thread)
        threads.close()


@pytest.mark.django_db(transaction=True)
def test_a_thread_that_ends_closes_its_database_connection():
    threads = RequestThreads()
    thread = threads.take()

    def open_connection():
        connection.ensure_connection()
        return connections["default"]

    wrapper = thread.submit(open_connection).result(timeout=10)
    assert wrapper.connection is not None
    threads.give_back(thread)
    threads.close()
    assert wrapper.connection is None


@pytest.mark.django_db(transaction=True)
def test_the_production_handler_serves_requests_one_after_another_in_one_thread_and_connection(monkeypatch):
    token = make_worker_token(get_user_model().objects.create_user(username="threads"))
    threads = RequestThreads()
    monkeypatch.setattr(OneHopASGIHandler, "threads", threads)
    idents: list[int] = []
    opened: list[int] = []

    def started(**kwargs):
        idents.append(threading.get_ident())

    def created(sender, connection, **kwargs):
        opened.append(threading.get_ident())

    async def request() -> int:
        status: list[int] = []
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/prm_adapters",
            "query_string": b"",
            "headers": [(b"authorization", f"Token {token}".encode()), (b"host", b"testserver")],
        }
        sent = []

        async def receive():
            if sent:
                await asyncio.sleep(3600)
            sent.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await django_application(scope, receive, send)
        return status[0]

    async def three_requests() -> list[int]:
        return [await request() for _ in range(3)]

    request_started.connect(started)
    connection_created.connect(created)
    try:
        assert asyncio.run(three_requests()) == [200, 200, 200]
    finally:
        request_started.disconnect(started)
        connection_created.disconnect(created)
        threads.close()
    assert len(idents) == 3 and len(set(idents)) == 1 and idents[0] != threading.get_ident()
    if connection.vendor == "sqlite":  # PostgreSQL's pool hands a connection to every request
        assert len(opened) == 1
