"""ASGI entry point: the production server (uvicorn, started by ``python -m prmsite.wsgi``) serves ``application``.

Two thin layers stand in front of Django, both pure ASGI so that they hold no thread while they wait:

- ``LongPollMiddleware``: ``GET /rollout?wait=S`` waits here, in the event loop, not in a server thread. It calls the
  endpoint with ``wait=0`` on a backing-off schedule (``LONG_POLL_INTERVALS_S``), and at once when this process has
  just stored a rollout (one waiting long-poll per ``prm_version`` is woken, the one that has waited longest: a new
  rollout can go to one claimer of each version, so waking more would only make them collide), until it hands
  something out or ``S`` has passed; it stops as soon as the client
  disconnects. Leases are only ever written by an attempt that will be answered: when the client turns out to be gone
  by the time an attempt has claimed rollouts, the middleware gives them back at once (``POST /rollout/release``,
  with the caller's own credentials) instead of leaving them leased to nobody for ``PRM_CHECKOUT_TIMEOUT_S``.
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402 - after Django is set up

from prmsite.body_guard import BodyLimitMiddleware  # noqa: E402

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Seconds between the attempts of one long-poll: soon at first, then every 2 s. A worker waiting for new rollouts
# learns of one within 2 s (at once when it was posted to the same server process); 100 idle long-polls cost about
# 50 cheap attempts per second.
LONG_POLL_INTERVALS_S = (0.25, 0.5, 1.0, 2.0)
CLAIM_PATH = "/rollout"
RELEASE_PATH = "/rollout/release"
PREVIEW_HEADER = b"x-prmsite-claim"


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


async def _forward(response: CapturedResponse, send: Send) -> None:
    await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
    await send({"type": "http.response.body", "body": bytes(response.body), "more_body": False})


class LongPollMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, intervals_s: tuple[float, ...] = LONG_POLL_INTERVALS_S) -> None:
        self.app = app
        self.intervals_s = intervals_s
        # Long-polls waiting between attempts, per prm_version, oldest first.
        self.waiting: dict[str, list[asyncio.Future[None]]] = {}

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

    async def _long_poll(self, scope: Scope, receive: Receive, send: Send, wait: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pairs = [(k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "wait"]
        prm_version = dict(pairs).get("prm_version", "")
        attempt_scope = {**scope, "query_string": urlencode([*pairs, ("wait", "0")]).encode("latin-1")}
        gone = asyncio.Event()

        async def listen() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        listener = asyncio.create_task(listen())
        try:
            for attempt in itertools.count():
                response = await _call(self.app, attempt_scope)
                if gone.is_set():
                    await self._give_back(scope, response)
                    return
                done = (
                    response.status != 200
                    or bytes(response.body).strip() != b"[]"
                    or response.header(PREVIEW_HEADER) is not None
                    or loop.time() >= deadline
                )
                if done:
                    await _forward(response, send)
                    return
                pause = min(self.intervals_s[min(attempt, len(self.intervals_s) - 1)], deadline - loop.time())
                woken: asyncio.Future[None] = loop.create_future()
                queue = self.waiting.setdefault(prm_version, [])
                queue.append(woken)
                leaving = asyncio.ensure_future(gone.wait())
                try:
                    await asyncio.wait([woken, leaving], timeout=max(pause, 0.0), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    leaving.cancel()
                    woken.cancel()
                    if woken in queue:
                        queue.remove(woken)
                    if not queue:
                        self.waiting.pop(prm_version, None)
                if gone.is_set():
                    return  # nothing was claimed for a client that left
        finally:
            listener.cancel()

    async def _give_back(self, scope: Scope, response: CapturedResponse) -> None:
        """The client left while an attempt claimed rollouts for it: end those leases now."""
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
        released = await _call(self.app, release_scope, body)
        logger.info("long-poll client left: gave back %d rollout(s) (%s)", len(ids), released.status)


application = BodyLimitMiddleware(LongPollMiddleware(django_application))

__all__ = ["BodyLimitMiddleware", "LongPollMiddleware", "application"]
