"""Load test of the active-learning API: 64 concurrent clients mixing every kind of call against the production server,
on SQLite and on PostgreSQL, for minutes, then an audit read straight from the database.

    .venv/bin/python bench/bench_load.py                 # or: python bench/run.py bench_load  (--short: 15 s a backend)
    BENCH_LOAD_SECONDS=20 .venv/bin/python bench/bench_load.py

Each backend gets a fresh database (a temporary SQLite file; the PostgreSQL database ``prmsite_load_bench`` on
``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432``), migrated, with one worker token, two forests
(``load-trie``: roots that clients post rollouts into; ``load-grow``: roots with a growth plan, ``repeats`` x 8) and one
valid LoRA adapter uploaded through the API. The production server (``python -m prmsite.wsgi``: uvicorn,
``BENCH_WORKERS`` processes, default 2 x cores + 1) serves it. Then ``BENCH_LOAD_CLIENTS`` (default 64) asyncio clients
(aiohttp, one connection each, no think time) run for ``BENCH_LOAD_SECONDS`` (default 180) in these roles:

- 3/8 posters: ``POST /rollout`` with ``forest_name``, ``root_id`` and an ``idempotency_key`` (the rollout goes into
  the forest's trie); one post in 20 is sent again with the same key (a retry), which must answer the same id;
- 1/8 growers, as ``rollout_worker`` in forest mode: ``POST /forest/load-grow/expansions/claim`` (limit 2), then one
  ``POST /rollout`` with ``expansion_id`` per rollout each expansion asks for;
- 3/8 labellers, as a PRM controller: ``GET /rollout?prm_version=V&limit=16``, then ``POST /process_reward_label`` for
  every rollout handed out; one label in 20 is posted again (the documented retry: same id);
- 1/8 downloaders: ``GET /prm_adapter?prm_version=…`` (the bytes must match the upload).

A client stops starting new work at the deadline and finishes what it holds (labels what it claimed, answers the
expansions it leased). Every non-2xx answer, exception, or retry answering another id is an error. Afterwards a child
process reads the database: every posted rollout stored exactly once under its key with the id its client got, and
nothing else stored; no rollout handed out twice; every claimed rollout labelled exactly once for V with the id its
labeller got, and no other label; no lease left (the labels ended them); every expansion leased once and answered
with the rollouts its grower posted.

The floor, measured in the same run on the same database: the same operations through the services in one process,
one after the other, without HTTP (``BENCH_LOAD_FLOOR_S`` seconds each, default 3; 0 skips it). Ratio = HTTP req/s
of the mix / floor ops/s. The last lines are Markdown tables, one per backend; ``BENCH_LOAD_JSON`` names a file that
receives the figures and audits as JSON; ``BENCH_LOAD_DATABASES`` picks backends (``sqlite,postgresql``;
``sqlite-busy`` is SQLite with its write queue off, ``SQLITE_WRITE_QUEUE=0``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import manage, production_server, stop  # noqa: E402

SHORT = "--short" in sys.argv or os.environ.get("BENCH_SHORT", "") == "1"
CLIENTS = int(os.environ.get("BENCH_LOAD_CLIENTS", "64"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "15" if SHORT else "180"))
FLOOR_S = float(os.environ.get("BENCH_LOAD_FLOOR_S", "3"))
WORKERS = int(os.environ.get("BENCH_WORKERS", str(2 * (os.cpu_count() or 1) + 1)))
DATABASES = [d.strip() for d in os.environ.get("BENCH_LOAD_DATABASES", "sqlite,postgresql").split(",") if d.strip()]
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = os.environ.get("BENCH_LOAD_PG_NAME", "prmsite_load_bench")
TRIE_FOREST = "load-trie"
GROW_FOREST = "load-grow"
TRIE_ROOTS = 200
GROW_ROOTS = int(os.environ.get("BENCH_LOAD_GROW_ROOTS", "5000"))
PRM_VERSION = "load-prm"
ADAPTER_VERSION = "load-adapter"
RETRY_SHARE = 0.05
CLAIM_LIMIT = 16

POST = "POST /rollout (forest, key)"
POST_RETRY = "POST /rollout retry (same key)"
EXPANSION_CLAIM = "POST /forest/…/expansions/claim"
EXPANSION_POST = "POST /rollout (expansion_id)"
CLAIM = "GET /rollout claim (limit=16)"
LABEL = "POST /process_reward_label"
LABEL_RETRY = "POST /process_reward_label retry"
DOWNLOAD = "GET /prm_adapter"
OPERATIONS = [POST, POST_RETRY, EXPANSION_CLAIM, EXPANSION_POST, CLAIM, LABEL, LABEL_RETRY, DOWNLOAD]


# --- the adapter ------------------------------------------------------------------------------------------------------


def adapter_zip() -> bytes:
    """A valid peft LoRA adapter (rank 2 on q_proj and v_proj of a 1-layer, 16-wide Llama), built with numpy and
    safetensors: the same files ``save_pretrained`` writes, without importing torch."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(0)
    tensors = {}
    for module in ("q_proj", "v_proj"):
        prefix = f"base_model.model.model.layers.0.self_attn.{module}"
        tensors[f"{prefix}.lora_A.weight"] = rng.standard_normal((2, 16)).astype(np.float32)
        tensors[f"{prefix}.lora_B.weight"] = rng.standard_normal((16, 2)).astype(np.float32)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "tiny-llama",
        "r": 2,
        "lora_alpha": 4,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("adapter_config.json", json.dumps(config, indent=2))
        archive.writestr("adapter_model.safetensors", save(tensors))
    return buffer.getvalue()


# --- child processes on the bench's database (Django) ---------------------------------------------------------------


def _django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    django.setup()


def _roots(forest, count: int) -> list[dict[str, Any]]:
    from django.db.models import F

    from forests.models import Node, text_sha256

    nodes = [
        Node(forest=forest, depth=0, text=f"{forest.name} question {i}?", ground_truth=i % 2) for i in range(count)
    ]
    for node in nodes:
        node.text_sha256 = text_sha256(node.text)
    Node.objects.bulk_create(nodes, batch_size=5000)
    roots = Node.objects.filter(forest=forest, depth=0)
    roots.update(tree_id=F("id"))
    return [{"id": r.pk, "text": r.text, "ground_truth": r.ground_truth} for r in roots.order_by("id")]


def setup() -> None:
    """Child: seed the two forests and the growth plan, make a worker token; print the roots posters use and the
    token."""
    _django()
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from forests.growth.plan import growth_plan_set
    from forests.models import Forest

    config = {"reasoning_delimiter_pattern": "Step"}
    with transaction.atomic():
        trie = Forest.objects.create(name=TRIE_FOREST, rollout_config=config)
        roots = _roots(trie, TRIE_ROOTS)
        grow = Forest.objects.create(name=GROW_FOREST, rollout_config=config)
        _roots(grow, GROW_ROOTS)
    growth_plan_set(forest_name=GROW_FOREST, given={"policy": "repeats", "num_repeats": 8}, now=timezone.now())
    out = io.StringIO()
    call_command("create_worker_token", "load", stdout=out)
    print(json.dumps({"roots": roots, "token": out.getvalue().strip().splitlines()[-1]}))


def audit(path: str) -> None:
    """Child: check what the clients saw (the JSON file at ``path``) against the database; print the findings."""
    _django()
    from django.db.models import Count
    from django.utils import timezone

    from forests.models import Expansion, RolloutGrowth
    from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout

    seen = json.loads(Path(path).read_text())
    posted: dict[str, int] = seen["posted"]  # idempotency key -> id the client got
    claimed: list[int] = seen["claimed"]
    labels: dict[str, int] = seen["labels"]  # rollout id -> label id
    expansions: dict[str, int] = seen["expansions"]  # expansion id -> rollouts posted for it
    expansion_leases: list[int] = seen["expansion_leases"]
    failures: list[str] = []

    stored = dict(Rollout.objects.values_list("idempotency_key", "id"))
    if len(set(posted.values())) != len(posted):
        failures.append("two keys were answered with the same rollout id")
    if None in stored:
        failures.append(f"{Rollout.objects.filter(idempotency_key__isnull=True).count()} rollouts without a key")
    wrong = [key for key, rollout_id in posted.items() if stored.get(key) != rollout_id]
    if wrong:
        failures.append(f"{len(wrong)} keys not stored under the id their client got (e.g. {wrong[0]!r})")
    if len(stored) != len(posted):
        failures.append(f"{len(stored)} rollouts stored, {len(posted)} posted")
    unlinked = Rollout.objects.filter(node__isnull=True).count()
    if unlinked:
        failures.append(f"{unlinked} rollouts not linked to a trie leaf")
    growth = RolloutGrowth.objects.count()
    if growth != len(posted):
        failures.append(f"{growth} growth records for {len(posted)} forest rollouts")

    if len(set(claimed)) != len(claimed):
        failures.append(f"{len(claimed) - len(set(claimed))} rollouts handed out twice")
    by_rollout = dict(
        ProcessRewardLabel.objects.filter(prm_version=PRM_VERSION).values_list("rollout_id").annotate(n=Count("id"))
    )
    doubles = [rollout_id for rollout_id, n in by_rollout.items() if n > 1]
    if doubles:
        failures.append(f"{len(doubles)} rollouts with two labels for {PRM_VERSION}")
    if set(by_rollout) != set(claimed):
        failures.append(
            f"labelled rollouts != claimed ones: {len(set(claimed) - set(by_rollout))} claimed and unlabelled, "
            f"{len(set(by_rollout) - set(claimed))} labelled and never claimed"
        )
    label_ids = dict(ProcessRewardLabel.objects.filter(prm_version=PRM_VERSION).values_list("rollout_id", "id"))
    if any(label_ids.get(int(rollout_id)) != label_id for rollout_id, label_id in labels.items()):
        failures.append("a label is stored under another id than its labeller got")
    leases = RolloutCheckout.objects.count()
    if leases:
        failures.append(f"{leases} rollout leases left after every claimed rollout was labelled")

    if len(set(expansion_leases)) != len(expansion_leases):
        failures.append(f"{len(expansion_leases) - len(set(expansion_leases))} expansions leased twice")
    answered = dict(
        RolloutGrowth.objects.filter(expansion_id__isnull=False)
        .values_list("expansion_id")
        .annotate(n=Count("rollout"))
    )
    if {int(k): v for k, v in expansions.items()} != answered:
        failures.append("rollouts counted per expansion differ from those its grower posted")
    left = Expansion.objects.filter(pk__in=[int(k) for k in expansions]).count()
    if left:
        failures.append(f"{left} answered expansions still queued")
    live = Expansion.objects.filter(attempts__gt=0, available_at__gt=timezone.now()).count()
    if live:
        failures.append(f"{live} expansions still leased after every lease was answered")
    print(
        json.dumps(
            {
                "ok": not failures,
                "failures": failures,
                "rollouts": len(stored),
                "claimed": len(claimed),
                "labels": sum(by_rollout.values()),
                "expansions": len(expansions),
            }
        )
    )


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    """The service's arguments for a POST /rollout body (extra fields go to ``attributes``, as the view does)."""
    fields = dict(body)
    fields["attributes"] = {"usage": fields.pop("usage")}
    return fields


def floor() -> None:
    """Child: the operations of the mix through the services, one process, one after the other, on the same database;
    print ops/s per operation."""
    _django()
    from django.utils import timezone

    from adapters.selectors import adapter_file_open, adapter_get
    from forests.growth.queue import expansion_claim
    from forests.intake import receive_rollout
    from forests.models import Node
    from rollouts.labels import label_create
    from rollouts.queue import checkout_claim

    rng = random.Random(1)
    roots = list(Node.objects.filter(forest__name=TRIE_FOREST, depth=0).values("id", "text", "ground_truth"))
    rates: dict[str, float] = {}

    def timed(name: str, step) -> None:
        done, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < FLOOR_S:
            done += step()
        rates[name] = done / elapsed

    def post() -> int:
        root = rng.choice(roots)
        receive_rollout(**_fields(rollout_body(rng, root["text"], root["ground_truth"], [], root_id=root["id"])))
        return 1

    timed(POST, post)
    pending: list[dict[str, Any]] = []

    def grow_claim() -> int:
        claim = expansion_claim(forest_name=GROW_FOREST, claimed_by="floor", now=timezone.now(), limit=2)
        pending.extend(vars(e) for e in claim.expansions)
        return 1

    timed(EXPANSION_CLAIM, grow_claim)

    def grow_post() -> int:
        if not pending:
            grow_claim()
        expansion = pending[0]
        body = rollout_body(
            rng, expansion["prompt"], expansion["ground_truth"], expansion["prefix"], root_id=expansion["root_id"]
        )
        receive_rollout(**_fields({**body, "forest_name": GROW_FOREST}), expansion_id=expansion["id"])
        expansion["count"] -= 1
        if not expansion["count"]:
            pending.pop(0)
        return 1

    timed(EXPANSION_POST, grow_post)
    held: list[tuple[int, int]] = []

    def claim() -> int:
        rollouts = checkout_claim(prm_version="floor-prm", claimed_by="floor", now=timezone.now(), limit=CLAIM_LIMIT)
        held.extend((r.pk, len(r.reasoning)) for r in rollouts.rollouts)
        return 1

    timed(CLAIM, claim)

    def label() -> int:
        if not held:
            claim()
        rollout_id, steps = held.pop()
        label_create(
            rollout_id=rollout_id,
            prm_version="floor-prm",
            prm_output=[rng.random() for _ in range(steps)],
            worker="floor",
            labelled_by="floor",
        )
        return 1

    timed(LABEL, label)

    def download() -> int:
        with adapter_file_open(adapter=adapter_get(prm_version=ADAPTER_VERSION)) as handle:
            handle.read()
        return 1

    timed(DOWNLOAD, download)
    rates[POST_RETRY] = rates[POST]  # a retry reads the stored rollout; the fresh post bounds it from below
    rates[LABEL_RETRY] = rates[LABEL]
    print(json.dumps(rates))


# --- the clients ----------------------------------------------------------------------------------------------------


def rollout_body(
    rng: random.Random, example: str, ground_truth: int, prefix: list[str], *, root_id: int, forest: str = TRIE_FOREST
) -> dict[str, Any]:
    """A rollout of a few steps drawn from a small vocabulary, so posts share prefixes in the trie and add branches."""
    steps = [f"Step {len(prefix) + i + 1}: try {rng.randrange(3)}. " for i in range(rng.randint(2, 4))]
    prediction = rng.randrange(2)
    return {
        "model": "load-model",
        "example": example,
        "reasoning": [*prefix, *steps, f"Verdict: {bool(prediction)} (code: {prediction})"],
        "prediction": prediction,
        "ground_truth": ground_truth,
        "worker": "load-worker",
        "forest_name": forest,
        "root_id": root_id,
        "idempotency_key": uuid.uuid4().hex,
        "usage": {"prompt_tokens": 50, "completion_tokens": 40},
    }


@dataclass
class Seen:
    """What the clients were answered: latencies and errors per operation, and the ids the audit checks."""

    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    posted: dict[str, int] = field(default_factory=dict)
    claimed: list[int] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)
    expansions: Counter = field(default_factory=Counter)
    expansion_leases: list[int] = field(default_factory=list)
    empty_claims: int = 0

    def error(self, operation: str, what: str) -> None:
        self.errors[operation] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{operation}: {what}")


async def run_mix(base: str, token: str, roots: list[dict[str, Any]], adapter_sha256: str) -> tuple[Seen, float]:
    import aiohttp

    seen = Seen()
    headers = {"Authorization": f"Token {token}"}
    timeout = aiohttp.ClientTimeout(total=300)

    async def call(session, operation: str, method: str, path: str, **kwargs) -> tuple[bool, Any]:
        started = time.perf_counter()
        try:
            async with session.request(method, f"{base}{path}", **kwargs) as response:
                body = await response.read()
                status = response.status
        except Exception as exc:  # every failure is counted, whatever it is
            seen.latencies_ms[operation].append((time.perf_counter() - started) * 1000)
            seen.error(operation, repr(exc))
            return False, None
        seen.latencies_ms[operation].append((time.perf_counter() - started) * 1000)
        if not 200 <= status < 300:
            seen.error(operation, f"{status} {body[:300]!r}")
            return False, None
        if operation == DOWNLOAD:
            return True, body
        return True, json.loads(body)

    async def poster(session, rng: random.Random, deadline: float) -> None:
        while time.monotonic() < deadline:
            root = rng.choice(roots)
            body = rollout_body(rng, root["text"], root["ground_truth"], [], root_id=root["id"])
            ok, rollout_id = await call(session, POST, "POST", "/rollout", json=body)
            if not ok:
                continue
            seen.posted[body["idempotency_key"]] = rollout_id
            if rng.random() < RETRY_SHARE:
                ok, again = await call(session, POST_RETRY, "POST", "/rollout", json=body)
                if ok and again != rollout_id:
                    seen.error(POST_RETRY, f"key answered {again}, first {rollout_id}")

    async def grower(session, rng: random.Random, deadline: float) -> None:
        while time.monotonic() < deadline:
            path = f"/forest/{GROW_FOREST}/expansions/claim"
            ok, answer = await call(session, EXPANSION_CLAIM, "POST", path, json={"limit": 2})
            if not ok:
                continue
            if not answer["expansions"]:
                await asyncio.sleep(0.1)
                continue
            for expansion in answer["expansions"]:
                seen.expansion_leases.append(expansion["id"])
                for _ in range(expansion["count"]):
                    body = rollout_body(
                        rng,
                        expansion["prompt"],
                        expansion["ground_truth"],
                        expansion["prefix"],
                        root_id=expansion["root_id"],
                        forest=GROW_FOREST,
                    )
                    body["expansion_id"] = expansion["id"]
                    ok, rollout_id = await call(session, EXPANSION_POST, "POST", "/rollout", json=body)
                    if ok:
                        seen.posted[body["idempotency_key"]] = rollout_id
                        seen.expansions[expansion["id"]] += 1

    async def labeller(session, rng: random.Random, deadline: float, index: int) -> None:
        worker = f"load-labeller-{index}"
        while time.monotonic() < deadline:
            params = {"prm_version": PRM_VERSION, "limit": str(CLAIM_LIMIT)}
            ok, rollouts = await call(session, CLAIM, "GET", "/rollout", params=params)
            if not ok:
                continue
            if not rollouts:
                seen.empty_claims += 1
                await asyncio.sleep(0.1)
                continue
            for rollout in rollouts:
                seen.claimed.append(rollout["id"])
                body = {
                    "rollout_id": rollout["id"],
                    "prm_output": [round(rng.random(), 4) for _ in rollout["reasoning"]],
                    "prm_version": PRM_VERSION,
                    "worker": worker,
                }
                ok, label_id = await call(session, LABEL, "POST", "/process_reward_label", json=body)
                if not ok:
                    continue
                seen.labels[rollout["id"]] = label_id
                if rng.random() < RETRY_SHARE:
                    ok, again = await call(session, LABEL_RETRY, "POST", "/process_reward_label", json=body)
                    if ok and again != label_id:
                        seen.error(LABEL_RETRY, f"retry answered {again}, first {label_id}")

    async def downloader(session, deadline: float) -> None:
        while time.monotonic() < deadline:
            params = {"prm_version": ADAPTER_VERSION}
            ok, data = await call(session, DOWNLOAD, "GET", "/prm_adapter", params=params)
            if ok and hashlib.sha256(data).hexdigest() != adapter_sha256:
                seen.error(DOWNLOAD, "the bytes differ from the upload")

    roles = [poster] * 3 + [grower] + [labeller] * 3 + [downloader]
    async with aiohttp.ClientSession(
        headers=headers, timeout=timeout, connector=aiohttp.TCPConnector(limit=0, force_close=False)
    ) as session:
        started = time.monotonic()
        deadline = started + SECONDS
        tasks = []
        for index in range(CLIENTS):
            role = roles[index % len(roles)]
            rng = random.Random(index)
            if role is labeller:
                tasks.append(labeller(session, rng, deadline, index))
            elif role is downloader:
                tasks.append(downloader(session, deadline))
            else:
                tasks.append(role(session, rng, deadline))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
    return seen, elapsed


# --- one backend ----------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def child(env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_backend(label: str, database_url: str, env_base: dict[str, str], folder: Path) -> dict[str, Any]:
    import requests

    env = {**env_base, "DATABASE_URL": database_url, "DJANGO_MEDIA_ROOT": str(folder / "media")}
    manage(env, "migrate", "--noinput")
    seeded = child(env, "--setup")
    roots, token = seeded["roots"], seeded["token"]
    server, base = production_server(env, workers=WORKERS, token=token)
    try:
        data = adapter_zip()
        response = requests.post(
            f"{base}/prm_adapter",
            params={"prm_version": ADAPTER_VERSION, "base_model": "tiny-llama", "worker": "load"},
            data=data,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        if response.status_code >= 300:
            raise RuntimeError(f"adapter upload: {response.status_code} {response.text[:500]}")
        load_before = os.getloadavg()
        seen, elapsed = asyncio.run(run_mix(base, token, roots, hashlib.sha256(data).hexdigest()))
        load_after = os.getloadavg()
    finally:
        stop(server)
    seen_path = folder / "seen.json"
    seen_path.write_text(
        json.dumps(
            {
                "posted": seen.posted,
                "claimed": seen.claimed,
                "labels": {str(k): v for k, v in seen.labels.items()},
                "expansions": {str(k): v for k, v in seen.expansions.items()},
                "expansion_leases": seen.expansion_leases,
            }
        )
    )
    audited = child(env, "--audit", str(seen_path))
    rates = child(env, "--floor") if FLOOR_S > 0 else {}
    operations = []
    for name in OPERATIONS:
        latencies = seen.latencies_ms.get(name, [])
        rate = len(latencies) / elapsed
        operations.append(
            {
                "operation": name,
                "requests": len(latencies),
                "rate": rate,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies, default=float("nan")),
                "errors": seen.errors.get(name, 0),
                "floor": rates.get(name, float("nan")),
            }
        )
    return {
        "database": label,
        "seconds": elapsed,
        "clients": CLIENTS,
        "workers": WORKERS,
        "load_before": load_before,
        "load_after": load_after,
        "operations": operations,
        "errors": sum(seen.errors.values()),
        "error_samples": seen.error_samples,
        "empty_claims": seen.empty_claims,
        "audit": audited,
    }


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def table(result: dict[str, Any]) -> list[str]:
    def ms(value: float) -> str:
        return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"

    rows = [
        f"| **{result['database']}**: {result['clients']} clients, {result['seconds']:.0f} s, uvicorn "
        f"{result['workers']} processes, load average {result['load_before'][0]:.2f} before / "
        f"{result['load_after'][0]:.2f} after | | | | | | | |",
        "| operation | requests | req/s | p50 | p99 | errors | floor (services, 1 process) | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for op in result["operations"]:
        rows.append(
            f"| {op['operation']}, {result['database']} | {op['requests']} | {op['rate']:.1f} | {ms(op['p50_ms'])} | "
            f"{ms(op['p99_ms'])} | {op['errors']} | {op['floor']:.0f} ops/s | {op['rate'] / op['floor']:.3f} |"
        )
    audited = result["audit"]
    verdict = "ok" if audited["ok"] else "FAILED: " + "; ".join(audited["failures"])
    rows.append(
        f"| audit, {result['database']} | {audited['rollouts']} rollouts, {audited['claimed']} claimed, "
        f"{audited['labels']} labels, {audited['expansions']} expansions | | | | {result['errors']} | {verdict} | |"
    )
    return rows


def main() -> int:
    env_base = {**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0", "PYTHONPATH": str(ROOT)}
    results: list[dict[str, Any]] = []
    for database in DATABASES:
        with tempfile.TemporaryDirectory(prefix="prmsite-load-") as name:
            folder = Path(name)
            if database in {"sqlite", "sqlite-busy"}:
                # sqlite-busy: the write queue off, every writer left to SQLite's busy handler (the before of
                # RELIABILITY.md's section 2)
                queue = "0" if database == "sqlite-busy" else "1"
                label = "SQLite (busy handler)" if database == "sqlite-busy" else "SQLite"
                env = {**env_base, "SQLITE_WRITE_QUEUE": queue}
                results.append(bench_backend(label, f"sqlite:///{folder / 'load.sqlite3'}", env, folder))
                continue
            try:
                pg_admin(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
                pg_admin(f"CREATE DATABASE {PG_NAME}")
            except Exception as exc:  # no PostgreSQL here: say so rather than fail the SQLite figures
                print(f"| PostgreSQL | skipped: {type(exc).__name__} | | | | | | |")
                continue
            try:
                results.append(bench_backend("PostgreSQL", f"{PG_BASE}/{PG_NAME}", env_base, folder))
            finally:
                pg_admin(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
    if os.environ.get("BENCH_LOAD_JSON"):
        Path(os.environ["BENCH_LOAD_JSON"]).write_text(json.dumps(results, indent=2))
    failed = False
    for result in results:
        for sample in result["error_samples"]:
            print(f"error: {sample}", file=sys.stderr)
        failed |= bool(result["errors"]) or not result["audit"]["ok"]
        print("\n".join(table(result)))
    return 1 if failed else 0


if __name__ == "__main__":
    if "--setup" in sys.argv:
        setup()
    elif "--audit" in sys.argv:
        audit(sys.argv[sys.argv.index("--audit") + 1])
    elif "--floor" in sys.argv:
        floor()
    else:
        raise SystemExit(main())
