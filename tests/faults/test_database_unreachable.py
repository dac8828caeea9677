"""(f) The database unreachable for a while: every request fails cleanly with 503, the API's one JSON error shape
and a Retry-After (a plain page for a browser), never a 500 or Django's error page; the server recovers by itself
when the database is back.

SQLite: another process holds the write lock beyond the server's busy timeout (writes fail, reads go on, as WAL
allows). PostgreSQL: the test database refuses new connections (``ALTER DATABASE … ALLOW_CONNECTIONS false``) and
the server's open connections are terminated (``pg_terminate_backend``); the PostgreSQL server itself keeps running.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator

import psycopg
import requests
from django.db import connection

from tests.rollouts.conftest import rollout_body

STAFF_PASSWORD = "a-long-fault-password"
RETRY_AFTER = "5"
# How long every server process may take to find the database back: generous, so that a busy machine passes.
RECOVERY_TIMEOUT_S = 180


@contextlib.contextmanager
def database_unreachable() -> Iterator[None]:
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        locker = sqlite3.connect(name, timeout=30, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    quoted = connection.ops.quote_name(name)
    settings = connection.settings_dict
    # From the maintenance database: a database cannot refuse connections to itself.
    admin = psycopg.connect(
        host=settings["HOST"] or "127.0.0.1",
        port=settings["PORT"] or 5432,
        user=settings["USER"] or "postgres",
        password=settings["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        yield
    finally:
        admin.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")
        admin.close()
        # This test process lost its connections too (its pool's among them): start afresh.
        connection.close()
        if hasattr(connection, "close_pool"):
            connection.close_pool()


def _assert_clean_503(response: requests.Response, *, html: bool = False) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Retry-After"] == RETRY_AFTER
    if html:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "Service unavailable" in response.text and "Traceback" not in response.text
    else:
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {"detail": response.json()["detail"], "code": "database_unavailable"}


def until_recovered(send: Callable[[], requests.Response], *, html: bool = False) -> requests.Response:
    """The first answer of ``send`` that is not a 503, trying again while it is one (each a clean 503) for up to
    ``RECOVERY_TIMEOUT_S``. Safe for requests that a 503 left undone (a write with an idempotency key, a claim, a
    login)."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        response = send()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        _assert_clean_503(response, html=html)
        time.sleep(0.5)


def test_an_unreachable_database_is_a_503_with_retry_after_and_the_server_recovers(
    server_factory, token, django_user_model
):
    django_user_model.objects.create_user(username="staff", password=STAFF_PASSWORD, is_staff=True, is_superuser=True)
    server = server_factory(SQLITE_BUSY_TIMEOUT_S="1", DATABASE_POOL_TIMEOUT_S="1").start()
    api = requests.Session()
    api.headers["Authorization"] = f"Token {token}"
    browser = requests.Session()
    browser.headers["Accept"] = "text/html"
    login = f"{server.url}/admin/login/"
    assert browser.get(login, timeout=60).status_code == 200
    form = {"username": "staff", "password": STAFF_PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
    assert api.post(f"{server.url}/rollout", json=rollout_body(idempotency_key="before"), timeout=60).ok
    staff = requests.Session()  # logged in before the outage: its session lives in the database
    staff.headers["Accept"] = "text/html"
    staff.get(login, timeout=60)
    staff_form = {**form, "csrfmiddlewaretoken": staff.cookies["csrftoken"]}
    assert staff.post(login, data=staff_form, headers={"Referer": login}, timeout=60, allow_redirects=False).ok
    assert staff.get(f"{server.url}/forests/", timeout=60, allow_redirects=False).status_code == 200

    refused = 0
    with database_unreachable():
        for number in range(2):
            body = rollout_body(idempotency_key=f"during-{number}")
            _assert_clean_503(api.post(f"{server.url}/rollout", json=body, timeout=60))
            _assert_clean_503(api.get(f"{server.url}/rollout?prm_version=v&limit=4", timeout=60))
            _assert_clean_503(api.get(f"{server.url}/rollout?prm_version=v&limit=4&wait=1", timeout=60))
            refused += 3
        during = browser.post(login, data=form, headers={"Referer": login}, timeout=60, allow_redirects=False)
        _assert_clean_503(during, html=True)
        refused += 1
        if connection.vendor == "postgresql":  # reads fail too
            _assert_clean_503(api.get(f"{server.url}/prm_adapters", timeout=60))
            _assert_clean_503(staff.get(f"{server.url}/forests/", timeout=60, allow_redirects=False), html=True)
            refused += 2
    assert refused >= 7

    # Back by itself: no restart of the web server. Each server process finds out on its own request that the
    # database is back, so any request may still meet a process that has not: it is retried while it is a clean 503.
    response = until_recovered(
        lambda: api.post(f"{server.url}/rollout", json=rollout_body(idempotency_key="after"), timeout=60)
    )
    assert response.ok, response.text
    claim = until_recovered(lambda: api.get(f"{server.url}/rollout?prm_version=v&limit=10", timeout=60))
    assert claim.status_code == 200, claim.text
    assert len(claim.json()) == 2  # "before" and "after": nothing was stored while the database was away
    after = until_recovered(
        lambda: browser.post(login, data=form, headers={"Referer": login}, timeout=60, allow_redirects=False),
        html=True,
    )
    assert after.status_code == 302
    log = server.log.read_text()
    assert "Internal Server Error" not in log
    assert "Database unavailable, answered 503" in log  # the operator sees why (with the traceback)
