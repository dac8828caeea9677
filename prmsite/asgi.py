"""ASGI entry point: the production server (uvicorn, started by ``python -m prmsite.wsgi``) serves ``application``.

Two thin layers stand in front of Django, both pure ASGI so that they hold no thread while they wait:

- ``LongPollMiddleware``: ``GET /rollout?wait=S`` waits here, in the event loop, not in a server thread. It calls the
  endpoint with ``wait=0`` on a backing-off schedule (``LONG_POLL_INTERVALS_S``), and at once when this process has
  just stored a rollout (one waiting long-poll per ``prm_version`` is woken, the one that has waited longest: a new
  rollout can go to one claimer of each version, so waking more would only make them collide), until it hands
  something out or ``S`` has passed; it stops as soon as the client disconnects.

  Each attempt runs the endpoint in a thread with a database connection, so attempts are bounded: at most
  ``PRM_LONG_POLL_CONCURRENCY`` run at once per process (on PostgreSQL at most the pool's size less one); the others
  wait their turn here, holding nothing. Long-polls of the same kind (the same query, the same credentials: the same
  claimer asking the same way) share attempts: one that is due while an attempt of its kind is under way, or has just
  found nothing (within the shortest interval), takes that answer instead of running its own. With 500 workers'
  long-polls open, unrelated requests used to wait for threads and connections (6.6-9.2 s).

  Leases are only ever written by an attempt that will be answered: when the client turns out to be gone by the time
  an attempt has claimed rollouts, the middleware gives them back at once (``POST /rollout/release``, with the
  caller's own credentials) instead of leaving them leased to nobody for ``PRM_CHECKOUT_TIMEOUT_S``; a give-back that
  fails for a passing reason (a 5xx: the pool exhausted, the database away) is tried again (``RELEASE_PAUSES_S``),
  and one that still fails is logged. A client that leaves while waiting for its turn claims nothing.
- ``BodyLimitMiddleware`` (``prmsite.body_guard``): decides before Django reads a request body whether it reads it at
  all: a body beyond 64 KiB needs valid credentials (401 before it is read), none may pass its size limit (413), take
  longer than its deadline (408) or pass the process's budget of bodies in flight (503 with Retry-After).

Under a WSGI server the same views work (the long-poll then waits in the request's thread), but only ASGI gives
these guarantees; see the README's "Serving in production".
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import queue
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")


# Request threads kept idle per process for the next requests (each with its SQLite connection and that connection's
# page cache, up to 2 MiB, if it made one): as many as requests a process serves at once in steady use. A thread given
# back beyond this many, or while still busy, closes its connections and ends.
REQUEST_THREADS_IDLE_MAX = 16


class RequestThread(Executor):
    """One thread that runs what it is given, in order: the executor of one request at a time (asgiref's
    ``ThreadSensitiveContext(executor=…)``), kept from one request to the next by ``RequestThreads``."""

    def __init__(self, name: str) -> None:
        self._work: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple, dict] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """Nothing submitted is still to run or running (a call whose caller gave up, a cancelled request's view,
        still counts until it ends)."""
        with self._lock:
            return self._pending == 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._pending += 1
        self._work.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args, kwargs = item
            del item
            if not future.set_running_or_notify_cancel():
                self._done()
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the caller, as concurrent.futures does
                self._done()  # before the caller hears of it: it may give this thread back at once
                future.set_exception(exc)
            else:
                self._done()
                future.set_result(result)
                del result
            del future, fn, args, kwargs  # nothing of a request outlives it here while the thread waits
        connections.close_all()  # this thread's own database connections: nobody else can close them

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the thread once what it was given has run (its connections closed first)."""
        self._work.put(None)
        if wait:
            self._thread.join()


class RequestThreads:
    """The request threads of one process: a request takes an idle one (the most recently used, whose database
    connection is warm) or a new one, and gives it back when it is answered."""

    def __init__(self, idle_max: int = REQUEST_THREADS_IDLE_MAX) -> None:
        self.idle_max = idle_max
        self._idle: list[RequestThread] = []
        self._lock = threading.Lock()
        self._made = itertools.count(1)

    def take(self) -> RequestThread:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return RequestThread(f"request-{next(self._made)}")

    def give_back(self, thread: RequestThread) -> None:
        with self._lock:
            if len(self._idle) < self.idle_max and thread.idle:
                self._idle.append(thread)
                return
        thread.shutdown(wait=False)

    def close(self) -> None:
        """End the idle threads, each once it has closed its database connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for thread in idle:
            thread.shutdown(wait=True)


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain and the view run as one synchronous call in the request's
    thread: one thread hop a request, as under WSGI; and that thread kept for later requests.

    Django's own handler runs the chain in async mode: every middleware built on ``MiddlewareMixin`` (most of ours:
    security, sessions, CSRF, authentication, messages, CSP, …) hops to a thread and back for its
    ``process_request`` and again for its ``process_response``, and the (synchronous) view once more: 36 hops a
    request, which cost more CPU than the work of ``POST /rollout`` itself (``bench/bench_cost.py``). Every view here
    is synchronous, so nothing is lost; reading the body, streaming the answer and the disconnect watch stay
    Django's, in the event loop.

    Django also starts a new thread for each request (a ``ThreadSensitiveContext`` of its own) and joins it after:
    all of the request's synchronous work (the ``request_started`` and ``request_finished`` signals, the view, closing
    the response) runs there, and its database connections are that thread's. Here the request runs in a thread taken
    from ``RequestThreads`` instead, the same one from start to end, so a thread and (on SQLite, with
    ``CONN_MAX_AGE``) its database connection serve one request after another: Django's ``close_old_connections`` at
    each request's start and end, in that same thread, still closes a connection that is too old or broken."""

    threads = RequestThreads()

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(thread)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


django.setup(set_prefix=False)
django_application = OneHopASGIHandler()

from django.conf import settings  # noqa: E402 - after Django is set up

from prmsite.body_guard import BodyLimitMiddleware  # noqa: E402

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Seconds between the attempts of one long-poll: soon at first, then every 2 s. A worker waiting for new rollouts
# learns of one within 2 s (at once when it was posted to the same server process); 100 idle long-polls of 100
# different workers cost about 50 cheap attempts per second (of one worker: about 4, as they share attempts).
LONG_POLL_INTERVALS_S = (0.25, 0.5, 1.0, 2.0)
CLAIM_PATH = "/rollout"
RELEASE_PATH = "/rollout/release"
PREVIEW_HEADER = b"x-prmsite-claim"
# Pauses before a failed give-back (POST /rollout/release for a client that left) is tried again: 15 s in all, while
# the database is busy or away for a moment.
RELEASE_PAUSES_S = (0.5, 1.0, 2.0, 4.0, 8.0)
RELEASE_FAILED = (
    "long-poll client left: could not give back %d rollout(s) of %r (%s: %r); they stay leased until their lease ends"
)


@dataclass
class CapturedResponse:
    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key.lower() == name), None)


async def _call(app: ASGIApp, scope: Scope, body: bytes = b"") -> CapturedResponse:
    """Run ``app`` on a request of our own making and collect its answer. Its receive channel never reports a
    disconnect: an attempt always runs to its end, so what it leased is known."""
    response = CapturedResponse()
    sent_body = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # Django listens for a disconnect that never comes; it cancels this when done
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            response.status = message["status"]
            response.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            response.body += message.get("body", b"")

    await app(scope, receive, send)
    return response


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", []) if key.lower() == name), None)


async def _forward(response: CapturedResponse, send: Send) -> None:
    await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
    await send({"type": "http.response.body", "body": bytes(response.body), "more_body": False})


@dataclass
class Flight:
    """One claim attempt of long-polls with the same query and credentials: when it started and, once it has ended,
    whether it found nothing (and then its answer, which stands for theirs)."""

    started_at: float
    found_nothing: asyncio.Future[bool]
    response: CapturedResponse | None = None


def long_poll_concurrency(*, configured: int, pool_max: int | None) -> int:
    """Claim attempts one process runs at once: ``configured``, and with a database pool at most its size less one,
    so that a connection is always left for other requests; at least one."""
    concurrency = max(1, configured)
    if pool_max:
        concurrency = min(concurrency, max(1, pool_max - 1))
    return concurrency


def _configured_concurrency() -> int:
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    pool_max = int(pool["max_size"]) if isinstance(pool, dict) and pool.get("max_size") else None
    return long_poll_concurrency(configured=settings.PRM_LONG_POLL_CONCURRENCY, pool_max=pool_max)


class LongPollMiddleware:
    """See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        intervals_s: tuple[float, ...] = LONG_POLL_INTERVALS_S,
        concurrency: int | None = None,
        release_pauses_s: tuple[float, ...] = RELEASE_PAUSES_S,
    ) -> None:
        self.app = app
        self.intervals_s = intervals_s
        self.concurrency = concurrency
        self.release_pauses_s = release_pauses_s
        # Long-polls waiting between attempts, per prm_version, oldest first.
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}
        # The latest claim attempt of each kind of long-poll (same query, same credentials), while it is fresh.
        self.flights: dict[tuple[bytes, ...], Flight] = {}
        self._turns: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == CLAIM_PATH:
            if scope["method"] == "GET" and (wait := self._wait_of(scope)) is not None:
                await self._long_poll(scope, receive, send, wait)
                return
            if scope["method"] == "POST":
                await self.app(scope, receive, self._watch_store(send))
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _wait_of(scope: Scope) -> float | None:
        """The long-poll's wait when it is one the endpoint would accept and worth waiting for; otherwise ``None``
        (the request goes to the endpoint as it is, which answers or refuses it)."""
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            wait = float(query.get("wait", "0"))
        except ValueError:
            return None
        if not math.isfinite(wait) or wait <= 0 or wait > settings.PRM_CHECKOUT_WAIT_MAX_S:
            return None
        return wait

    def _watch_store(self, send: Send) -> Send:
        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.wake_one_per_version()
            await send(message)

        return watching

    def wake_one_per_version(self) -> None:
        """A rollout was stored: it can be claimed once for every prm_version; wake the longest waiter of each."""
        for waiters in self.waiting.values():
            while waiters:
                waiter = waiters.pop(0)
                if not waiter.done():
                    waiter.set_result(None)
                    break

    @staticmethod
    def _answered_nothing(response: CapturedResponse) -> bool:
        return (
            response.status == 200 and bytes(response.body).strip() == b"[]" and response.header(PREVIEW_HEADER) is None
        )

    async def _take_turn(self, gone: asyncio.Event) -> bool:
        """Wait for a free turn to run a claim attempt; False (and no turn taken) when the client leaves first."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.concurrency or _configured_concurrency())
        turns = self._turns
        acquiring = asyncio.ensure_future(turns.acquire())
        leaving = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait([acquiring, leaving], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (the server stops): hand back a turn taken in the same moment
            acquiring.cancel()
            if acquiring.done() and not acquiring.cancelled():
                turns.release()
            raise
        finally:
            leaving.cancel()
        if not acquiring.done():
            acquiring.cancel()  # a cancelled acquire hands back a turn it was just given (asyncio.Semaphore)
            return False
        if gone.is_set():
            turns.release()
            return False
        return True

    def _fresh_flight(self, key: tuple[bytes, ...], *, after: float, now: float) -> Flight | None:
        """The latest attempt of this kind, if it started after ``after`` and is still to end or ended no longer than
        the shortest interval ago: its answer is as good as one this long-poll would get now."""
        flight = self.flights.get(key)
        if flight is None or flight.started_at <= after:
            return None
        if flight.found_nothing.done() and now - flight.started_at > self.intervals_s[0]:
            return None
        return flight

    async def _attempt(
        self, key: tuple[bytes, ...], attempt_scope: Scope, gone: asyncio.Event
    ) -> tuple[CapturedResponse | None, float]:
        """Run one claim attempt as the latest flight of its kind, when a turn is free; answer its response (None when
        the client left before its turn came) and when it started. The flight is registered before the turn is
        awaited, so that long-polls of the same kind that come meanwhile wait for it instead of queueing their own."""
        loop = asyncio.get_running_loop()
        flight = Flight(started_at=loop.time(), found_nothing=loop.create_future())
        self.flights[key] = flight
        response: CapturedResponse | None = None
        try:
            if not await self._take_turn(gone):
                return None, flight.started_at
            try:
                flight.started_at = loop.time()  # what it finds is as of now
                response = await _call(self.app, attempt_scope)
            finally:
                assert self._turns is not None
                self._turns.release()
        finally:
            found_nothing = response is not None and self._answered_nothing(response)
            flight.response = response if found_nothing else None
            flight.found_nothing.set_result(found_nothing)
            # Forget it once it is too old to stand for anyone's attempt (an idle kind of long-poll costs nothing).
            loop.call_later(self.intervals_s[0] * 2, self._forget, key, flight)
        return response, flight.started_at

    def _forget(self, key: tuple[bytes, ...], flight: Flight) -> None:
        if self.flights.get(key) is flight:
            del self.flights[key]

    async def _long_poll(self, scope: Scope, receive: Receive, send: Send, wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pairs = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "wait"]
        prm_version = dict(pairs).get("prm_version", "")
        attempt_scope = {**scope, "query_string": urlencode([*pairs, ("wait", "0")]).encode("latin-1")}
        # Long-polls with the same query and the same credentials claim the same way for the same claimer.
        key = (
            attempt_scope["query_string"],
            _header(scope, b"authorization") or b"",
            _header(scope, b"cookie") or b"",
        )
        gone = asyncio.Event()

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        listener = asyncio.create_task(listen())
        seen_at = -math.inf  # when the freshest attempt this long-poll has taken into account started
        woken = False
        try:
            for attempt in itertools.count():
                shared = None if woken else self._fresh_flight(key, after=seen_at, now=loop.time())
                if shared is not None and await self._found_nothing(shared, gone):
                    # Another long-poll of the same kind has just found nothing: so would this one.
                    seen_at, response = shared.started_at, shared.response
                else:
                    attempted, seen_at = await self._attempt(key, attempt_scope, gone)
                    if attempted is None:
                        return  # the client left while it waited for its turn: nothing was claimed
                    response = attempted
                    await asyncio.sleep(0)  # a disconnect that has already arrived is seen before answering
                    if gone.is_set():
                        await self._give_back(scope, response)
                        return
                    if not self._answered_nothing(response):
                        await _forward(response, send)
                        return
                if gone.is_set():
                    return  # nothing was claimed for a client that left
                if loop.time() >= deadline:
                    await _forward(response, send)  # an empty answer, this long-poll's own or its kind's
                    return
                pause = min(self.intervals_s[min(attempt, len(self.intervals_s) - 1)], deadline - loop.time())
                woken = await self._pause(prm_version, max(pause, 0.0), gone)
                if gone.is_set():
                    return
        finally:
            listener.cancel()

    async def _found_nothing(self, flight: Flight, gone: asyncio.Event) -> bool:
        """Wait for ``flight`` to end (or the client to leave); whether it found nothing."""
        if not flight.found_nothing.done():
            leaving = asyncio.ensure_future(gone.wait())
            try:
                await asyncio.wait([flight.found_nothing, leaving], return_when=asyncio.FIRST_COMPLETED)
            finally:
                leaving.cancel()
        return flight.found_nothing.done() and flight.found_nothing.result()

    async def _pause(self, prm_version: str, pause: float, gone: asyncio.Event) -> bool:
        """Wait ``pause`` seconds, or until a rollout stored in this process wakes this long-poll (answer True), or
        until the client leaves."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        queue = self.waiting.setdefault(prm_version, [])
        queue.append(woken)
        leaving = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait([woken, leaving], timeout=pause, return_when=asyncio.FIRST_COMPLETED)
            return woken.done() and not woken.cancelled()
        finally:
            leaving.cancel()
            woken.cancel()
            if woken in queue:
                queue.remove(woken)
            if not queue:
                self.waiting.pop(prm_version, None)

    async def _give_back(self, scope: Scope, response: CapturedResponse) -> None:
        """The client left while an attempt claimed rollouts for it: end those leases now. A release that fails for a
        passing reason (a 5xx: the database busy or away) is tried again after each of ``release_pauses_s``; a lease
        that still could not be ended is logged, and ends with its lease time."""
        if response.status != 200 or response.header(PREVIEW_HEADER) is not None:
            return
        try:
            claimed = json.loads(bytes(response.body))
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            ids = [rollout["id"] for rollout in claimed]
        except (ValueError, TypeError, KeyError):
            return
        if not ids:
            return
        body = json.dumps({"prm_version": query.get("prm_version", ""), "rollout_ids": ids}).encode()
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() in {b"authorization", b"cookie", b"host"}]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        release_scope = {**scope, "method": "POST", "path": RELEASE_PATH, "query_string": b"", "headers": headers}
        for pause in (*self.release_pauses_s, None):
            released = await _call(self.app, release_scope, body)
            if released.status == 200:
                logger.info("long-poll client left: gave back %d rollout(s)", len(ids))
                return
            if released.status < 500 or pause is None:
                break  # refused (the token revoked meanwhile?): asking again changes nothing
            await asyncio.sleep(pause)
        logger.warning(
            RELEASE_FAILED, len(ids), query.get("prm_version", ""), released.status, bytes(released.body)[:200]
        )


application = BodyLimitMiddleware(LongPollMiddleware(django_application))

__all__ = ["BodyLimitMiddleware", "LongPollMiddleware", "application"]
