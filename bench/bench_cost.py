"""What a request costs the server: CPU time per item of each kind of request, against the service layer doing the
same work in one process (the floor), on SQLite and on PostgreSQL.

    .venv/bin/python bench/bench_cost.py            # or: python bench/run.py bench_cost  (--short: a fifth the size)

Each backend gets a fresh database (a temporary SQLite file; the PostgreSQL database ``prmsite_cost_bench`` on
``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432``; ``BENCH_COST_DATABASES=sqlite`` or ``postgresql``
runs one), migrated, with a worker token, the forests the expansion claims need and one adapter. The production
server (``python -m prmsite.wsgi``: uvicorn, ``BENCH_COST_WORKERS`` processes, default 1) serves it; one client sends
the requests one after the other, so the server's CPU is the requests' alone. Every kind is first run a few times
(warm-up: imports, URL resolver, connection), then measured:

- ``POST /rollout/batch``, 100 rollouts a request, per rollout; ``POST /rollout``, per rollout;
- ``GET /rollout`` claims, limit 1 and limit 100, per rollout;
- ``POST /process_reward_label`` per label (the rollouts claimed at limit 1), and ``POST /process_reward_label/batch``
  per label (the rollouts claimed at limit 100; skipped, with a row saying so, while that endpoint answers 404);
- ``POST /forest/<name>/expansions/claim``, limit 1 and limit 50, per expansion;
- ``GET /prm_adapter`` (a 1 MiB zip), per download.

The server's CPU is the user + system time of its processes (the server and its children, psutil: /proc/<pid>/stat)
read before and after each kind. The floor, in a child process on the same database, makes the calls the views make
(``receive_rollouts``, ``receive_rollout``, ``checkout_claim_wait`` with the view's encoder, ``label_create``,
``expansion_claim`` with its answer encoded, ``adapter_get`` + reading the file) on data of its own, timed with
``time.process_time()``.
On PostgreSQL the CPU of the database's own backends is read too (the ``postgres`` processes serving the bench
database, sampled every 0.1 s through the run: psutil on /proc), for the server's requests and for the floor's.

The last lines are Markdown rows ``| benchmark | figure | floor | ratio |``: CPU ms per item on the server and in the
floor, and their ratio (goal: the batch paths within 1.5x).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import (  # noqa: E402
    RATIO_HEADER,
    PostgresUnavailable,
    manage,
    postgres_database,
    production_server,
    stop,
    table_print,
)

SHORT = os.environ.get("BENCH_SHORT") == "1"
WORKERS = int(os.environ.get("BENCH_COST_WORKERS", "1"))
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = "prmsite_cost_bench"
USER = "bench"
STEPS = ["Step 1: the sky is usually blue. ", "Step 2: so the statement is false. ", "Verdict: False (code: 0)"]
PRM_OUTPUT = [0.91, 0.52, 0.13]
ADAPTER_VERSION = "bench-adapter"
ADAPTER_BYTES = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """Items of each kind measured (the warm-up runs ``Sizes.warm()``)."""

    rollouts_batch: int = 1000
    rollout_batch_size: int = 100
    rollouts_single: int = 200
    claims_single: int = 200
    claims_batch: int = 1000
    claim_batch_limit: int = 100
    label_batch_size: int = 100
    expansions_single: int = 200
    expansions_batch: int = 1000
    expansion_batch_limit: int = 50
    downloads: int = 100

    def scaled(self, divisor: int) -> Sizes:
        return Sizes(
            **{
                name: max(1, value // divisor) if not name.endswith(("_size", "_limit")) else value
                for name, value in vars(self).items()
            }
        )

    @staticmethod
    def warm() -> Sizes:
        return Sizes(
            rollouts_batch=20,
            rollout_batch_size=10,
            rollouts_single=5,
            claims_single=5,
            claims_batch=20,
            claim_batch_limit=10,
            label_batch_size=10,
            expansions_single=5,
            expansions_batch=20,
            expansion_batch_limit=10,
            downloads=3,
        )


def sizes_from_env() -> Sizes:
    return Sizes().scaled(5) if SHORT else Sizes()


@dataclass(frozen=True)
class Kind:
    """One kind of request: its row's name, what an item is, and the part of ``Sizes`` it uses."""

    key: str
    name: str
    item: str
    batch: bool


KINDS = [
    Kind("rollouts_batch", "POST /rollout/batch (100 a request)", "rollout", True),
    Kind("rollouts_single", "POST /rollout", "rollout", False),
    Kind("claims_single", "GET /rollout claim, limit 1", "rollout", False),
    Kind("claims_batch", "GET /rollout claim, limit 100", "rollout", True),
    Kind("labels_single", "POST /process_reward_label", "label", False),
    Kind("labels_batch", "POST /process_reward_label/batch (100 a request)", "label", True),
    Kind("expansions_single", "POST /forest/<name>/expansions/claim, limit 1", "expansion", False),
    Kind("expansions_batch", "POST /forest/<name>/expansions/claim, limit 50", "expansion", True),
    Kind("downloads", "GET /prm_adapter (1 MiB zip)", "download", False),
]


class Skipped(Exception):
    """A kind the server cannot serve yet (its endpoint answers 404); the message says why."""


@dataclass
class Work:
    """What one run of a kind did: requests sent (0 in the floor) and items handled."""

    requests: int = 0
    items: int = 0


@dataclass
class Run:
    """The state one pass of every kind shares: its name prefix (versions, forests, examples) and what it claimed."""

    prefix: str
    sizes: Sizes
    claimed: dict[str, list[int]] = field(default_factory=dict)

    def version(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"

    def forest(self, kind: str) -> str:
        return f"{self.prefix}-{kind}"


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rollout_bodies(prefix: str, kind: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "model": "bench-model",
            "example": f"{prefix} {kind} {i}: is the statement 'the sky is green' true?",
            "reasoning": STEPS,
            "prediction": 0,
            "ground_truth": 0,
            "worker": "bench-worker",
        }
        for i in range(count)
    ]


def label_body(rollout_id: int, version: str) -> dict[str, Any]:
    return {"rollout_id": rollout_id, "prm_output": PRM_OUTPUT, "prm_version": version, "worker": "bench-prm"}


# --- CPU clocks -------------------------------------------------------------------------------------------------------


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its live descendants (the server and its worker processes)."""
    root = psutil.Process(pid)
    total = _cpu(root)
    for child in root.children(recursive=True):
        try:
            total += _cpu(child)
        except psutil.NoSuchProcess:
            continue
    return total


def postgres_backends(dbname: str) -> dict[int, float]:
    """CPU seconds of each live PostgreSQL backend serving ``dbname`` (by its process title)."""
    found: dict[int, float] = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(process.info["cmdline"] or [])
            if title.startswith("postgres: ") and f" {dbname} " in title:
                found[process.pid] = _cpu(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


class BackendSampler:
    """CPU of a database's PostgreSQL backends over a stretch of time: each backend's last reading (sampled every
    ``every_s`` in a thread, so a backend that exits between readings loses at most that interval) less its reading
    at the start (0 for one that started later)."""

    def __init__(self, dbname: str, every_s: float = 0.1) -> None:
        self.dbname = dbname
        self.every_s = every_s
        self.latest: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()

    def _sample(self) -> None:
        now = postgres_backends(self.dbname)
        with self._lock:
            self.latest.update(now)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> BackendSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self) -> dict[int, float]:
        self._sample()
        with self._lock:
            return dict(self.latest)

    @staticmethod
    def spent(start: dict[int, float], end: dict[int, float]) -> float:
        return sum(cpu - start.get(pid, 0.0) for pid, cpu in end.items())


# --- the requests (HTTP) ----------------------------------------------------------------------------------------------


class Api:
    """The bench's HTTP client: one keep-alive session with the worker token; ``call`` answers the response."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.base}{path}", timeout=120, **kwargs)


def _ok(response: requests.Response) -> Any:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.status_code} {response.text[:300]}")
    return response.json()


def http_rollouts_batch(api: Api, run: Run) -> Work:
    work = Work()
    bodies = rollout_bodies(run.prefix, "batch", run.sizes.rollouts_batch)
    for chunk in chunks(bodies, run.sizes.rollout_batch_size):
        results = _ok(api.call("POST", "/rollout/batch", json={"rollouts": list(chunk)}))["results"]
        if not all("id" in result for result in results):
            raise RuntimeError(f"a rollout of the batch was refused: {results}")
        work.requests += 1
        work.items += len(results)
    return work


def http_rollouts_single(api: Api, run: Run) -> Work:
    work = Work()
    for body in rollout_bodies(run.prefix, "single", run.sizes.rollouts_single):
        _ok(api.call("POST", "/rollout", json=body))
        work.requests += 1
        work.items += 1
    return work


def _http_claims(api: Api, run: Run, kind: str, count: int, limit: int) -> Work:
    work = Work()
    claimed = run.claimed.setdefault(kind, [])
    while work.items < count:
        params = {"prm_version": run.version(kind), "limit": min(limit, count - work.items)}
        got = _ok(api.call("GET", "/rollout", params=params))
        work.requests += 1
        if not got:
            raise RuntimeError(f"the queue ran dry after {work.items} of {count} claims")
        claimed += [rollout["id"] for rollout in got]
        work.items += len(got)
    return work


def http_claims_single(api: Api, run: Run) -> Work:
    return _http_claims(api, run, "claims_single", run.sizes.claims_single, 1)


def http_claims_batch(api: Api, run: Run) -> Work:
    return _http_claims(api, run, "claims_batch", run.sizes.claims_batch, run.sizes.claim_batch_limit)


def http_labels_single(api: Api, run: Run) -> Work:
    work = Work()
    version = run.version("claims_single")
    for rollout_id in run.claimed["claims_single"]:
        _ok(api.call("POST", "/process_reward_label", json=label_body(rollout_id, version)))
        work.requests += 1
        work.items += 1
    return work


def http_labels_batch(api: Api, run: Run) -> Work:
    work = Work()
    version = run.version("claims_batch")
    for chunk in chunks(run.claimed["claims_batch"], run.sizes.label_batch_size):
        response = api.call(
            "POST", "/process_reward_label/batch", json={"labels": [label_body(i, version) for i in chunk]}
        )
        if response.status_code == 404 and work.requests == 0:
            raise Skipped("POST /process_reward_label/batch answers 404 on this server (not built yet)")
        results = _ok(response)["results"]
        if not all("id" in result for result in results):
            raise RuntimeError(f"a label of the batch was refused: {results}")
        work.requests += 1
        work.items += len(results)
    return work


def _http_expansions(api: Api, run: Run, kind: str, count: int, limit: int) -> Work:
    work = Work()
    while work.items < count:
        body = {"limit": min(limit, count - work.items)}
        got = _ok(api.call("POST", f"/forest/{run.forest(kind)}/expansions/claim", json=body))["expansions"]
        work.requests += 1
        if not got:
            raise RuntimeError(f"forest {run.forest(kind)} ran out of expansions after {work.items} of {count}")
        work.items += len(got)
    return work


def http_expansions_single(api: Api, run: Run) -> Work:
    return _http_expansions(api, run, "expansions_single", run.sizes.expansions_single, 1)


def http_expansions_batch(api: Api, run: Run) -> Work:
    return _http_expansions(api, run, "expansions_batch", run.sizes.expansions_batch, run.sizes.expansion_batch_limit)


def http_downloads(api: Api, run: Run) -> Work:
    work = Work()
    for _ in range(run.sizes.downloads):
        response = api.call("GET", "/prm_adapter", params={"prm_version": ADAPTER_VERSION})
        if response.status_code != 200 or len(response.content) != ADAPTER_BYTES:
            raise RuntimeError(f"adapter download: {response.status_code}, {len(response.content)} bytes")
        work.requests += 1
        work.items += 1
    return work


HTTP: dict[str, Callable[[Api, Run], Work]] = {
    "rollouts_batch": http_rollouts_batch,
    "rollouts_single": http_rollouts_single,
    "claims_single": http_claims_single,
    "claims_batch": http_claims_batch,
    "labels_single": http_labels_single,
    "labels_batch": http_labels_batch,
    "expansions_single": http_expansions_single,
    "expansions_batch": http_expansions_batch,
    "downloads": http_downloads,
}


# --- the floor: the views' service calls, in one process ----------------------------------------------------------
# Django is imported inside these functions: the parent process (the HTTP client) never sets Django up.


def _validated(serializer_class, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bodies as the view's serializer hands them to the service (done before the clock: the floor is the
    service's work alone)."""
    validated = []
    for body in bodies:
        serializer = serializer_class(data=body)
        serializer.is_valid(raise_exception=True)
        validated.append(serializer.validated_data)
    return validated


def floor_rollouts_batch(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    from forests.intake import receive_rollouts  # deferred: see the section's comment
    from forests.intake_serializers import RolloutCreateSerializer  # deferred: as above

    items = _validated(RolloutCreateSerializer, rollout_bodies(run.prefix, "batch", run.sizes.rollouts_batch))
    work = Work()
    started = clock()
    for chunk in chunks(items, run.sizes.rollout_batch_size):
        results = receive_rollouts(chunk, answered_by=USER)
        work.items += sum(1 for result in results if not isinstance(result, Exception))
    return work, clock() - started


def floor_rollouts_single(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    from forests.intake import receive_rollout  # deferred: see the section's comment
    from forests.intake_serializers import RolloutCreateSerializer  # deferred: as above

    items = _validated(RolloutCreateSerializer, rollout_bodies(run.prefix, "single", run.sizes.rollouts_single))
    work = Work()
    started = clock()
    for fields in items:
        receive_rollout(**fields, answered_by=USER)
        work.items += 1
    return work, clock() - started


def _floor_claims(run: Run, clock: Callable[[], float], kind: str, count: int, limit: int) -> tuple[Work, float]:
    from django.conf import settings  # deferred: see the section's comment

    from rollouts.queue import checkout_claim_wait  # deferred: as above
    from rollouts.views import rollout_encode  # deferred: as above

    work = Work()
    claimed = run.claimed.setdefault(kind, [])
    started = clock()
    while work.items < count:
        result = checkout_claim_wait(
            wait_s=0,
            claimed_by=USER,
            encode=rollout_encode,
            max_bytes=settings.PRM_CLAIM_MAX_BYTES,
            prm_version=run.version(kind),
            limit=min(limit, count - work.items),
            active_learning=False,
            reference_prm_version=None,
        )
        ids = [rollout["id"] for rollout in json.loads(result.body)]
        if not ids:
            raise RuntimeError(f"the queue ran dry after {work.items} of {count} claims")
        claimed += ids
        work.items += len(ids)
    return work, clock() - started


def floor_claims_single(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    return _floor_claims(run, clock, "claims_single", run.sizes.claims_single, 1)


def floor_claims_batch(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    return _floor_claims(run, clock, "claims_batch", run.sizes.claims_batch, run.sizes.claim_batch_limit)


def _floor_labels(run: Run, clock: Callable[[], float], kind: str) -> tuple[Work, float]:
    from rollouts.labels import label_create  # deferred: see the section's comment
    from rollouts.serializers import ProcessRewardLabelCreateSerializer  # deferred: as above

    bodies = [label_body(rollout_id, run.version(kind)) for rollout_id in run.claimed[kind]]
    items = _validated(ProcessRewardLabelCreateSerializer, bodies)
    work = Work()
    started = clock()
    for fields in items:
        label_create(**fields, labelled_by=USER)
        work.items += 1
    return work, clock() - started


def floor_labels_single(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    return _floor_labels(run, clock, "claims_single")


def floor_labels_batch(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    # Each label of a batch is its own transaction with the single endpoint's rules: the floor is label_create's.
    return _floor_labels(run, clock, "claims_batch")


def _floor_expansions(run: Run, clock: Callable[[], float], kind: str, count: int, limit: int) -> tuple[Work, float]:
    from django.utils import timezone  # deferred: see the section's comment

    from forests.growth.queue import expansion_claim  # deferred: as above
    from forests.growth.serializers import claimed_expansion_data  # deferred: as above

    work = Work()
    started = clock()
    while work.items < count:
        got = expansion_claim(
            forest_name=run.forest(kind),
            claimed_by=USER,
            now=timezone.now(),
            limit=min(limit, count - work.items),
            max_rollouts=None,
        ).expansions
        if not got:
            raise RuntimeError(f"forest {run.forest(kind)} ran out of expansions after {work.items} of {count}")
        json.dumps([claimed_expansion_data(expansion) for expansion in got])  # the answer, as claims encode theirs
        work.items += len(got)
    return work, clock() - started


def floor_expansions_single(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    return _floor_expansions(run, clock, "expansions_single", run.sizes.expansions_single, 1)


def floor_expansions_batch(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    return _floor_expansions(
        run, clock, "expansions_batch", run.sizes.expansions_batch, run.sizes.expansion_batch_limit
    )


def floor_downloads(run: Run, clock: Callable[[], float]) -> tuple[Work, float]:
    from adapters.selectors import adapter_file_open, adapter_get  # deferred: see the section's comment

    work = Work()
    started = clock()
    for _ in range(run.sizes.downloads):
        adapter = adapter_get(prm_version=ADAPTER_VERSION)
        size = 0
        with adapter_file_open(adapter=adapter) as stream:
            while chunk := stream.read(64 * 1024):
                size += len(chunk)
        if size != ADAPTER_BYTES:
            raise RuntimeError(f"adapter read: {size} bytes")
        work.items += 1
    return work, clock() - started


FLOOR: dict[str, Callable[[Run, Callable[[], float]], tuple[Work, float]]] = {
    "rollouts_batch": floor_rollouts_batch,
    "rollouts_single": floor_rollouts_single,
    "claims_single": floor_claims_single,
    "claims_batch": floor_claims_batch,
    "labels_single": floor_labels_single,
    "labels_batch": floor_labels_batch,
    "expansions_single": floor_expansions_single,
    "expansions_batch": floor_expansions_batch,
    "downloads": floor_downloads,
}


# --- the data both sides need -------------------------------------------------------------------------------------


def expansion_forests(run: Run) -> dict[str, int]:
    """The forests ``run``'s expansion claims take from, and their roots (one expansion each)."""
    return {
        run.forest("expansions_single"): run.sizes.expansions_single,
        run.forest("expansions_batch"): run.sizes.expansions_batch,
    }


def seed_expansion_forest(name: str, roots: int) -> None:
    """A forest of ``roots`` one-node trees with a repeats plan (one rollout a root): each root is one expansion."""
    from django.db import transaction  # deferred: see the section's comment
    from django.db.models import F  # deferred: as above
    from django.utils import timezone  # deferred: as above

    from forests.growth.plan import growth_plan_set  # deferred: as above
    from forests.models import Forest, Node, text_sha256  # deferred: as above

    with transaction.atomic():
        forest = Forest.objects.create(name=name, rollout_config={"reasoning_delimiter_pattern": "Step"})
        Node.objects.bulk_create(
            [
                Node(forest=forest, depth=0, text=f"q{i}", text_sha256=text_sha256(f"q{i}"), ground_truth=1)
                for i in range(roots)
            ],
            batch_size=2000,
        )
        Node.objects.filter(forest=forest, depth=0).update(tree=F("id"))
    growth_plan_set(forest_name=name, given={"policy": "repeats", "num_repeats": 1}, now=timezone.now())


def seed_adapter() -> None:
    """One adapter of ADAPTER_BYTES (what a download reads; downloads never validate, so any bytes do)."""
    from django.core.files.base import ContentFile  # deferred: see the section's comment

    from adapters.models import PRMAdapter  # deferred: as above
    from adapters.services import storage_filename  # deferred: as above

    data = (b"prmsite bench adapter " * (ADAPTER_BYTES // 22 + 1))[:ADAPTER_BYTES]
    adapter = PRMAdapter(
        prm_version=ADAPTER_VERSION,
        base_model="bench-base",
        worker="bench",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    adapter.file.save(storage_filename(ADAPTER_VERSION), ContentFile(data), save=False)
    adapter.save()


def runs(sizes: Sizes, side: str) -> list[Run]:
    """The two passes of one side (``http`` or ``floor``): a warm-up, then the measured one."""
    return [Run(f"{side}-warm", Sizes.warm()), Run(side, sizes)]


def _django() -> None:
    import django  # deferred: the parent process never sets Django up

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    django.setup()


def setup(sizes: Sizes) -> None:
    """Child process: the forests both sides claim expansions from, and the adapter."""
    _django()
    for side in ("http", "floor"):
        for run in runs(sizes, side):
            for name, roots in expansion_forests(run).items():
                seed_expansion_forest(name, roots)
    seed_adapter()
    print(json.dumps({"ok": True}))


# --- measuring ----------------------------------------------------------------------------------------------------


@dataclass
class Measure:
    """One kind measured: the work done, the CPU seconds it cost, and the database backends' CPU seconds (None
    where not read)."""

    work: Work
    cpu_s: float
    db_cpu_s: float | None = None
    skipped: str | None = None

    def per_item_ms(self) -> float:
        return self.cpu_s / self.work.items * 1000

    def db_per_item_ms(self) -> float | None:
        return None if self.db_cpu_s is None else self.db_cpu_s / self.work.items * 1000


def measure_http(api: Api, run: Run, clock: Callable[[], float], sampler: BackendSampler | None) -> dict[str, Measure]:
    """Every kind through ``api``, in order, each between two readings of ``clock`` (the server's CPU)."""
    measured: dict[str, Measure] = {}
    for kind in KINDS:
        db_start = sampler.mark() if sampler else None
        started = clock()
        try:
            work = HTTP[kind.key](api, run)
        except Skipped as exc:
            measured[kind.key] = Measure(Work(), 0.0, skipped=str(exc))
            continue
        spent = clock() - started
        db = BackendSampler.spent(db_start, sampler.mark()) if sampler else None
        measured[kind.key] = Measure(work, spent, db)
    return measured


def measure_floor(run: Run, backend_cpu: Callable[[], float] | None) -> dict[str, Measure]:
    """Every kind through the service layer in this process, CPU by ``time.process_time()``; with ``backend_cpu``
    (this process's PostgreSQL backend), the database's CPU too."""
    measured: dict[str, Measure] = {}
    for kind in KINDS:
        db_start = backend_cpu() if backend_cpu else None
        work, spent = FLOOR[kind.key](run, time.process_time)
        db = backend_cpu() - db_start if backend_cpu and db_start is not None else None
        measured[kind.key] = Measure(work, spent, db)
    return measured


def _own_backend_cpu() -> Callable[[], float] | None:
    """A clock of this process's PostgreSQL backend (None on SQLite)."""
    from django.db import connection  # deferred: see the section's comment

    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = psutil.Process(cursor.fetchone()[0])
    return lambda: _cpu(backend)


def _as_json(measured: dict[str, Measure]) -> dict[str, Any]:
    return {
        key: {"requests": m.work.requests, "items": m.work.items, "cpu_s": m.cpu_s, "db_cpu_s": m.db_cpu_s}
        for key, m in measured.items()
    }


def floor(sizes: Sizes) -> None:
    """Child process: the floor's passes; prints the measured one as JSON."""
    _django()
    backend_cpu = _own_backend_cpu()
    measured: dict[str, Measure] = {}
    for run in runs(sizes, "floor"):
        measured = measure_floor(run, backend_cpu)
    print(json.dumps(_as_json(measured)))


def child(env: dict[str, str], flag: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, flag], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def rows_for(label: str, server: dict[str, Measure], service: dict[str, Any]) -> list[str]:
    rows = []
    for kind in KINDS:
        got = server[kind.key]
        if got.skipped:
            rows.append(f"| CPU per {kind.item}, {kind.name}, {label} | skipped: {got.skipped} | | |")
            continue
        base = service[kind.key]
        base_ms = base["cpu_s"] / base["items"] * 1000
        figure = f"server {got.per_item_ms():.2f} ms ({got.work.items} in {got.work.requests} requests)"
        floor_text = f"service in 1 process: {base_ms:.2f} ms"
        if got.db_cpu_s is not None:
            figure += f", PostgreSQL {got.db_per_item_ms():.2f} ms"
        if base.get("db_cpu_s") is not None:
            floor_text += f", PostgreSQL {base['db_cpu_s'] / base['items'] * 1000:.2f} ms"
        ratio = got.per_item_ms() / base_ms
        rows.append(f"| CPU per {kind.item}, {kind.name}, {label} | {figure} | {floor_text} | {ratio:.2f} |")
    return rows


def bench_backend(
    label: str, database_url: str, env_base: dict[str, str], sizes: Sizes, pg_name: str | None
) -> list[str]:
    env = {**env_base, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    token = manage(env, "create_worker_token", USER).strip().splitlines()[-1]
    child(env, "--setup")
    server, base = production_server(env, workers=WORKERS, token=token)
    try:
        api = Api(base, token)
        clock = lambda: process_tree_cpu_s(server.pid)  # noqa: E731
        sampler = BackendSampler(pg_name) if pg_name else None
        if sampler:
            sampler.__enter__()
        try:
            measured: dict[str, Measure] = {}
            for run in runs(sizes, "http"):
                measured = measure_http(api, run, clock, sampler)
        finally:
            if sampler:
                sampler.__exit__()
    finally:
        stop(server)
    return rows_for(label, measured, child(env, "--floor"))


def main() -> int:
    sizes = sizes_from_env()
    wanted = {name.strip() for name in os.environ.get("BENCH_COST_DATABASES", "sqlite,postgresql").split(",")}
    with tempfile.TemporaryDirectory(prefix="prmsite-bench-cost-") as folder:
        env_base = {
            **os.environ,
            "DJANGO_LOG_LEVEL": "WARNING",
            "DJANGO_DEBUG": "0",
            "PYTHONPATH": str(ROOT),
            "DJANGO_MEDIA_ROOT": str(Path(folder) / "media"),
            "BENCH_SHORT": "1" if SHORT else "0",
        }
        rows: list[str] = []
        started = time.monotonic()
        if "sqlite" in wanted:
            rows += bench_backend("SQLite", f"sqlite:///{Path(folder) / 'bench.sqlite3'}", env_base, sizes, None)
        if "postgresql" in wanted:
            try:
                with postgres_database(PG_BASE, PG_NAME) as url:
                    rows += bench_backend("PostgreSQL", url, env_base, sizes, PG_NAME)
            except PostgresUnavailable as exc:  # no PostgreSQL here: say so rather than fail the SQLite figures
                rows.append(f"| PostgreSQL | skipped: {exc.reason} | | |")
    print(
        f"one client, requests one after the other; uvicorn {WORKERS} worker process(es); "
        f"{os.cpu_count()} cores; {time.monotonic() - started:.0f} s"
    )
    table_print(RATIO_HEADER, rows)
    return 0


if __name__ == "__main__":
    if "--setup" in sys.argv:
        setup(sizes_from_env())
    elif "--floor" in sys.argv:
        floor(sizes_from_env())
    else:
        raise SystemExit(main())
