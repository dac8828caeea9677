"""The PRM inference controller behind ``prm_label_worker``: a pure HTTP client of the server.

1. ``GET /prm_adapters`` names the adapter of the prm_version, its base model and its sha256; ``GET /prm_adapter``
   downloads it; the bytes must hash to that sha256 and pass the server's own zip check before anything is loaded
   (``adapters.prm.archive``); the base model (``--base_model`` overrides the uploaded name where paths differ between
   machines) and the adapter are loaded from safetensors and merged.
2. Then, until stopped: claim up to ``claim_size`` rollouts (``GET /rollout?prm_version=V``, long-polling ``wait``
   seconds), score every step of each (one forward pass per rollout, ``batch_size`` rollouts per pass), and post one
   reward per step, in batches (``POST /process_reward_label/batch``; one by one against an older server without it,
   ``PrmsiteClient.post_process_reward_labels``). Posting runs on ``post_threads`` threads, each with its own HTTP
   session, while the next batch is scored; a free thread takes every label scored and not yet sent (up to 500), so
   batches grow while the server is slower than the scorer.
3. A 409 for a label means someone else labelled the rollout first (``already_labelled``), holds its lease
   (``leased``), or this worker's name posted other values before (``conflict``): it is counted as *skipped*, logged,
   and the worker moves on. Another 4xx for a label is counted as *refused* and logged. A server that refuses the
   worker (401, 403) or stays unreachable after the client's retries ends the run with an error; claimed rollouts
   that were not posted come back when their lease ends, and a batch sent again stores nothing twice (the same label
   again answers its id), so a crash loses nothing and doubles nothing.
4. Stopping (``stop`` set: SIGINT/SIGTERM in the command): no new claim; the batch being scored is finished and
   posted, claimed rollouts not yet scored are released (``POST /rollout/release``) so others need not wait for their
   lease to end. A long-poll in progress ends first (at most ``wait`` seconds). ``exit_when_idle`` ends the run when a
   claim comes back empty.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests
from tqdm import tqdm

from adapters.prm.archive import adapter_zip_extract, sha256_file
from adapters.prm.errors import PRMError
from adapters.prm.modeling import device_resolve
from adapters.prm.scoring import PRMScorer
from prmsite.core.cli import FLAG_AT_LEAST_ONE
from prmsite.core.client import LABELS_PER_BATCH, PrmsiteAPIError

logger = logging.getLogger(__name__)

CLAIM_LIMIT_MAX = 1000  # the server's largest GET /rollout limit

OUTCOME_LABELLED = "labelled"
OUTCOME_SKIPPED = "skipped"
OUTCOME_REFUSED = "refused"


def default_worker_name() -> str:
    return f"{socket.gethostname()}-prm"


@dataclass
class LabelWorkerSettings:
    prm_version: str
    base_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    claim_size: int | None = None  # rollouts per claim; default batch_size
    wait: float = 10.0
    exit_when_idle: bool = False
    worker: str = field(default_factory=default_worker_name)
    post_threads: int = 4

    def check(self) -> None:
        problems = []
        if not self.prm_version:
            problems.append("--prm_version is empty")
        if self.batch_size < 1:
            problems.append(FLAG_AT_LEAST_ONE.format(flag="batch_size"))
        if self.claim_size is not None and not 1 <= self.claim_size <= CLAIM_LIMIT_MAX:
            problems.append(f"--claim_size must be in [1, {CLAIM_LIMIT_MAX}]")
        if not self.wait >= 0:
            problems.append("--wait must be 0 or more seconds")
        if self.post_threads < 1:
            problems.append(FLAG_AT_LEAST_ONE.format(flag="post_threads"))
        if not self.worker:
            problems.append("--worker is empty")
        if problems:
            raise PRMError("; ".join(problems))

    @property
    def claim_limit(self) -> int:
        return self.claim_size or min(self.batch_size, CLAIM_LIMIT_MAX)


@dataclass
class LabelWorkerSummary:
    prm_version: str
    worker: str
    claimed: int = 0
    labelled: int = 0
    steps: int = 0
    skipped: int = 0
    refused: int = 0
    released: int = 0
    seconds: float = 0.0
    ended_by: str = ""  # "idle", "stop" or "error"

    @property
    def handled(self) -> int:
        return self.labelled + self.skipped + self.refused

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps_per_second"] = self.steps / self.seconds if self.seconds > 0 else None
        return data

    def line(self) -> str:
        rate = f" ({self.steps / self.seconds:.1f} steps/s)" if self.seconds > 0 else ""
        return (
            f"prm_label_worker {self.prm_version}: labelled {self.labelled} rollouts, {self.steps} steps in "
            f"{self.seconds:.1f} s{rate}; skipped {self.skipped} (labelled or leased elsewhere), refused "
            f"{self.refused}, released {self.released}; ended by {self.ended_by}"
        )


def adapter_info_get(client: Any, prm_version: str) -> dict[str, Any]:
    adapters = client.list_prm_adapters()
    for info in adapters:
        if info["prm_version"] == prm_version:
            return dict(info)
    known = ", ".join(a["prm_version"] for a in adapters[-10:]) or "none"
    raise PRMError(f"the server has no adapter for prm_version {prm_version!r} (latest: {known})")


def adapter_fetch(client: Any, info: dict[str, Any], folder: Path) -> Path:
    """Download the adapter ``info`` describes into ``folder``, check its sha256 and zip, unpack it; answer the
    adapter folder."""
    folder = Path(folder)
    zip_path = client.download_prm_adapter(info["prm_version"], folder / "adapter.zip")
    expected = info.get("sha256")
    if expected:
        actual = sha256_file(zip_path)
        if actual != expected:
            raise PRMError(
                f"the adapter of {info['prm_version']} downloaded with sha256 {actual}, not the listed {expected}"
            )
    return adapter_zip_extract(zip_path, folder / "adapter")


class _Poster:
    """Posts labels in batches (``POST /process_reward_label/batch``) on a few threads, each with its own client.

    Labels wait in a buffer until a thread is free; a free thread takes everything waiting (up to
    ``LABELS_PER_BATCH``), so batches grow by themselves while the server is slower than the scorer. At most
    ``limit`` labels are waiting or in flight (``submit`` blocks beyond). ``close`` closes the clients it made when
    ``owns_clients`` (not a client shared with its caller).
    """

    def __init__(self, client_factory: Callable[[], Any], threads: int, limit: int, *, owns_clients: bool) -> None:
        self._local = threading.local()
        self._owns_clients = owns_clients
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._factory = client_factory
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prm-post")
        self._waiting: list[dict[str, Any]] = []
        self._pending: deque[tuple[Future, int]] = deque()  # (post, labels in it), oldest first
        self._limit = limit

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._factory()
            with self._lock:
                self._clients.append(client)
        return client

    def _post(self, labels: list[dict[str, Any]]) -> list[tuple[str, int]]:
        """Post ``labels`` in one batch; answer (outcome, steps) for each. The server refusing the caller or failing
        (after the client's retries) raises."""
        results = self._client().post_process_reward_labels(labels)
        outcomes: list[tuple[str, int]] = []
        for label, result in zip(labels, results, strict=True):
            steps = len(label["prm_output"])
            status = result.get("status")
            if status is None:
                outcomes.append((OUTCOME_LABELLED, steps))
            elif status == 409:
                logger.info("rollout %s: labelled elsewhere (%s); skipped", label["rollout_id"], result.get("code"))
                outcomes.append((OUTCOME_SKIPPED, steps))
            else:
                detail = result.get("detail")
                logger.warning("rollout %s: the server refused the label (%s): %s", label["rollout_id"], status, detail)
                outcomes.append((OUTCOME_REFUSED, steps))
        return outcomes

    def _dispatch(self) -> None:
        """Hand the waiting labels to free threads, a batch each."""
        while self._waiting and sum(1 for post, _ in self._pending if not post.done()) < self._threads:
            batch, self._waiting = self._waiting[:LABELS_PER_BATCH], self._waiting[LABELS_PER_BATCH:]
            self._pending.append((self._pool.submit(self._post, batch), len(batch)))

    def _in_flight(self) -> int:
        return len(self._waiting) + sum(count for _, count in self._pending)

    def submit(self, labels: Sequence[dict[str, Any]], summary: LabelWorkerSummary) -> None:
        self._waiting.extend(labels)
        self.collect(summary, keep=self._limit)

    def collect(self, summary: LabelWorkerSummary, *, keep: int = 0) -> None:
        """Account for finished posts; wait for the oldest until at most ``keep`` labels are waiting or in flight. A
        post that failed for good raises here."""
        while True:
            self._dispatch()
            if not self._pending or not (self._pending[0][0].done() or self._in_flight() > keep):
                return
            post, _count = self._pending.popleft()
            for outcome, steps in post.result():
                if outcome == OUTCOME_LABELLED:
                    summary.labelled += 1
                    summary.steps += steps
                elif outcome == OUTCOME_SKIPPED:
                    summary.skipped += 1
                else:
                    summary.refused += 1

    def close(self, *, cancel: bool = False) -> None:
        """Post what waits and wait for the posts in flight; ``cancel`` drops the labels not yet sent (the server is
        failing anyway)."""
        if not cancel:
            while self._waiting:
                batch, self._waiting = self._waiting[:LABELS_PER_BATCH], self._waiting[LABELS_PER_BATCH:]
                self._pool.submit(self._post, batch)
        self._waiting = []
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        for client in self._clients if self._owns_clients else ():
            close = getattr(client, "close", None)
            if callable(close):
                close()


def _release(client: Any, prm_version: str, rollouts: Sequence[dict[str, Any]], summary: LabelWorkerSummary) -> None:
    """Give claimed, unposted rollouts back to the queue; when that fails their leases end on their own."""
    if not rollouts:
        return
    ids = [int(r["id"]) for r in rollouts]
    try:
        summary.released += int(client.release_rollouts(prm_version, ids))
    except (PrmsiteAPIError, requests.RequestException) as exc:
        logger.warning("could not release %d rollout(s) (%s); they come back when their lease ends", len(ids), exc)


def label_loop(
    scorer: Any,
    client: Any,
    settings: LabelWorkerSettings,
    *,
    stop: threading.Event,
    client_factory: Callable[[], Any] | None = None,
    on_progress: Callable[[LabelWorkerSummary], None] | None = None,
) -> LabelWorkerSummary:
    """Claim, score and post until ``stop`` is set or, with ``exit_when_idle``, a claim comes back empty.

    ``scorer.score([(prompt, steps), …])`` gives the rewards; ``client`` claims and releases, ``client_factory()``
    makes the posting threads' clients (default: ``client`` itself, for clients safe to share between threads).
    """
    settings.check()
    summary = LabelWorkerSummary(prm_version=settings.prm_version, worker=settings.worker)
    poster = _Poster(
        client_factory or (lambda: client),
        settings.post_threads,
        limit=2 * settings.claim_limit,
        owns_clients=client_factory is not None,
    )
    started = time.monotonic()
    claimed: list[dict[str, Any]] = []
    server_failing = False
    try:
        while not stop.is_set():
            claimed = client.get_rollouts(settings.prm_version, limit=settings.claim_limit, wait=settings.wait)
            summary.claimed += len(claimed)
            if not claimed:
                poster.collect(summary)
                if settings.exit_when_idle:
                    summary.ended_by = "idle"
                    break
                continue
            while claimed and not stop.is_set():
                chunk = claimed[: settings.batch_size]
                rewards = scorer.score([(r["example"], r["reasoning"]) for r in chunk])
                labels = [
                    {
                        "rollout_id": rollout["id"],
                        "prm_output": values,
                        "prm_version": settings.prm_version,
                        "worker": settings.worker,
                    }
                    for rollout, values in zip(chunk, rewards, strict=True)
                ]
                poster.submit(labels, summary)
                claimed = claimed[len(chunk) :]
                if on_progress is not None:
                    on_progress(summary)
        poster.collect(summary)
        if not summary.ended_by:
            summary.ended_by = "stop"
    except BaseException as exc:
        summary.ended_by = "error"
        server_failing = isinstance(exc, PrmsiteAPIError | requests.RequestException)
        raise
    finally:
        try:
            _release(client, settings.prm_version, claimed, summary)
            if summary.ended_by != "error":
                poster.collect(summary)
        finally:
            # After a scoring failure the labels already computed are still posted; after a server failure the
            # posts not yet started are dropped (their rollouts come back when their lease ends).
            poster.close(cancel=server_failing)
            summary.seconds = time.monotonic() - started
            if on_progress is not None:
                on_progress(summary)
    return summary


def prm_label_worker_run(
    settings: LabelWorkerSettings,
    *,
    client: Any,
    client_factory: Callable[[], Any] | None = None,
    stop: threading.Event | None = None,
    progress_file: TextIO | None = None,
    log: Callable[[str], None] = logger.info,
) -> LabelWorkerSummary:
    """What ``prm_label_worker`` does: fetch and check the adapter, load the PRM, run ``label_loop``."""
    settings.check()
    stop = stop or threading.Event()
    info = adapter_info_get(client, settings.prm_version)
    device = device_resolve(settings.device)
    with tempfile.TemporaryDirectory(prefix="prm-label-worker-") as folder:
        adapter_folder = adapter_fetch(client, info, Path(folder))
        base_model = settings.base_model or info.get("base_model") or None
        sha = str(info.get("sha256") or "?")[:12]
        log(f"{settings.prm_version}: adapter sha256 {sha}…, base model {base_model}, device {device}")
        scorer = PRMScorer.from_adapter_folder(
            adapter_folder, base_model=base_model, device=device, dtype=settings.dtype, batch_size=settings.batch_size
        )
    bar = tqdm(unit="rollout", desc=f"labelling {settings.prm_version}", file=progress_file, disable=None)

    def progress(summary: LabelWorkerSummary) -> None:
        bar.update(summary.handled - bar.n)
        bar.set_postfix(steps=summary.steps, skipped=summary.skipped, refused=summary.refused, refresh=False)

    try:
        return label_loop(scorer, client, settings, stop=stop, client_factory=client_factory, on_progress=progress)
    finally:
        bar.close()
