"""A small typed client for the prmsite active-learning API (spec/active-learning-webserver.md).

It imports nothing from Django, so rollout workers, PRM inference controllers, AI labellers and the training loop
can run on any machine that reaches the server::

    from prmsite.core.client import PrmsiteClient

    with PrmsiteClient() as api:  # WEBSERVER_API_BASE and WEBSERVER_API_TOKEN from the environment
        rollout_id = api.post_rollout({"model": "m", "example": "…", "reasoning": ["…"], "prediction": 1,
                                       "ground_truth": 1, "worker": "gpu-3"})
        for rollout in api.get_rollouts("prm-v2", limit=8, wait=30):
            api.post_process_reward_label({"rollout_id": rollout["id"], "prm_output": [0.9] * len(rollout["reasoning"]),
                                           "prm_version": "prm-v2", "worker": "gpu-3"})
        results = api.post_process_reward_labels(labels)  # many at once: {"id"} or a refusal with "status", in order

One ``requests.Session`` (connection reuse), separate connect and read timeouts, and retries with exponential
back-off and jitter. A 4xx is never retried: it raises ``PrmsiteAPIError`` with the server's JSON body. Two retry
policies:

- idempotent calls are retried on connection errors, timeouts and 5xx answers. ``POST /rollout`` is one of them: the
  client sends an ``idempotency_key`` with every rollout (it makes one when the payload has none), so a retry after a
  lost answer is answered with the first rollout's id instead of storing it twice; so are labels, one by one or in
  batches (``POST /process_reward_label/batch``): the same label again answers the stored id;
- a claim (``GET /rollout``) leases what it answers, so it is retried only when the request cannot have reached the
  server (connection refused, connect timeout) or a proxy says so (502/503/504) — never after a read timeout. One
  claim is in flight at a time, and a long-poll the client gave up on stops on the server and gives back what it
  claimed, so retries never pile up leases.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote

import requests
from tenacity import Retrying, before_sleep_log, retry_if_exception, stop_after_attempt, wait_exponential, wait_random
from urllib3.exceptions import NewConnectionError

logger = logging.getLogger(__name__)

ENV_BASE = "WEBSERVER_API_BASE"
ENV_TOKEN = "WEBSERVER_API_TOKEN"  # noqa: S105 - the name of the variable, not a secret
# Ids per GET /process_reward_label or GET /rollouts request (the server takes up to 1000): short URLs pass any
# proxy's request-line limit.
KEYS_PER_REQUEST = 250
_GATEWAY_STATUSES = frozenset({502, 503, 504})
# Labels per POST /process_reward_label/batch (the server's PROCESS_REWARD_LABEL_BATCH_MAX, 500 by default) and JSON
# bytes per batch (the server takes 10 MiB bodies by default; explanations can make labels long).
LABELS_PER_BATCH = 500
LABEL_BATCH_MAX_BYTES = 4 * 1024 * 1024
# What a server without POST /process_reward_label/batch (older than it) answers on that path.
_NO_SUCH_PATH_STATUSES = frozenset({404, 405})
# Refusals of a single label that are the caller's or the transport's, not the label's: raised, as a batch raises
# them, rather than reported as that label's result.
_CALLER_REFUSED_STATUSES = frozenset({401, 403, 405, 407, 408, 429})
RetryPolicy = Literal["idempotent", "unprocessed"]


class RolloutPayload(TypedDict):
    """Body of ``POST /rollout``; extra keys are kept by the server and returned by ``GET /rollout``. A rollout of a
    forest whose answer kind is not ``label`` sends ``answer`` and may leave ``prediction`` and ``ground_truth`` out."""

    model: str
    example: str
    reasoning: list[str]
    prediction: NotRequired[int | None]
    ground_truth: NotRequired[int | None]
    answer: NotRequired[str | None]
    worker: str
    forest_name: NotRequired[str]
    root_id: NotRequired[int]
    idempotency_key: NotRequired[str]


class Rollout(RolloutPayload):
    """A rollout handed out by ``GET /rollout``: the posted fields plus ``id``, and what the server decided: the
    answer and the grader's verdict (``correct``, with ``verdict_reason`` when it could not decide)."""

    id: int
    correct: NotRequired[bool]
    verdict_reason: NotRequired[str]


class ProcessRewardLabelPayload(TypedDict):
    """Body of ``POST /process_reward_label``: one value per reasoning step."""

    rollout_id: int
    prm_output: list[float]
    prm_version: str
    worker: str
    explanations: NotRequired[list[str] | None]


class ProcessRewardLabel(ProcessRewardLabelPayload):
    id: int


class PRMAdapterInfo(TypedDict):
    prm_version: str
    base_model: NotRequired[str]
    worker: NotRequired[str]
    sha256: NotRequired[str]
    size: NotRequired[int]
    created_at: NotRequired[str]


class PrmsiteAPIError(Exception):
    """The server refused a request (4xx), or kept failing (5xx) after the retries. ``body`` is its JSON answer."""

    def __init__(self, *, method: str, url: str, status_code: int, body: Any) -> None:
        self.method = method
        self.url = url
        self.status_code = status_code
        self.body = body
        detail = body.get("detail", body) if isinstance(body, dict) else body
        super().__init__(f"{method} {url} -> {status_code}: {detail}")


class _RetryableStatus(Exception):
    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _cannot_have_reached_the_server(exc: BaseException) -> bool:
    """The request failed before any byte of it was sent: refused connection, connect timeout, unknown host."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError)
    return False


def _body_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class PrmsiteClient:
    """Typed access to every endpoint of the active-learning API."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 6,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        base_url = base_url or os.environ.get(ENV_BASE, "")
        token = token or os.environ.get(ENV_TOKEN, "")
        if not base_url:
            raise ValueError(f"No server address: pass base_url or set {ENV_BASE} (e.g. http://127.0.0.1:25565).")
        if not token:
            raise ValueError(f"No API token: pass token or set {ENV_TOKEN} (manage.py create_worker_token NAME).")
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        # False once the server answered that it has no POST /process_reward_label/batch: single posts from then on.
        self.label_batches = True

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PrmsiteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: RetryPolicy = "idempotent",
        read_timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        idempotent = retry == "idempotent"

        def retryable(exc: BaseException) -> bool:
            if isinstance(exc, _RetryableStatus):
                return True
            if idempotent:
                return isinstance(exc, requests.ConnectionError | requests.Timeout)
            return _cannot_have_reached_the_server(exc)

        def attempt() -> requests.Response:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
            if response.status_code >= 500 and (idempotent or response.status_code in _GATEWAY_STATUSES):
                response.close()
                raise _RetryableStatus(response)
            return response

        retrying = Retrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential(multiplier=self.backoff_initial, max=self.backoff_max)
            + wait_random(0, self.backoff_initial),
            before_sleep=before_sleep_log(logger, logging.WARNING),
            reraise=True,
        )
        try:
            response = retrying(attempt)
        except _RetryableStatus as exc:
            response = exc.response
        if response.status_code >= 400:
            raise PrmsiteAPIError(
                method=method, url=response.url, status_code=response.status_code, body=_body_of(response)
            )
        return response

    # --- rollouts ---------------------------------------------------------------------------------------------------

    def post_rollout(self, rollout: RolloutPayload | dict[str, Any]) -> int:
        """``POST /rollout``: store a rollout, answer its id. Retried safely: the rollout carries an
        ``idempotency_key`` (a new UUID unless the payload has one), so the server stores it once."""
        body = {**rollout, "idempotency_key": rollout.get("idempotency_key") or uuid.uuid4().hex}
        return int(self._request("POST", "/rollout", json=body).json())

    def get_rollouts(
        self,
        prm_version: str,
        *,
        limit: int | None = None,
        wait: float | None = None,
        active_learning: bool = False,
        reference_prm_version: str | None = None,
    ) -> list[Rollout]:
        """``GET /rollout``: claim rollouts not yet labelled for ``prm_version`` (they stay checked out for it until the
        server's lease timeout). ``wait`` long-polls up to that many seconds when none is available."""
        params: dict[str, Any] = {"prm_version": prm_version}
        if limit is not None:
            params["limit"] = limit
        if wait is not None:
            params["wait"] = wait
        if active_learning:
            params["active_learning"] = "True"
        if reference_prm_version is not None:
            params["reference_prm_version"] = reference_prm_version
        # A long-poll may take its whole wait before the server answers: allow for it, and a margin.
        read_timeout = max(self.read_timeout, wait + 15) if wait else self.read_timeout
        return self._request("GET", "/rollout", params=params, read_timeout=read_timeout, retry="unprocessed").json()

    def release_rollouts(self, prm_version: str, rollout_ids: Sequence[int]) -> int:
        """``POST /rollout/release``: give back rollouts this caller claimed and will not label (a worker stopping);
        answers how many leases ended."""
        if not rollout_ids:
            return 0
        body = {"prm_version": prm_version, "rollout_ids": [int(i) for i in rollout_ids]}
        return int(self._request("POST", "/rollout/release", json=body).json())

    def get_rollouts_by_ids(self, ids: Sequence[int]) -> list[Rollout]:
        """``GET /rollouts?ids=[…]``: rollouts by id, in the order given, without leasing them (several requests if
        many)."""
        rollouts: list[Rollout] = []
        for start in range(0, len(ids), KEYS_PER_REQUEST):
            chunk = [int(i) for i in ids[start : start + KEYS_PER_REQUEST]]
            rollouts += self._request(
                "GET", "/rollouts", params={"ids": json.dumps(chunk, separators=(",", ":"))}
            ).json()
        return rollouts

    # --- labels -----------------------------------------------------------------------------------------------------

    def post_process_reward_label(self, label: ProcessRewardLabelPayload | dict[str, Any]) -> int:
        """``POST /process_reward_label``: store a label (idempotent per rollout, prm_version and worker)."""
        return int(self._request("POST", "/process_reward_label", json=label).json())

    def post_process_reward_labels(
        self,
        labels: Sequence[ProcessRewardLabelPayload | dict[str, Any]],
        *,
        batch_size: int = LABELS_PER_BATCH,
        max_bytes: int = LABEL_BATCH_MAX_BYTES,
    ) -> list[dict[str, Any]]:
        """``POST /process_reward_label/batch``: store many labels; answer one result per label, in order:
        ``{"id": …}`` when stored (or stored before: the same label again), else what ``POST /process_reward_label``
        would have answered, with its ``status`` (``{"detail", "code", "status", …}``; a 409 carries the stored
        label's ``id`` too, so a result is a refusal exactly when it has ``status``).

        Sent in batches of at most ``batch_size`` labels and about ``max_bytes`` of JSON; a batch the server refuses
        whole for its size (400, 413: a server with a lower limit) is sent again in halves, and a label refused whole
        when alone is answered as that label's refusal. Retried like an
        idempotent call, also after a read timeout: the same label again answers the stored id. Against an older
        server without the batch path (404 or 405 there), each label goes to ``POST /process_reward_label`` instead,
        with the same result shape, and the client remembers it (``label_batches`` False) for its lifetime.
        Raises ``PrmsiteAPIError`` when the caller is refused (401, 403) or the server keeps failing (5xx).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        results: list[dict[str, Any]] = []
        for chunk in _label_chunks(labels, batch_size=batch_size, max_bytes=max_bytes):
            results += self._post_label_chunk(chunk)
        return results

    def _post_label_chunk(self, labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.label_batches:
            return [self._post_label_result(label) for label in labels]
        try:
            answer = self._request("POST", "/process_reward_label/batch", json={"labels": labels}).json()
        except PrmsiteAPIError as exc:
            if exc.status_code in _NO_SUCH_PATH_STATUSES:
                logger.info("the server has no POST /process_reward_label/batch (%s): posting labels one by one", exc)
                self.label_batches = False
                return [self._post_label_result(label) for label in labels]
            if exc.status_code in (400, 413):
                if len(labels) > 1:
                    half = len(labels) // 2
                    return [*self._post_label_chunk(labels[:half]), *self._post_label_chunk(labels[half:])]
                # A batch of this one label refused whole: that is the label's refusal (too large, say).
                return [_refusal_of(exc)]
            raise
        results = answer["results"] if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(labels):
            raise PrmsiteAPIError(
                method="POST", url=f"{self.base_url}/process_reward_label/batch", status_code=502, body=answer
            )
        return results

    def _post_label_result(self, label: dict[str, Any]) -> dict[str, Any]:
        """One label through ``POST /process_reward_label``, answered as a batch answers it."""
        try:
            return {"id": self.post_process_reward_label(label)}
        except PrmsiteAPIError as exc:
            # A 404 without the rollout id is the path's, not the label's (a wrong base URL).
            path_missing = exc.status_code == 404 and not (isinstance(exc.body, dict) and "rollout_id" in exc.body)
            if exc.status_code >= 500 or exc.status_code in _CALLER_REFUSED_STATUSES or path_missing:
                raise
            return _refusal_of(exc)

    def get_process_reward_label_ids(self, prm_version: str) -> list[int]:
        """``GET /process_reward_labels``: ids of every label of ``prm_version``, oldest first."""
        return self._request("GET", "/process_reward_labels", params={"prm_version": prm_version}).json()

    def get_process_reward_labels(self, keys: Sequence[int]) -> list[ProcessRewardLabel]:
        """``GET /process_reward_label?keys=[…]``: labels by id, in the order given (several requests if many)."""
        labels: list[ProcessRewardLabel] = []
        for start in range(0, len(keys), KEYS_PER_REQUEST):
            chunk = [int(k) for k in keys[start : start + KEYS_PER_REQUEST]]
            params = {"keys": json.dumps(chunk, separators=(",", ":"))}
            labels += self._request("GET", "/process_reward_label", params=params).json()
        return labels

    # --- adapters ---------------------------------------------------------------------------------------------------

    def list_prm_adapters(self) -> list[PRMAdapterInfo]:
        """``GET /prm_adapters``, oldest first."""
        return self._request("GET", "/prm_adapters").json()

    def upload_prm_adapter(self, prm_version: str, *, base_model: str, worker: str, data: bytes | str | Path) -> str:
        """``POST /prm_adapter``: upload a zip (bytes, or the path of a zip file); answer its path on the server.

        Idempotent: the same bytes for the same prm_version answer the same path; other bytes raise a 409.
        """
        body = Path(data).read_bytes() if isinstance(data, str | Path) else data
        params = {"prm_version": prm_version, "base_model": base_model, "worker": worker}
        headers = {"Content-Type": "application/zip"}
        return self._request("POST", "/prm_adapter", params=params, data=body, headers=headers).json()

    def download_prm_adapter(self, prm_version: str, destination: str | Path | None = None) -> bytes | Path:
        """``GET /prm_adapter``: the adapter's zip as bytes, or streamed into ``destination`` (answered back)."""
        response = self._request(
            "GET",
            "/prm_adapter",
            params={"prm_version": prm_version},
            headers={"Accept": "application/octet-stream"},
            stream=destination is not None,
        )
        if destination is None:
            return response.content
        target = Path(destination)
        partial = target.with_name(target.name + ".part")
        with response, partial.open("wb") as sink:
            for chunk in _chunks(response):
                sink.write(chunk)
        partial.replace(target)
        return target

    # --- forest growth and batched rollouts (rollout_worker; forests/api.py) ----------------------------------------

    def post_rollouts(self, rollouts: Sequence[RolloutPayload | dict[str, Any]]) -> list[dict[str, Any]]:
        """``POST /rollout/batch``: store many rollouts; answer one result per rollout, in order: ``{"id": …}`` or the
        error that kept it out (``{"detail", "code", "status", …}``).

        Every rollout carries an ``idempotency_key`` (a new UUID unless it has one), so the batch is retried like an
        idempotent call, also after a read timeout: the server stores a repeated rollout once.
        """
        body = {"rollouts": [{**r, "idempotency_key": r.get("idempotency_key") or uuid.uuid4().hex} for r in rollouts]}
        return self._request("POST", "/rollout/batch", json=body).json()["results"]

    def get_forest_config(self, forest_name: str) -> dict[str, Any]:
        """``GET /forest/<forest_name>/config``: the forest's generation settings and growth options."""
        return self._request("GET", f"/forest/{_segment(forest_name)}/config").json()

    def get_growth(self, forest_name: str) -> dict[str, Any]:
        """``GET /forest/<forest_name>/growth``: the growth plan and its progress."""
        return self._request("GET", f"/forest/{_segment(forest_name)}/growth").json()

    def put_growth_plan(self, forest_name: str, options: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """``PUT /forest/<forest_name>/growth``: grow the forest with ``options`` (409 if others are stored, unless
        ``replace``)."""
        body = {**options, "replace": replace}
        return self._request("PUT", f"/forest/{_segment(forest_name)}/growth", json=body).json()

    def claim_expansions(self, forest_name: str, *, limit: int, max_rollouts: int | None = None) -> dict[str, Any]:
        """``POST /forest/<forest_name>/expansions/claim``: lease expansions; ``{"expansions", "done", "reason",
        "lease_s"}``. Like a rollout claim, it is retried only when it cannot have reached the server, so a lost
        answer never leaves expansions leased twice."""
        body: dict[str, Any] = {"limit": limit}
        if max_rollouts is not None:
            body["max_rollouts"] = max_rollouts
        path = f"/forest/{_segment(forest_name)}/expansions/claim"
        return self._request("POST", path, json=body, retry="unprocessed").json()

    def release_expansions(self, forest_name: str, ids: Sequence[int], *, failed: bool = False, error: str = "") -> int:
        """``POST /forest/<forest_name>/expansions/release``: end this caller's leases on ``ids``; answer how many."""
        body = {"ids": [int(i) for i in ids], "failed": failed, "error": error[:2000]}
        path = f"/forest/{_segment(forest_name)}/expansions/release"
        return int(self._request("POST", path, json=body).json()["released"])


def _refusal_of(exc: PrmsiteAPIError) -> dict[str, Any]:
    """A refused label's entry in the answer of ``post_process_reward_labels``: the server's error body and status."""
    body = exc.body if isinstance(exc.body, dict) else {"detail": str(exc.body), "code": "error"}
    return {**body, "status": exc.status_code}


def _label_chunks(
    labels: Sequence[ProcessRewardLabelPayload | dict[str, Any]], *, batch_size: int, max_bytes: int
) -> Iterator[list[dict[str, Any]]]:
    """``labels`` in order, in chunks of at most ``batch_size`` and about ``max_bytes`` of JSON (at least one each)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for label in labels:
        length = len(json.dumps(label, separators=(",", ":"))) + 1
        if chunk and (len(chunk) >= batch_size or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(dict(label))
        size += length
    if chunk:
        yield chunk


def _segment(value: str) -> str:
    return quote(value, safe="")


def _chunks(response: requests.Response) -> Iterator[bytes]:
    yield from response.iter_content(chunk_size=1024 * 1024)
