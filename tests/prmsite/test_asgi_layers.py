"""The ASGI layers in front of Django (issue 7, item 4), driven directly with a scripted inner app: a long-poll waits
in the event loop, stops when its client leaves, and gives back what an attempt claimed for a client that left; an
oversize body is refused before the app reads it."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import override_settings

from prmsite.asgi import BodyLimitMiddleware, LongPollMiddleware, long_poll_concurrency


class ScriptedApp:
    """An inner app answering GET /rollout from a script of bodies, and recording every call."""

    def __init__(self, answers: list[bytes], *, delay_s: float = 0.0) -> None:
        self.answers = list(answers)
        self.delay_s = delay_s
        self.calls: list[tuple[str, str, bytes, dict]] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.calls.append(
            (scope["method"], scope["path"], scope["query_string"], dict(scope["headers"]), message.get("body", b""))
        )
        await asyncio.sleep(self.delay_s)
        claim = scope["path"] == "/rollout" and scope["method"] == "GET"
        body = self.answers.pop(0) if claim and self.answers else b"[]"
        if scope["path"] == "/rollout/release":
            body = b"1"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def request_scope(path="/rollout", query=b"prm_version=v&wait=5", method="GET"):
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(b"authorization", b"Token abc"), (b"host", b"testserver")],
    }


class Client:
    """The real client's side of the ASGI conversation."""

    def __init__(self, *, leave_after_s: float | None = None) -> None:
        self.leave_after_s = leave_after_s
        self.sent: list[dict] = []
        self._first = True

    async def receive(self):
        if self._first:
            self._first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        if self.leave_after_s is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.leave_after_s)
        return {"type": "http.disconnect"}

    async def send(self, message):
        self.sent.append(message)

    @property
    def status(self):
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def body(self):
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


def attempts(app):
    return [call for call in app.calls if call[:2] == ("GET", "/rollout")]


def test_a_long_poll_calls_the_endpoint_without_waiting_until_something_is_claimed():
    app = ScriptedApp([b"[]", b"[]", b'[{"id": 7}]'])
    client = Client()
    run(LongPollMiddleware(app, intervals_s=(0.01,))(request_scope(), client.receive, client.send))
    assert client.status == 200 and json.loads(client.body) == [{"id": 7}]
    assert len(attempts(app)) == 3
    assert all(b"wait=0" in query and b"prm_version=v" in query for _, _, query, _, _ in attempts(app))


def test_a_long_poll_answers_an_empty_list_when_its_wait_is_over():
    app = ScriptedApp([])
    client = Client()
    scope = request_scope(query=b"prm_version=v&wait=0.3")
    run(LongPollMiddleware(app, intervals_s=(0.05,))(scope, client.receive, client.send))
    assert client.body == b"[]"
    assert 3 <= len(attempts(app)) <= 8


def test_a_long_poll_stops_when_its_client_leaves_and_claims_nothing_more():
    app = ScriptedApp([])
    client = Client(leave_after_s=0.2)

    async def scenario():
        await LongPollMiddleware(app, intervals_s=(0.05,))(
            request_scope(query=b"prm_version=v&wait=20"), client.receive, client.send
        )

    run(scenario())
    assert client.sent == []  # nothing to answer: the client is gone
    assert len(attempts(app)) <= 6  # it stopped at once, not after 20 s


def test_rollouts_claimed_for_a_client_that_left_are_given_back_with_its_credentials():
    # The client leaves while an attempt is claiming: the attempt finishes (its leases are written), then they are
    # released at once instead of staying leased to nobody for the lease time.
    app = ScriptedApp([b'[{"id": 3}, {"id": 5}]'], delay_s=0.3)
    client = Client(leave_after_s=0.05)
    run(LongPollMiddleware(app)(request_scope(), client.receive, client.send))
    release = [call for call in app.calls if call[1] == "/rollout/release"]
    assert len(release) == 1
    method, _, _, headers, body = release[0]
    assert method == "POST" and headers[b"authorization"] == b"Token abc"
    assert json.loads(body) == {"prm_version": "v", "rollout_ids": [3, 5]}
    assert client.sent == []


def test_a_stored_rollout_wakes_this_processes_long_polls_at_once():
    # The poll's next attempt is an hour away and its wait a minute, longer than ``run`` waits for the scenario: only
    # the stored rollout waking it can end it in time.
    app = ScriptedApp([b"[]", b'[{"id": 9}]'])
    middleware = LongPollMiddleware(app, intervals_s=(3600.0,))
    client = Client()
    poster = Client()

    async def scenario():
        poll = asyncio.create_task(
            middleware(request_scope(query=b"prm_version=v&wait=60"), client.receive, client.send)
        )
        await asyncio.sleep(0.1)
        await middleware(request_scope(method="POST", query=b""), poster.receive, poster.send)
        await poll

    run(scenario())
    assert json.loads(client.body) == [{"id": 9}]
    claims = [call for call in app.calls if call[:2] == ("GET", "/rollout")]
    assert len(claims) == 2  # the first attempt, and the one the stored rollout started


def test_a_stored_rollout_wakes_one_waiting_long_poll_per_version_not_all():
    app = ScriptedApp([])
    middleware = LongPollMiddleware(app, intervals_s=(10.0,))

    async def scenario():
        clients = [Client() for _ in range(5)] + [Client()]
        scopes = [request_scope(query=b"prm_version=a&wait=30")] * 5 + [request_scope(query=b"prm_version=b&wait=30")]
        polls = [asyncio.create_task(middleware(s, c.receive, c.send)) for s, c in zip(scopes, clients, strict=True)]
        await asyncio.sleep(0.2)
        before = len(attempts(app))
        poster = Client()
        await middleware(request_scope(method="POST", query=b""), poster.receive, poster.send)
        await asyncio.sleep(0.2)
        woken = len(attempts(app)) - before
        for poll in polls:
            poll.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        return before, woken

    before, woken = run(scenario())
    assert before == 2  # one attempt per kind (the five of version a share theirs), then they wait
    assert woken == 2  # the oldest waiter of version a and the one of version b


@pytest.mark.parametrize("query", [b"prm_version=v", b"prm_version=v&wait=0", b"prm_version=v&wait=nan", b"wait=999"])
def test_requests_that_are_no_valid_long_poll_go_to_the_endpoint_as_they_are(query):
    app = ScriptedApp([b"[]"])
    client = Client()
    run(LongPollMiddleware(app)(request_scope(query=query), client.receive, client.send))
    assert [call[2] for call in app.calls] == [query]


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_declared_oversize_body_is_refused_before_the_app_runs():
    app = ScriptedApp([])
    client = Client()
    scope = {**request_scope(method="POST", query=b""), "headers": [(b"content-length", b"100000000")]}
    run(BodyLimitMiddleware(app)(scope, client.receive, client.send))
    assert client.status == 413 and json.loads(client.body)["code"] == "too_large"
    assert app.calls == []


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_a_chunked_body_is_cut_off_once_it_passes_the_limit():
    chunks = [b"x" * 40_000] * 10

    async def receive():
        return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}

    seen = {}

    async def app(scope, receive_, send):
        total = 0
        while True:
            message = await receive_()
            if message["type"] == "http.disconnect":
                seen["stopped_at"] = total
                return
            total += len(message["body"])

    async def trusted(scope):
        return True

    client = Client()
    scope = request_scope(method="POST", query=b"")
    scope["headers"] = [*scope["headers"], (b"transfer-encoding", b"chunked")]
    run(BodyLimitMiddleware(app, credentials=trusted)(scope, receive, client.send))
    assert client.status == 413
    # The limit is 1000 + 64 KiB of multipart room: the second chunk passes it, and Django is told to stop there.
    assert seen["stopped_at"] == 40_000 and len(chunks) == 8


def test_adapter_uploads_have_their_own_limit(settings):
    settings.PRM_ADAPTER_MAX_BYTES = 123
    assert BodyLimitMiddleware.limit_for({"path": "/prm_adapter"}) == 123
    assert BodyLimitMiddleware.limit_for({"path": "/rollout"}) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 64 * 1024


# --- Many long-polls (issue 17, item 6) ------------------------------------------------------------------------------


class CountingApp(ScriptedApp):
    """A scripted app that records how many calls run at once, and answers the release from a script of statuses."""

    def __init__(self, answers, *, delay_s=0.0, release_statuses=()):
        super().__init__(answers, delay_s=delay_s)
        self.running = 0
        self.most_at_once = 0
        self.release_statuses = list(release_statuses)

    async def __call__(self, scope, receive, send):
        if scope["path"] == "/rollout/release" and self.release_statuses:
            await receive()
            self.calls.append((scope["method"], scope["path"], b"", {}, b""))
            status = self.release_statuses.pop(0)
            await send({"type": "http.response.start", "status": status, "headers": []})
            await send({"type": "http.response.body", "body": b'{"code": "database_unavailable"}'})
            return
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.running -= 1


def token_scope(token: str, query=b"prm_version=v&wait=1"):
    scope = request_scope(query=query)
    scope["headers"] = [(b"authorization", f"Token {token}".encode()), (b"host", b"testserver")]
    return scope


def test_long_polls_run_at_most_the_configured_number_of_claim_attempts_at_once():
    # Each attempt is a thread and a database connection: 500 long-polls used to run 500 of them at once, and
    # unrelated requests waited for a connection.
    app = CountingApp([], delay_s=0.05)
    middleware = LongPollMiddleware(app, intervals_s=(0.05,), concurrency=3)

    async def scenario():
        clients = [Client() for _ in range(30)]
        await asyncio.gather(
            *(
                middleware(token_scope(f"t{i}", b"prm_version=v&wait=0.5"), c.receive, c.send)
                for i, c in enumerate(clients)
            )
        )
        return clients

    clients = run(scenario())
    assert all(client.body == b"[]" for client in clients)
    assert app.most_at_once == 3
    assert len(attempts(app)) >= 30


def test_long_polls_of_the_same_kind_share_an_attempt_that_found_nothing():
    app = CountingApp([], delay_s=0.01)
    middleware = LongPollMiddleware(app, intervals_s=(0.2,), concurrency=4)

    async def scenario():
        clients = [Client() for _ in range(50)]
        await asyncio.gather(*(middleware(token_scope("same"), c.receive, c.send) for c in clients))
        return clients

    clients = run(scenario())
    assert all(client.status == 200 and client.body == b"[]" for client in clients)
    # Alone, each would attempt every 0.2 s for 1 s: 300 attempts. Together they attempt about once per 0.2 s.
    assert len(attempts(app)) <= 30


def test_a_stored_rollout_reaches_a_long_poll_that_shares_attempts():
    stored = []

    async def app(scope, receive, send):
        await receive()
        if scope["method"] == "POST":
            stored.append(1)
        body = b'[{"id": 4}]' if scope["method"] == "GET" and stored == [1] else b"[]"
        if body != b"[]":
            stored.append(2)  # claimed once
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    # Their next attempts are an hour away and their wait a minute: only the stored rollout can end one of them
    # before the scenario gives up on them.
    middleware = LongPollMiddleware(app, intervals_s=(3600.0,), concurrency=4)

    async def scenario():
        clients = [Client() for _ in range(5)]
        polls = [
            asyncio.create_task(middleware(token_scope("same", b"prm_version=v&wait=60"), c.receive, c.send))
            for c in clients
        ]
        await asyncio.sleep(0.2)
        poster = Client()
        await middleware(request_scope(method="POST", query=b""), poster.receive, poster.send)
        _, pending = await asyncio.wait(polls, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        for poll in pending:
            poll.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return clients

    clients = run(scenario())
    assert [json.loads(c.body) for c in clients if c.sent] == [[{"id": 4}]]


def test_a_long_poll_whose_client_leaves_while_it_waits_for_its_turn_claims_nothing():
    app = CountingApp([], delay_s=0.5)
    middleware = LongPollMiddleware(app, intervals_s=(0.05,), concurrency=1)

    async def scenario():
        busy = Client()
        first = asyncio.create_task(middleware(token_scope("busy", b"prm_version=v&wait=0.1"), busy.receive, busy.send))
        await asyncio.sleep(0.1)  # "busy" holds the only turn
        leaver = Client(leave_after_s=0.1)
        await middleware(token_scope("leaver", b"prm_version=v&wait=5"), leaver.receive, leaver.send)
        await first
        return leaver

    leaver = run(scenario())
    assert leaver.sent == []
    assert not [call for call in attempts(app) if call[3][b"authorization"] == b"Token leaver"]


def test_a_give_back_that_fails_for_a_passing_reason_is_tried_again(caplog):
    # On PostgreSQL the give-back of a client that had left failed when the pool was exhausted (a 503), and the client
    # kept its leases: 6 of 39 rollouts posted meanwhile.
    app = CountingApp([b'[{"id": 3}]'], delay_s=0.3, release_statuses=[503, 503, 200])
    client = Client(leave_after_s=0.05)
    run(LongPollMiddleware(app, release_pauses_s=(0.01,) * 5)(request_scope(), client.receive, client.send))
    assert [call[1] for call in app.calls if call[1] == "/rollout/release"] == ["/rollout/release"] * 3
    assert "could not give back" not in caplog.text


def test_a_give_back_refused_for_good_is_logged_not_repeated(caplog):
    app = CountingApp([b'[{"id": 3}]'], delay_s=0.3, release_statuses=[401])
    client = Client(leave_after_s=0.05)
    run(LongPollMiddleware(app, release_pauses_s=(0.01,) * 5)(request_scope(), client.receive, client.send))
    assert len([call for call in app.calls if call[1] == "/rollout/release"]) == 1
    assert "could not give back 1 rollout(s)" in caplog.text


def test_long_poll_attempts_leave_a_pooled_connection_for_other_requests():
    assert long_poll_concurrency(configured=4, pool_max=None) == 4
    assert long_poll_concurrency(configured=4, pool_max=20) == 4
    assert long_poll_concurrency(configured=4, pool_max=3) == 2
    assert long_poll_concurrency(configured=4, pool_max=1) == 1
    assert long_poll_concurrency(configured=0, pool_max=None) == 1
