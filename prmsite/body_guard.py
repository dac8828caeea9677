"""The ASGI layer that decides, before Django reads a request body, whether it reads it at all (``prmsite.asgi``).

Django's ASGI handler reads a whole body (into memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``, then a temporary file)
before any middleware or view runs, so authentication comes too late to protect memory: 300 anonymous connections each
sending 10 MB less one byte took a server from 1.2 to 4.2 GB, held for as long as the sockets stayed open, and four
unfinished anonymous adapter uploads held 1.6 GB of temporary disk. ``BodyLimitMiddleware`` stands in front:

- **Who may send a body.** A body larger than ``WEBSERVER_ANONYMOUS_BODY_MAX_BYTES`` (64 KiB) is read only for a
  caller with valid credentials: an ``Authorization: Token …`` header naming a live worker token, or the session
  cookie of a logged-in active user. Anyone else gets the API's JSON 401 before a byte of the body is read. Smaller
  bodies go on to Django as before (login forms, which are anonymous by nature; Django and DRF then answer as
  always). Credentials that come with a body are checked in a thread (one indexed query), and the verdict is kept
  for ``CREDENTIALS_CACHE_S`` seconds per process, so a worker's posts cost one query a minute per process.
- **How big.** A body beyond the limit (``PRM_ADAPTER_MAX_BYTES`` for adapter uploads, ``DATA_UPLOAD_MAX_MEMORY_SIZE``
  otherwise) is refused with the JSON 413 as soon as it is known to be too large: by its Content-Length, or by
  counting a chunked body.
- **How long.** A body must arrive within ``WEBSERVER_BODY_TIMEOUT_S`` seconds plus one second per
  ``WEBSERVER_BODY_MIN_BYTES_PER_S`` bytes of it; one that trickles or stalls beyond is cut off with a JSON 408. Django
  then sees a disconnect, closes its spooled body (temporary disk included) and the connection is closed.
- **How much at once.** Bodies being read or handled hold up to ``FILE_UPLOAD_MAX_MEMORY_SIZE`` each in memory; all of
  them together in one process may hold ``WEBSERVER_BODY_BUDGET_BYTES``, anonymous ones an eighth of that. A body
  that would pass it is refused with a JSON 503 and ``Retry-After`` before it is read.

Every refusal carries ``Connection: close``: a body left unread cannot be skipped to reach a next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.exceptions import ValidationError
from django.db import connections
from django.http.cookie import parse_cookie
from rest_framework import exceptions

from prmsite.api import BODY_TOO_LARGE
from prmsite.authentication import TOKEN_FORM, WorkerTokenAuthentication
from prmsite.refusals import error_body
from prmsite.unavailable import (
    RETRY_AFTER,
    database_unavailable_body,
    is_database_unavailable,
    log_database_unavailable,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADAPTER_PATH = "/prm_adapter"
# Seconds a verdict on credentials is kept (per process); a revoked token may send large bodies this much longer, but
# Django still authenticates every request itself.
CREDENTIALS_CACHE_S = 60.0
# Most verdicts kept; beyond, the cache starts afresh (a flood of invented tokens cannot grow it).
CREDENTIALS_CACHE_MAX = 10_000
# Credential checks one process runs at once (each is a thread and a database query); the others wait here.
CREDENTIAL_CHECKS_AT_ONCE = 4
# The share of the body budget that bodies from callers without valid credentials may hold together.
ANONYMOUS_BUDGET_SHARE = 8
BODY_RETRY_AFTER_S = 5

ANONYMOUS_BODY_REFUSED = (
    "A request body larger than {limit} bytes needs credentials: 'Authorization: Token <token>' (a live worker token) "
    "or a logged-in session."
)
BODY_TIMED_OUT = "The request body did not arrive in time ({seconds:.0f} s); send it at a steady pace."
BODIES_BUSY = "The server is reading too many request bodies at the moment; retry in a few seconds."

CLOSE = (b"connection", b"close")


async def json_response(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``body`` as JSON with ``status`` (and extra ``headers``)."""
    payload = json.dumps(body).encode()
    all_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers + list(headers or [])})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", []) if key.lower() == name), None)


@dataclass
class BodyBudget:
    """Bytes of request bodies one process holds at once. ``take`` never lets ``held`` pass ``limit``."""

    limit: int
    held: int = 0

    def take(self, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held = max(0, self.held - size)


def token_is_live(token: bytes) -> bool:
    """Whether ``token`` is a live worker token of an active user (what DRF's authentication will decide)."""
    try:
        WorkerTokenAuthentication().authenticate_credentials(token)
    except exceptions.AuthenticationFailed:
        return False
    finally:
        connections.close_all()  # this thread's connection goes back (to the pool, on PostgreSQL)
    return True


def session_is_logged_in(session_key: str) -> bool:
    """Whether ``session_key`` names a session of a logged-in, active user."""
    try:
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user_id = store.get(SESSION_KEY)
        if user_id is None:
            return False
        model = get_user_model()
        try:
            pk = model._meta.pk.to_python(user_id)
        except ValidationError:
            return False
        return model._default_manager.filter(pk=pk, is_active=True).exists()
    finally:
        connections.close_all()


class CredentialCheck:
    """Does a request carry valid credentials? ``True`` or ``False``; ``None`` when the database could not be asked.

    A request without a token of the right form and without a session cookie is answered at once. Otherwise the
    verdict comes from a per-process cache, else from the database in a thread (never in the event loop), at most
    ``CREDENTIAL_CHECKS_AT_ONCE`` at a time."""

    def __init__(
        self,
        *,
        token_check: Callable[[bytes], bool] = token_is_live,
        session_check: Callable[[str], bool] = session_is_logged_in,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_check = token_check
        self.session_check = session_check
        self.clock = clock
        self.verdicts: dict[tuple[str, str], tuple[bool, float]] = {}
        self.lookups = 0  # database checks run (tests count them)
        self._at_once: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope) -> bool | None:
        token = self._token_of(scope)
        if token is not None:
            verdict = await self._verdict("token", token.decode("ascii"), self.token_check, token)
            if verdict is not False:
                return verdict
        session_key = self._session_key_of(scope)
        if session_key is not None:
            return await self._verdict("session", session_key, self.session_check, session_key)
        return False

    @staticmethod
    def _token_of(scope: Scope) -> bytes | None:
        parts = (header(scope, b"authorization") or b"").split()
        prefix = str(settings.REST_KNOX.get("AUTH_HEADER_PREFIX", "Token")).encode().lower()
        if len(parts) != 2 or parts[0].lower() != prefix or not TOKEN_FORM.fullmatch(parts[1]):
            return None  # no token, or one the authentication refuses without asking the database
        return parts[1]

    @staticmethod
    def _session_key_of(scope: Scope) -> str | None:
        raw = header(scope, b"cookie")
        if not raw:
            return None
        key = parse_cookie(raw.decode("latin-1")).get(settings.SESSION_COOKIE_NAME, "")
        # Django's session keys are 32 lowercase letters and digits; anything else names no session.
        return key if 8 <= len(key) <= 64 and key.isascii() and key.isalnum() else None

    async def _verdict(self, kind: str, secret: str, check: Callable[[Any], bool], argument: Any) -> bool | None:
        # The cache is keyed by digests, never by the credentials themselves.
        key = (kind, hashlib.sha256(secret.encode()).hexdigest())
        cached = self.verdicts.get(key)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        if self._at_once is None:
            self._at_once = asyncio.Semaphore(CREDENTIAL_CHECKS_AT_ONCE)
        async with self._at_once:
            self.lookups += 1
            try:
                valid = await sync_to_async(check, thread_sensitive=False)(argument)
            except Exception as exc:
                if is_database_unavailable(exc):
                    log_database_unavailable(exc)
                    return None
                raise
        if len(self.verdicts) >= CREDENTIALS_CACHE_MAX:
            self.verdicts.clear()
        self.verdicts[key] = (valid, self.clock() + CREDENTIALS_CACHE_S)
        return valid


class BodyLimitMiddleware:
    """See the module docstring. ``credentials`` says whether a request carries valid credentials (tests pass their
    own); ``clock`` is the event loop's unless given."""

    def __init__(self, app: ASGIApp, *, credentials: Callable[[Scope], Awaitable[bool | None]] | None = None) -> None:
        self.app = app
        self.credentials = credentials or CredentialCheck()
        self._budget = BodyBudget(limit=0)
        self._anonymous_budget = BodyBudget(limit=0)

    @staticmethod
    def limit_for(scope: Scope) -> int:
        if scope["path"] == ADAPTER_PATH:
            return settings.PRM_ADAPTER_MAX_BYTES
        # Room for a form's multipart framing beyond the data Django itself accepts.
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 64 * 1024

    def budgets(self, *, trusted: bool) -> list[BodyBudget]:
        """The budgets a body draws on: the process's, and for a caller without credentials also the anonymous
        share. (Their limits follow the settings, so a test may change them.)"""
        self._budget.limit = settings.WEBSERVER_BODY_BUDGET_BYTES
        self._anonymous_budget.limit = settings.WEBSERVER_BODY_BUDGET_BYTES // ANONYMOUS_BUDGET_SHARE
        return [self._budget] if trusted else [self._budget, self._anonymous_budget]

    @property
    def held(self) -> int:
        """Bytes of bodies this process holds now (as counted against the budget)."""
        return self._budget.held

    @staticmethod
    def _take(budgets: list[BodyBudget], size: int) -> bool:
        for index, budget in enumerate(budgets):
            if not budget.take(size):
                for taken in budgets[:index]:
                    taken.give(size)
                return False
        return True

    @staticmethod
    def _give(budgets: list[BodyBudget], size: int) -> None:
        for budget in budgets:
            budget.give(size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = b"chunked" in (header(scope, b"transfer-encoding") or b"").lower()
        try:
            declared = int(header(scope, b"content-length") or b"0")
        except ValueError:
            declared = 0  # h11 refuses such a request before it gets here
        if not chunked and declared <= 0:
            await self.app(scope, receive, send)  # no body
            return
        limit = self.limit_for(scope)
        if declared > limit:
            await self._refuse(send, 413, error_body(BODY_TOO_LARGE.format(limit=limit), "too_large"))
            return
        trusted = await self.credentials(scope)
        anonymous_max = settings.WEBSERVER_ANONYMOUS_BODY_MAX_BYTES
        if trusted is None and (chunked or declared > anonymous_max):
            await self._refuse(
                send,
                503,
                database_unavailable_body(),
                [(b"retry-after", RETRY_AFTER.encode())],
            )
            return
        if not trusted:
            limit = min(limit, anonymous_max)
            if declared > limit:
                await self._refuse_anonymous(send, limit)
                return
        await self._read_guarded(scope, receive, send, declared=declared, limit=limit, trusted=bool(trusted))

    async def _refuse(
        self, send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await json_response(send, status, body, [CLOSE, *(headers or [])])

    async def _refuse_anonymous(self, send: Send, limit: int) -> None:
        body = error_body(ANONYMOUS_BODY_REFUSED.format(limit=limit), "not_authenticated")
        await self._refuse(send, 401, body, [(b"www-authenticate", b"Token")])

    async def _read_guarded(
        self, scope: Scope, receive: Receive, send: Send, *, declared: int, limit: int, trusted: bool
    ) -> None:
        """Run the app with a receive channel that holds the body to ``limit``, the deadline and the budget; answer
        the refusal when it had to cut the body off."""
        loop = asyncio.get_running_loop()
        memory_cap = settings.FILE_UPLOAD_MAX_MEMORY_SIZE  # beyond it, Django spools the body to disk
        budgets = self.budgets(trusted=trusted)
        reserved = min(declared, memory_cap)
        if not self._take(budgets, reserved):
            await self._refuse(
                send, 503, error_body(BODIES_BUSY, "busy"), [(b"retry-after", str(BODY_RETRY_AFTER_S).encode())]
            )
            return
        started = loop.time()
        timeout_s = settings.WEBSERVER_BODY_TIMEOUT_S
        rate = max(settings.WEBSERVER_BODY_MIN_BYTES_PER_S, 1)
        received = 0
        complete = False
        refusal: tuple[int, dict[str, Any], list[tuple[bytes, bytes]]] | None = None
        response_started = False

        def cut_off(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Message:
            nonlocal refusal, complete
            refusal = (status, body, headers or [])
            complete = True
            return {"type": "http.disconnect"}  # Django stops reading, closes its spooled body and answers nothing

        async def guarded_receive() -> Message:
            nonlocal received, reserved, complete
            if complete:
                return await receive()  # the body is in: Django now only listens for a disconnect
            allowed_s = timeout_s + max(declared, received) / rate
            try:
                message = await asyncio.wait_for(receive(), timeout=max(started + allowed_s - loop.time(), 0.0))
            except TimeoutError:
                return cut_off(408, error_body(BODY_TIMED_OUT.format(seconds=allowed_s), "request_timeout"))
            if message["type"] != "http.request":
                complete = True
                return message
            received += len(message.get("body", b""))
            if received > limit:
                if trusted or limit >= self.limit_for(scope):
                    return cut_off(413, error_body(BODY_TOO_LARGE.format(limit=limit), "too_large"))
                body = error_body(ANONYMOUS_BODY_REFUSED.format(limit=limit), "not_authenticated")
                return cut_off(401, body, [(b"www-authenticate", b"Token")])
            if min(received, memory_cap) > reserved:  # a chunked body grows into the budget as it comes
                more = min(received, memory_cap) - reserved
                if not self._take(budgets, more):
                    busy = error_body(BODIES_BUSY, "busy")
                    return cut_off(503, busy, [(b"retry-after", str(BODY_RETRY_AFTER_S).encode())])
                reserved += more
            if not message.get("more_body", False):
                complete = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, watched_send)
        finally:
            self._give(budgets, reserved)
        if refusal is not None and not response_started:
            status, body, headers = refusal
            await self._refuse(send, status, body, headers)
