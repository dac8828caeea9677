"""The body guard in front of Django (issue 17, item 3), driven directly: who may send a body, how long it may take,
and how much all bodies in flight may hold; the decisions come before the body is read."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest
from django.test import override_settings

from prmsite.body_guard import (
    ANONYMOUS_BODY_REFUSED,
    BODIES_BUSY,
    BODY_TIMED_OUT,
    BodyLimitMiddleware,
    CredentialCheck,
    session_is_logged_in,
    token_is_live,
)
from tests.factories import make_worker_token

TOKEN = "ab" * 32


def scope_of(*, path="/rollout", length: int | None = None, chunked=False, token: str | None = None, cookie=None):
    headers = [(b"host", b"testserver")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return {"type": "http", "method": "POST", "path": path, "query_string": b"", "headers": headers}


class Reader:
    """An app that reads the whole body as Django does (stopping at a disconnect), then answers 200."""

    def __init__(self, *, hold: asyncio.Event | None = None, fail: bool = False) -> None:
        self.calls = 0
        self.read = 0
        self.hold = hold
        self.fail = fail
        self.disconnected = False

    async def __call__(self, scope, receive, send):
        self.calls += 1
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                return
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise RuntimeError("the view failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class Sender:
    """The client's side: a body in chunks (then, with ``stall``, nothing more), and what came back."""

    def __init__(self, chunks: list[bytes] | None = None, *, stall=False, trickle_s: float | None = None) -> None:
        self.chunks = list(chunks or [])
        self.stall = stall
        self.trickle_s = trickle_s
        self.asked = 0
        self.sent: list[dict] = []

    async def receive(self):
        self.asked += 1
        if self.trickle_s is not None:
            await asyncio.sleep(self.trickle_s)
            return {"type": "http.request", "body": b"x", "more_body": True}
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks) or self.stall}
        await asyncio.Event().wait()  # a stalled client: nothing more, ever
        raise AssertionError("unreachable")

    async def send(self, message):
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m["headers"] for m in self.sent if m["type"] == "http.response.start"))

    @property
    def json(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body"))


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


async def trusted(scope):
    return True


async def anonymous(scope):
    return False


def test_an_anonymous_body_beyond_the_bound_is_refused_with_401_before_it_is_read():
    app, client = Reader(), Sender([b"x" * 100_000])
    run(BodyLimitMiddleware(app)(scope_of(length=10_000_000 - 1), client.receive, client.send))
    assert client.status == 401 and client.json["code"] == "not_authenticated"
    assert client.json["detail"] == ANONYMOUS_BODY_REFUSED.format(limit=64 * 1024)
    assert client.headers[b"connection"] == b"close" and client.headers[b"www-authenticate"] == b"Token"
    assert app.calls == 0 and client.asked == 0  # not a byte read


def test_a_small_anonymous_body_goes_on_to_django_as_a_login_form_must():
    app, client = Reader(), Sender([b"username=a&password=b"])
    run(BodyLimitMiddleware(app)(scope_of(path="/admin/login/", length=21), client.receive, client.send))
    assert client.status == 200 and app.read == 21


def test_a_live_token_may_send_a_large_body_and_is_looked_up_once():
    asked = []
    check = CredentialCheck(token_check=lambda token: asked.append(token) or True)
    middleware = BodyLimitMiddleware(Reader(), credentials=check)
    for _ in range(3):
        client = Sender([b"x" * 500_000, b"x" * 500_000])
        run(middleware(scope_of(length=1_000_000, token=TOKEN), client.receive, client.send))
        assert client.status == 200
    assert asked == [TOKEN.encode()]  # the verdict is kept: one lookup for three posts


def test_an_invalid_token_is_refused_before_the_body_is_read_and_the_verdict_is_kept():
    check = CredentialCheck(token_check=lambda token: False)
    app = Reader()
    middleware = BodyLimitMiddleware(app, credentials=check)
    for _ in range(3):
        client = Sender([b"x" * 200_000])
        run(middleware(scope_of(length=200_000, token=TOKEN), client.receive, client.send))
        assert client.status == 401 and client.asked == 0
    assert check.lookups == 1 and app.calls == 0


@pytest.mark.parametrize("header", ["Token abc", "Token " + "g" * 64, "Bearer " + TOKEN, "Token a b"])
def test_a_malformed_token_costs_no_lookup(header):
    check = CredentialCheck(token_check=lambda token: pytest.fail("looked up"))
    scope = scope_of(length=200_000)
    scope["headers"].append((b"authorization", header.encode()))
    client = Sender()
    run(BodyLimitMiddleware(Reader(), credentials=check)(scope, client.receive, client.send))
    assert client.status == 401 and check.lookups == 0


def test_a_chunked_anonymous_body_is_cut_off_at_the_bound():
    app, client = Reader(), Sender([b"x" * 40_000] * 10)
    run(BodyLimitMiddleware(app, credentials=anonymous)(scope_of(chunked=True), client.receive, client.send))
    assert client.status == 401
    assert app.disconnected and app.read == 40_000  # the second chunk passed 64 KiB: Django was told to stop there


@override_settings(WEBSERVER_BODY_TIMEOUT_S=1, WEBSERVER_BODY_MIN_BYTES_PER_S=10**9)
def test_a_stalled_body_is_cut_off_with_408_and_the_connection_closed():
    app, client = Reader(), Sender([b"x" * 1000], stall=True)
    run(BodyLimitMiddleware(app, credentials=trusted)(scope_of(length=5000), client.receive, client.send))
    assert client.status == 408 and client.json["code"] == "request_timeout"
    assert client.json["detail"] == BODY_TIMED_OUT.format(seconds=1 + 5000 / 10**9)
    assert client.headers[b"connection"] == b"close"
    assert app.disconnected  # Django saw a disconnect: it closes its spooled body (temporary disk included)


@override_settings(WEBSERVER_BODY_TIMEOUT_S=1, WEBSERVER_BODY_MIN_BYTES_PER_S=10**9)
def test_a_trickling_body_is_cut_off_at_its_deadline_too():
    app, client = Reader(), Sender(trickle_s=0.05)
    middleware = BodyLimitMiddleware(app, credentials=trusted)
    run(middleware(scope_of(length=10**6), client.receive, client.send))
    assert client.status == 408
    assert app.read < 10**6  # it never arrived
    assert middleware.held == 0


@override_settings(WEBSERVER_BODY_BUDGET_BYTES=1_000_000)
def test_bodies_beyond_the_process_budget_are_refused_with_503_and_retry_after():
    hold = asyncio.Event()
    holder_app = Reader(hold=hold)
    refused_app = Reader()

    async def scenario():
        middleware = BodyLimitMiddleware(holder_app, credentials=trusted)
        holder = Sender([b"x" * 800_000])
        task = asyncio.create_task(middleware(scope_of(length=800_000), holder.receive, holder.send))
        await asyncio.sleep(0.1)
        assert middleware.held == 800_000
        middleware.app = refused_app
        refused = Sender([b"x" * 300_000])
        await middleware(scope_of(length=300_000), refused.receive, refused.send)
        hold.set()
        await task
        assert middleware.held == 0
        after = Sender([b"x" * 300_000])
        await middleware(scope_of(length=300_000), after.receive, after.send)
        return refused, after

    refused, after = run(scenario())
    assert refused.status == 503 and refused.json["detail"] == BODIES_BUSY
    assert refused.headers[b"retry-after"] == b"5" and refused.asked == 0 and refused_app.calls == 1
    assert after.status == 200


@override_settings(WEBSERVER_BODY_BUDGET_BYTES=8 * 100_000)
def test_anonymous_bodies_share_an_eighth_of_the_budget_and_cannot_crowd_out_workers():
    hold = asyncio.Event()

    async def scenario():
        middleware = BodyLimitMiddleware(Reader(hold=hold), credentials=anonymous)
        first = Sender([b"x" * 60_000])
        task = asyncio.create_task(middleware(scope_of(length=60_000), first.receive, first.send))
        await asyncio.sleep(0.1)
        second = Sender([b"x" * 60_000])
        await middleware(scope_of(length=60_000), second.receive, second.send)
        middleware.credentials = trusted
        middleware.app = Reader()
        worker = Sender([b"x" * 600_000])
        await middleware(scope_of(length=600_000), worker.receive, worker.send)
        hold.set()
        await task
        return second, worker

    second, worker = run(scenario())
    assert second.status == 503
    assert worker.status == 200


@override_settings(WEBSERVER_BODY_BUDGET_BYTES=1_000_000)
def test_a_chunked_body_draws_on_the_budget_as_it_arrives():
    app, client = Reader(), Sender([b"x" * 400_000] * 3)
    middleware = BodyLimitMiddleware(app, credentials=trusted)
    run(middleware(scope_of(chunked=True), client.receive, client.send))
    assert client.status == 503 and app.read == 800_000 and app.disconnected
    assert middleware.held == 0


def test_the_budget_is_given_back_when_the_app_fails():
    middleware = BodyLimitMiddleware(Reader(fail=True), credentials=trusted)
    client = Sender([b"x" * 1000])
    with pytest.raises(RuntimeError):
        run(middleware(scope_of(length=1000), client.receive, client.send))
    assert middleware.held == 0


def test_a_large_body_while_credentials_cannot_be_checked_is_a_503():
    async def unreachable(scope):
        return None

    client = Sender([b"x" * 100_000])
    run(BodyLimitMiddleware(Reader(), credentials=unreachable)(scope_of(length=100_000), client.receive, client.send))
    assert client.status == 503 and client.json["code"] == "database_unavailable"


def test_requests_without_a_body_pass_untouched():
    app, client = Reader(), Sender([b""])
    scope = {**scope_of(), "method": "GET"}
    run(BodyLimitMiddleware(app, credentials=lambda s: pytest.fail("checked"))(scope, client.receive, client.send))
    assert client.status == 200


@pytest.mark.django_db(transaction=True)
def test_tokens_and_sessions_are_checked_against_the_database(django_user_model, client):
    # The checks run in a thread of their own, on a connection of their own: committed data only.
    user = django_user_model.objects.create_user(username="labeller")
    token = make_worker_token(django_user_model.objects.create_user(username="worker"))
    assert token_is_live(token.encode())
    assert not token_is_live(secrets.token_hex(32).encode())
    client.force_login(user)
    session_key = client.cookies["sessionid"].value
    assert session_is_logged_in(session_key)
    assert not session_is_logged_in("x" * 32)
    check = CredentialCheck()
    assert run(check(scope_of(token=token))) is True
    assert run(check(scope_of(cookie=f"csrftoken=x; sessionid={session_key}"))) is True
    assert run(check(scope_of(cookie="sessionid=" + "y" * 32))) is False
    user.is_active = False
    user.save()
    assert not session_is_logged_in(session_key)
