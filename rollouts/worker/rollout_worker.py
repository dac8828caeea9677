"""The rollout worker: dataset mode and forest mode, one asyncio loop in one process (:class:`RolloutWorker`).

It is a pure client: the ``openai`` async client for generations, ``prmsite.core.client`` (HTTP) for this project's
server, an asyncio loop, an on-disk spool. It imports no Django model; ``python manage.py rollout_worker`` only parses
flags into :class:`WorkerOptions` and calls :func:`rollouts.worker.rollout_processes.run` (one process or several).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import json
import logging
import re
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import requests

from prmsite.core.client import PrmsiteAPIError
from prmsite.core.configs.interfaces import check_generation_settings, prediction_pattern_optional
from prmsite.core.configs.loader import config_load
from prmsite.core.errors import ConfigError
from prmsite.core.grading import AnswerSpec
from rollouts.worker.dataset_source import DatasetItem, DatasetSource, done_units
from rollouts.worker.forest_source import ForestSource
from rollouts.worker.generation_job import GenerationJob, request_sizes
from rollouts.worker.llm import Generation
from rollouts.worker.pool_worker import PoolWorker, PoolWorkerOptions, WorkerError, api_error_line, spool_root
from rollouts.worker.progress import Counters, Progress
from rollouts.worker.retry import FatalGenerationError
from rollouts.worker.rollout import FINISH_LENGTH, request_seed, rollout_payload, split_usage
from rollouts.worker.spool import SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent, ServerUnavailableError, Skipped
from rollouts.worker.storable import storable

logger = logging.getLogger("rollouts.worker")

# Statuses of a refused POST /rollout/batch that may be one rollout's fault: the batch is sent again in halves.
BATCH_REFUSED_STATUSES = frozenset({400, 413, 422})

ERROR_DATASET_NOT_LABEL = (
    "the template's answer_kind is {kind!r}: a rollout of that kind is graded against the reference answer on a "
    "forest's tree root, and dataset mode has no forest; seed one (python manage.py seed_forest "
    "--dataset_config_name {template}) and run the worker with --forest_name"
)


@dataclass(frozen=True)
class DatasetSpec:
    """Dataset mode: the template JSON (generation settings, label field/map) and where its items are."""

    template_json: str
    dataset_name: str | None = None
    dataset_split: str = "train"


@dataclass(frozen=True, kw_only=True)
class WorkerOptions(PoolWorkerOptions):
    """The rollout worker's options: the shared ones (:class:`PoolWorkerOptions`) and what to generate."""

    # exactly one of the two modes
    forest_name: str | None = None
    dataset: DatasetSpec | None = None
    num_repeats: int | None = None
    # forest mode
    growth: dict[str, Any] = field(default_factory=dict)  # the growth options given explicitly
    replan: bool = False
    wait_for_work: bool = False
    reasoning_delimiter_pattern: str | None = None
    prediction_pattern: str | None = None
    # generation
    n: int = 1
    # several OS processes
    processes: int = 1
    process_index: int = 0

    def describe(self) -> str:
        if self.forest_name:
            return f"forest {self.forest_name}"
        assert self.dataset is not None
        return f"dataset {self.dataset.dataset_name or self.dataset.template_json} ({self.dataset.dataset_split})"


# --- where things are ------------------------------------------------------------------------------------------------


def default_worker_name() -> str:
    return socket.gethostname()


def run_fingerprint(options: WorkerOptions) -> dict[str, Any]:
    """What identifies a run for resuming: the same flags give the same spool folder (and continue its work)."""
    if options.forest_name:
        return {"forest": options.forest_name, "model": options.model, "worker": options.worker_name}
    assert options.dataset is not None
    template = Path(options.dataset.template_json).expanduser()
    content = template.read_bytes() if template.is_file() else options.dataset.template_json.encode()
    return {
        "template_sha256": hashlib.sha256(content).hexdigest(),
        "dataset": options.dataset.dataset_name,
        "split": options.dataset.dataset_split,
        "num_repeats": options.num_repeats,
        "n": options.n,
        "model": options.model,
        "processes": options.processes,
    }


def spool_folder(options: WorkerOptions) -> Path:
    fingerprint = run_fingerprint(options)
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    label = options.forest_name or (Path(options.dataset.template_json).stem if options.dataset else "run")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{label}-{options.worker_name}")[:80]
    folder = spool_root(options.spool_dir) / f"{label}-{digest}"
    return folder / f"p{options.process_index}" if options.processes > 1 else folder


# --- one process -----------------------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    """Generation settings in force: from the template JSON (dataset mode) or the forest (forest mode)."""

    delimiter_pattern: str
    prediction_pattern: str
    rollout_config_version: str = ""
    answer_spec: AnswerSpec = field(default_factory=AnswerSpec)  # label unless the forest says otherwise


class RolloutWorker(PoolWorker[GenerationJob]):
    """One process's worker. ``await run()`` answers its summary dict (``status``: completed, stopped, failed)."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        progress: Progress | None = None,
        report: Callable[[Counters], None] | None = None,
    ) -> None:
        super().__init__(options, progress=progress, report=report)
        self.options: WorkerOptions = options
        self.source: DatasetSource | ForestSource | None = None
        self.settings: GenerationSettings | None = None
        self.model = options.model
        # Idempotency keys: random per process, then a counter (unique, and cheaper than a uuid4 per rollout).
        self._key_prefix = uuid.uuid4().hex
        self._keys = itertools.count()

    # --- setup ------------------------------------------------------------------------------------------------------

    def _spool_folder(self) -> Path:
        return spool_folder(self.options)

    async def _setup(self) -> DatasetSource | ForestSource:
        self.model = self.llm.model if self.llm is not None else self.model
        return await (self._setup_forest() if self.options.forest_name else self._setup_dataset())

    async def _setup_forest(self) -> ForestSource:
        o = self.options
        assert self._api is not None and o.forest_name
        try:
            config = await asyncio.to_thread(self._api.get_forest_config, o.forest_name)
            plan = await asyncio.to_thread(self._api.put_growth_plan, o.forest_name, o.growth, replace=o.replan)
        except PrmsiteAPIError as exc:
            raise WorkerError(api_error_line(exc)) from exc
        except requests.RequestException as exc:
            raise WorkerError(f"the server at {o.webserver_url} cannot be reached: {exc}") from exc
        stored = config.get("rollout_config") or {}
        try:
            spec = AnswerSpec.from_settings(stored)
        except ConfigError as exc:
            raise WorkerError(f"forest {o.forest_name}: {exc.message}") from exc
        self.settings = GenerationSettings(
            delimiter_pattern=o.reasoning_delimiter_pattern or stored.get("reasoning_delimiter_pattern") or "",
            prediction_pattern=o.prediction_pattern or stored.get("prediction_pattern") or "",
            rollout_config_version=str(stored.get("rollout_config_version") or ""),
            answer_spec=spec,
        )
        _check_patterns(self.settings)
        logger.info("forest %s: growth plan v%s %s", o.forest_name, plan.get("version"), plan.get("options"))
        api = self._api
        return ForestSource(
            forest_name=o.forest_name,
            claim=lambda limit, max_rollouts: api.claim_expansions(
                o.forest_name, limit=limit, max_rollouts=max_rollouts
            ),
            release=lambda ids, failed, error: api.release_expansions(o.forest_name, ids, failed=failed, error=error),
            results_pending=lambda: self.spool.unsent if self.spool else 0,
            concurrency=o.concurrency,
            n=o.n,
            wait_for_work=o.wait_for_work,
            extra={"rollout_config_version": self.settings.rollout_config_version},
        )

    async def _setup_dataset(self) -> DatasetSource:
        o = self.options
        assert o.dataset is not None and self.spool is not None
        config, items, total = await asyncio.to_thread(load_dataset_items, o.dataset)
        self.settings = GenerationSettings(
            delimiter_pattern=o.reasoning_delimiter_pattern or config.reasoning_delimiter_pattern,
            prediction_pattern=o.prediction_pattern or config.prediction_pattern,
            rollout_config_version=config.rollout_config_version,
        )
        _check_patterns(self.settings)
        repeats = o.num_repeats or 1
        done = done_units(self.spool.metas())
        if total is not None:
            share = len(range(o.process_index, total, o.processes))
            sizes = request_sizes(repeats, o.n)
            already = sum(sizes[chunk] for item, chunk in done if chunk < len(sizes))
            self.progress.set_total(max(0, share * repeats - already))
        version = config.rollout_config_version
        dataset_name = o.dataset.dataset_name or getattr(config, "dataset_location", "")
        source = DatasetSource(
            items,
            num_repeats=repeats,
            n=o.n,
            done=done,
            shard=(o.process_index, o.processes),
            fields_of=lambda item: {
                "rollout_config_version": version,
                "dataset_name": dataset_name,
                "dataset_split": o.dataset.dataset_split,
                "dataset_item": item.index,
            },
        )
        return source

    # --- the work ---------------------------------------------------------------------------------------------------

    async def _handle(self, job: GenerationJob) -> bool:
        assert self.llm is not None and self.spool is not None and self.settings is not None
        o = self.options
        params = dataclasses.replace(o.sampling, seed=request_seed(o.sampling.seed, job.key))
        try:
            generation = await self.llm.generate(prompt=job.prompt, partial="".join(job.prefix), n=job.n, params=params)
        except FatalGenerationError:
            raise
        except (openai.OpenAIError, OSError) as exc:
            self.counters.requests_failed += 1
            logger.warning("request %s failed: %s", job.key, exc)
            if isinstance(self.source, ForestSource):
                await asyncio.to_thread(self.source.job_failed, job, storable(str(exc)[:2000]))
            return False
        finally:
            self.counters.retries = self.llm.retries
        self._keep(job, generation)
        self.counters.requests_done += 1
        return True

    def _keep(self, job: GenerationJob, generation: Generation) -> None:
        assert self.spool is not None and self.settings is not None
        shares = split_usage(generation.usage, [choice.text for choice in generation.choices])
        for offset, (choice, usage) in enumerate(zip(generation.choices, shares, strict=True)):
            key = f"{self._key_prefix}{next(self._keys):x}"
            extra = dict(job.extra)
            if job.meta is not None:
                extra["repeat"] = job.first_index + offset
            if len(generation.choices) > 1:
                extra["usage_shared_by"] = len(generation.choices)
            if generation.attempts > 1:
                extra["attempts"] = generation.attempts
            payload = rollout_payload(
                model=self.model,
                worker=self.options.worker_name,
                example=job.prompt,
                ground_truth=job.ground_truth,
                prefix=job.prefix,
                continuation=choice.text,
                delimiter_pattern=self.settings.delimiter_pattern,
                prediction_pattern=self.settings.prediction_pattern,
                usage=usage,
                finish_reason=choice.finish_reason,
                latency_s=generation.latency_s,
                idempotency_key=key,
                extra=extra,
                answer_spec=self.settings.answer_spec,
            )
            self.spool.put(SpoolRecord(key=key, payload=payload, meta=job.meta))
            self.counters.results += 1
            self.counters.empty += int(bool(payload.get("empty")))
            self.counters.truncated += int(choice.finish_reason == FINISH_LENGTH)
        self.counters.prompt_tokens += generation.usage.prompt_tokens
        self.counters.completion_tokens += generation.usage.completion_tokens
        if self.sender is not None:
            self.sender.notify()

    async def send_batch(self, records: list[SpoolRecord]) -> list[Sent | Refused | Skipped]:
        """Post ``records`` with ``POST /rollout/batch``: one outcome per record. The server answers for each rollout,
        but a server may also refuse a whole batch for one bad rollout (400, 413, 422: one that kept its check on the
        whole body, or a batch too large): then the batch is sent again in halves, so that only that rollout is
        refused (and set aside in ``rejected.jsonl``) and a restarted worker never sends the same batch forever."""
        assert self.sender_api is not None
        # Records spooled by an older worker may hold text no database stores: cleaned here too.
        payloads = [storable(record.payload) for record in records]
        return await self._post_split(payloads)

    async def _post_split(self, payloads: list[dict[str, Any]]) -> list[Sent | Refused | Skipped]:
        assert self.sender_api is not None
        try:
            results = await asyncio.to_thread(self.sender_api.post_rollouts, payloads)
        except PrmsiteAPIError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 429):
                raise ServerUnavailableError(str(exc)) from exc
            if exc.status_code not in BATCH_REFUSED_STATUSES:
                raise  # the caller, not a rollout, is refused (401, 403) or the URL is wrong (404): fatal
            if len(payloads) == 1:
                error = exc.body if isinstance(exc.body, dict) else {"detail": exc.body}
                return [Refused({**error, "status": exc.status_code})]
            half = len(payloads) // 2
            return [*await self._post_split(payloads[:half]), *await self._post_split(payloads[half:])]
        except requests.RequestException as exc:
            raise ServerUnavailableError(str(exc)) from exc
        outcomes: list[Sent | Refused | Skipped] = []
        for result in results:
            if isinstance(result, dict) and "id" in result:
                outcomes.append(Sent(result["id"]))
            else:
                outcomes.append(Refused(result))
        return outcomes

    def _on_sent(self, record: SpoolRecord, outcome: Sent) -> None:
        self.counters.sent += 1
        if isinstance(self.source, ForestSource):
            self.source.notify()

    def _start_fields(self) -> dict[str, Any]:
        return {"model": self.model, "mode": self.options.describe()}

    async def _after_pool(self) -> None:
        if isinstance(self.source, ForestSource):
            await self.source.release_backlog()

    def _summary_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if isinstance(self.source, ForestSource):
            extra["expansions"] = self.source.expansions
            if self.source.reason:
                extra["reason"] = self.source.reason
        if isinstance(self.source, DatasetSource) and self.source.skipped_units:
            extra["skipped_done_requests"] = self.source.skipped_units
        return extra


def _check_patterns(settings: GenerationSettings) -> None:
    for name, pattern in (
        ("reasoning_delimiter_pattern", settings.delimiter_pattern),
        ("prediction_pattern", settings.prediction_pattern),
    ):
        if not pattern and name == "prediction_pattern" and prediction_pattern_optional(settings.answer_spec.kind):
            continue  # math: the answer is the last \boxed{…}
        if not pattern:
            raise WorkerError(f"no {name}: the forest or template has none; pass --{name}")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise WorkerError(f"{name} {pattern!r} does not compile: {exc}") from exc


def load_dataset_items(spec: DatasetSpec):
    """The template JSON's config and the items of its split as :class:`DatasetItem` (or the exception an item
    raised), with their number (``None`` if unknown). Runs ``datasets``; no Django model."""
    path = Path(spec.template_json).expanduser()
    if not path.is_file():
        raise WorkerError(f"--template_json {spec.template_json!r} is not a file")
    try:
        config = config_load(str(path), dataset_name=spec.dataset_name)
        check_generation_settings(config)
        kind = config.answer_spec().kind
        if kind != "label":
            raise WorkerError(ERROR_DATASET_NOT_LABEL.format(kind=kind, template=spec.template_json))
        dataset = config.get_dataset_iterator(spec.dataset_split)
    except ConfigError as exc:
        raise WorkerError(exc.message) from exc
    try:
        total = len(dataset)
    except TypeError:
        total = None

    def items():
        for index, item in enumerate(dataset):
            try:
                yield DatasetItem(index=index, prompt=config.format_template(item), ground_truth=config.get_label(item))
            except ConfigError as exc:
                yield exc

    return config, items(), total
