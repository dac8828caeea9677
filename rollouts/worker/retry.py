"""Which failures of an OpenAI-compatible server are worth retrying, and the back-off between tries (tenacity).

Retried: timeouts, connection errors, 408, 409, 429 and 5xx, with exponential back-off and full jitter, never sooner
than a ``Retry-After`` header asks. Fatal (the run is misconfigured, stop it): 401, 403 and 404 (wrong key, wrong
model name or wrong base URL). Anything else (400: a prompt too long, say) fails that one request.

``is_fatal_client_error``: the same question for this project's server, asked by the job sources (a refusal that
retrying will not change stops the worker; 408, 409 and 429 are waited out).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

logger = logging.getLogger("rollouts.worker")

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})
FATAL_STATUSES = frozenset({401, 403, 404})


class FatalGenerationError(Exception):
    """The generation server refuses every request of this run (bad key, model or URL): stop the worker."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRYABLE_STATUSES or exc.status_code >= 500
    return False


def is_fatal_client_error(exc: BaseException) -> bool:
    """A refusal that retrying will not change (bad token, unknown forest, no plan): stop the worker."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 409, 429)


def is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, openai.APIStatusError) and exc.status_code in FATAL_STATUSES


def retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds a ``Retry-After`` header of the failed response asks to wait (numeric form only)."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class BackoffWithRetryAfter:
    """Exponential back-off with full jitter (``uniform(0, min(cap, initial * 2**n))``), at least Retry-After."""

    def __init__(self, *, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s

    def __call__(self, state: RetryCallState) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        outcome = state.outcome
        asked = retry_after_s(outcome.exception() if outcome is not None and outcome.failed else None)
        return max(delay, min(asked, self.max_s)) if asked is not None else delay


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    backoff_initial_s: float,
    backoff_max_s: float,
    on_retry: Callable[[BaseException, int], None] | None = None,
) -> tuple[T, int]:
    """``await call()`` with retries on retryable failures; answer its result and the number of attempts it took.

    The last failure is re-raised as it is; a fatal one is raised as :class:`FatalGenerationError` at once.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if on_retry is not None and exc is not None:
            on_retry(exc, state.attempt_number)
        logger.debug("attempt %d failed (%r); retrying", state.attempt_number, exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        stop=stop_after_attempt(max_attempts),
        wait=BackoffWithRetryAfter(initial_s=backoff_initial_s, max_s=backoff_max_s),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                result = await call()
    except openai.APIStatusError as exc:
        if is_fatal(exc):
            raise FatalGenerationError(f"the generation server answered {exc.status_code}: {exc.message}") from exc
        raise
    return result, attempts
