"""The AI step labeller behind ``python manage.py ai_label_worker``: an LLM judge grades every step of the rollouts it
claims, and the grades are posted as process reward labels of a labelling scheme.

A pure client, like the rollout worker, and built from the same plumbing
(:class:`~rollouts.worker.pool_worker.PoolWorker`):

1. Claims: ``GET /rollout?prm_version=S&active_learning=True`` (``reference_prm_version`` when given), as many
   rollouts as there are free slots among ``concurrency`` (:class:`~rollouts.worker.claim_source.ClaimSource`).
2. For each rollout, the judge (any OpenAI-compatible server, the ``openai`` async client; transport failures retried
   with back-off) gets the prompt template rendered for it (:mod:`rollouts.worker.judge_prompt`), asking for
   structured output when ``structured_output`` says how (:mod:`rollouts.worker.verdicts`). Its answer is parsed; an
   answer that cannot be used (no verdicts, steps missing or extra, a code other than 0/1/2) is asked again, with the
   answer and what is wrong with it, up to ``answer_attempts`` answers. A rollout that gets no usable answer, or whose
   request fails for good, is released (``POST /rollout/release``) and not taken again by this run: nothing
   half-parsed is ever posted.
3. A label (``rollout_id``, ``prm_output``: one code per step, ``prm_version`` S, ``worker``, ``explanations``) goes
   to the on-disk spool first, then, with the others waiting there, to ``POST /process_reward_label/batch`` (one by
   one to ``POST /process_reward_label`` against an older server without it). A 409 for a label (someone labelled
   the rollout first, or holds its lease) counts as *skipped*, not as a failure; another 4xx is *refused* and kept
   in ``rejected.jsonl`` with the server's answer and status.
4. Stopping: SIGINT/SIGTERM stop claiming, let the requests in flight finish for ``shutdown_grace_s``, release the
   rest, store what is finished (or leave it in the spool for the next run with the same scheme and worker name).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import openai
import requests

from prmsite.core.cli import FLAG_AT_LEAST_ONE
from prmsite.core.client import PrmsiteAPIError
from rollouts.worker.claim_source import ClaimSource, RolloutJob
from rollouts.worker.judge_prompt import PromptTemplate, TemplateError
from rollouts.worker.label_progress import LabelCounters, LabelProgress
from rollouts.worker.llm import Message, SamplingParams
from rollouts.worker.pool_worker import (
    EXIT_FAILED,
    STATUS_FAILED,
    PoolWorker,
    PoolWorkerOptions,
    WorkerError,
    exit_status,
    spool_root,
)
from rollouts.worker.progress import Progress
from rollouts.worker.retry import FatalGenerationError
from rollouts.worker.spool import SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent, ServerUnavailableError, Skipped
from rollouts.worker.storable import storable
from rollouts.worker.verdicts import (
    STRUCTURED_JSON_SCHEMA,
    STRUCTURED_OUTPUTS,
    VerdictError,
    Verdicts,
    parse_verdicts,
    structured_output_body,
)

logger = logging.getLogger("rollouts.worker")

TOOL = "ai_label_worker"
# A judge that refuses this many requests in a row (400, 422) before answering any is refusing the run's requests
# (structured output it does not offer, a wrong API): stop, instead of giving up every rollout of the queue.
REFUSED_BEFORE_ANY_ANSWER = 3
REPAIR_MESSAGE = (
    "Your answer could not be used: {problem}. Grade the steps again, every step from 1 to {num_steps}, "
    "in the format asked for."
)


def default_worker_name() -> str:
    return f"{socket.gethostname()}-judge"


@dataclass(frozen=True, kw_only=True)
class LabellerOptions(PoolWorkerOptions):
    """The AI labeller's options: the shared ones (:class:`PoolWorkerOptions`, some with other defaults) and what to
    label, how to ask the judge."""

    labelling_scheme_version: str
    worker_name: str = field(default_factory=default_worker_name)
    prompt_template: str | None = None  # a file; None: the default template
    system_prompt: str | None = None
    # the queue
    active_learning: bool = True
    reference_prm_version: str | None = None
    claim_wait_s: float = 10.0
    exit_when_idle: bool = False
    max_labels: int | None = None
    # the judge
    structured_output: str = STRUCTURED_JSON_SCHEMA
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    answer_attempts: int = 3
    concurrency: int = 16
    # the spool
    batch_size: int = 64

    def check(self) -> None:
        """``WorkerError`` naming every value no run could use."""
        problems = []
        if not self.labelling_scheme_version:
            problems.append("--labelling_scheme_version is empty")
        if self.structured_output not in STRUCTURED_OUTPUTS:
            problems.append(f"--structured_output must be one of {', '.join(STRUCTURED_OUTPUTS)}")
        for name in ("concurrency", "answer_attempts", "max_attempts", "batch_size"):
            if getattr(self, name) < 1:
                flag = "num_processes" if name == "concurrency" else name
                problems.append(FLAG_AT_LEAST_ONE.format(flag=flag))
        if self.max_labels is not None and self.max_labels < 1:
            problems.append(FLAG_AT_LEAST_ONE.format(flag="max_labels"))
        if not self.claim_wait_s >= 0:
            problems.append("--wait must be 0 or more seconds")
        if not self.worker_name:
            problems.append("--worker_name is empty")
        if problems:
            raise WorkerError("; ".join(problems))


# --- the worker ------------------------------------------------------------------------------------------------------


def spool_folder(options: LabellerOptions) -> Path:
    """One folder per (scheme, worker name): a restarted worker sends what its last run left."""
    key = {"prm_version": options.labelling_scheme_version, "worker": options.worker_name}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{options.labelling_scheme_version}-{options.worker_name}")[:80]
    return spool_root(options.spool_dir, TOOL) / f"{label}-{digest}"


class AILabelWorker(PoolWorker[RolloutJob]):
    """``await run()`` answers the summary dict (``status``: completed, stopped or failed)."""

    def __init__(
        self,
        options: LabellerOptions,
        *,
        progress: Progress | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        options.check()
        self._out, self._err = out, err
        super().__init__(options, progress=progress)
        self.options: LabellerOptions = options
        self.source: ClaimSource | None = None
        self.template = self._template()
        self._spooled: set[int] = set()  # rollouts whose label is in the spool, not stored yet
        self._key_prefix = uuid.uuid4().hex
        self._keys = itertools.count()
        self._answered = False
        self._refused_in_a_row = 0

    def _make_progress(self) -> Progress:
        return LabelProgress(
            log_json=self.options.log_json,
            show_bar=self.options.show_bar,
            unit="label",
            description=f"{TOOL} {self.options.labelling_scheme_version}",
            counters=LabelCounters(),
            out=self._out,
            err=self._err,
        )

    def _template(self) -> PromptTemplate:
        o = self.options
        try:
            template = PromptTemplate.from_file(o.prompt_template) if o.prompt_template else PromptTemplate.default()
        except TemplateError as exc:
            raise WorkerError(str(exc)) from exc
        if template.unknown_fields:
            logger.warning(
                "%s holds %s, which %s no field; sent as written",
                template.source,
                ", ".join("{" + name + "}" for name in template.unknown_fields),
                "is" if len(template.unknown_fields) == 1 else "are",
            )
        return template

    @property
    def label_counters(self) -> LabelCounters:
        assert isinstance(self.counters, LabelCounters)
        return self.counters

    # --- set-up -----------------------------------------------------------------------------------------------------

    def _spool_folder(self) -> Path:
        return spool_folder(self.options)

    async def _setup(self) -> ClaimSource:
        o = self.options
        assert self._api is not None and self.spool is not None
        self._spooled = {int(record.payload["rollout_id"]) for record in self.spool.unsent_records()}
        api = self._api
        return ClaimSource(
            claim=lambda limit, wait_s: api.get_rollouts(
                o.labelling_scheme_version,
                limit=limit,
                wait=wait_s,
                active_learning=o.active_learning,
                reference_prm_version=o.reference_prm_version,
            ),
            release=lambda ids: api.release_rollouts(o.labelling_scheme_version, ids),
            concurrency=o.concurrency,
            wait_s=o.claim_wait_s,
            exit_when_idle=o.exit_when_idle,
            max_jobs=o.max_labels,
            already_done=lambda rollout_id: rollout_id in self._spooled,
        )

    def _start_fields(self) -> dict[str, Any]:
        o = self.options
        return {
            "model": self.llm.model if self.llm else o.model,
            "labelling_scheme_version": o.labelling_scheme_version,
            "prompt_template": self.template.source,
            "prompt_template_sha256": self.template.sha256,
            "structured_output": o.structured_output,
            "active_learning": o.active_learning,
            "reference_prm_version": o.reference_prm_version,
        }

    # --- one rollout ------------------------------------------------------------------------------------------------

    def _messages(self, prompt: str) -> list[Message]:
        system = [{"role": "system", "content": self.options.system_prompt}] if self.options.system_prompt else []
        return [*system, {"role": "user", "content": prompt}]

    async def _handle(self, job: RolloutJob) -> bool:
        assert self.llm is not None and isinstance(self.source, ClaimSource)
        o = self.options
        c = self.label_counters
        steps = job.rollout.get("reasoning") or []
        if not isinstance(steps, list) or not steps:
            logger.error("rollout %d has no steps to grade; released", job.id)
            return await self._give_up(job)
        prompt = self.template.render(job.rollout)
        params = dataclasses.replace(
            o.sampling, extra_body={**o.sampling.extra_body, **structured_output_body(o.structured_output, len(steps))}
        )
        messages = self._messages(prompt)
        verdicts: Verdicts | None = None
        for attempt in range(1, o.answer_attempts + 1):
            try:
                generation = await self.llm.generate(messages=messages, params=params)
            except FatalGenerationError:
                await self.source.release([job])  # the run stops: the rollout goes back to the queue at once
                raise
            except (openai.OpenAIError, OSError) as exc:
                c.requests_failed += 1
                logger.warning("rollout %d: the judge request failed: %s", job.id, exc)
                await self._give_up(job)
                self._count_refusal(exc)
                return False
            finally:
                c.retries = self.llm.retries
                self._sync_source_counts()
            self._answered = True
            c.requests_done += 1
            c.prompt_tokens += generation.usage.prompt_tokens
            c.completion_tokens += generation.usage.completion_tokens
            choice = generation.choices[0] if generation.choices else None
            answer = choice.text if choice is not None else ""
            try:
                verdicts = parse_verdicts(answer, len(steps))
                break
            except VerdictError as exc:
                c.malformed += 1
                cut = " (cut off by max_tokens)" if choice is not None and choice.finish_reason == "length" else ""
                logger.info("rollout %d: answer %d of %d unusable%s: %s", job.id, attempt, o.answer_attempts, cut, exc)
                problem = str(exc) + ("; the answer was cut off: be brief" if cut else "")
                repair = REPAIR_MESSAGE.format(problem=problem, num_steps=len(steps))
                messages = [
                    *self._messages(prompt),
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": repair},
                ]
        if verdicts is None:
            logger.warning("rollout %d: no usable answer in %d tries; released", job.id, o.answer_attempts)
            return await self._give_up(job)
        self._keep(job, verdicts)
        return True

    def _count_refusal(self, exc: BaseException) -> None:
        """Stop the run when the judge refuses its first requests outright (see ``REFUSED_BEFORE_ANY_ANSWER``)."""
        status = getattr(exc, "status_code", None)
        if self._answered or status not in (400, 422):
            self._refused_in_a_row = 0
            return
        self._refused_in_a_row += 1
        if self._refused_in_a_row >= REFUSED_BEFORE_ANY_ANSWER:
            message = getattr(exc, "message", None) or str(exc)
            raise WorkerError(
                f"the judge refused the first {self._refused_in_a_row} requests ({status}: {message}); if it does not "
                f"offer --structured_output {self.options.structured_output}, choose another (none works with every "
                "server)"
            )

    async def _give_up(self, job: RolloutJob) -> bool:
        assert isinstance(self.source, ClaimSource)
        await self.source.give_up(job)
        self.label_counters.given_up += 1
        self._sync_source_counts()
        return False

    def _sync_source_counts(self) -> None:
        if isinstance(self.source, ClaimSource):
            self.label_counters.claimed = self.source.claimed
            self.label_counters.released = self.source.released

    def _keep(self, job: RolloutJob, verdicts: Verdicts) -> None:
        assert self.spool is not None
        o = self.options
        key = f"{self._key_prefix}{next(self._keys):x}"
        payload = {
            "rollout_id": job.id,
            "prm_output": list(verdicts.codes),
            "prm_version": o.labelling_scheme_version,
            "worker": o.worker_name,
            "explanations": list(verdicts.explanations),
        }
        # A judge's explanation may hold a NUL: replaced, so the label is stored rather than refused.
        self.spool.put(SpoolRecord(key=key, payload=storable(payload)))
        self._spooled.add(job.id)
        c = self.label_counters
        c.results += 1
        c.steps += len(verdicts.codes)
        if self.sender is not None:
            self.sender.notify()

    # --- storing ----------------------------------------------------------------------------------------------------

    async def send_batch(self, records: list[SpoolRecord]) -> list[Sent | Refused | Skipped]:
        return await asyncio.to_thread(self._post_labels, records)

    def _post_labels(self, records: list[SpoolRecord]) -> list[Sent | Refused | Skipped]:
        """Post the labels in one batch (``POST /process_reward_label/batch``; one by one against an older server),
        one outcome each. Posting a batch again after a lost answer is safe: the same label from the same worker
        answers the same id, so a record is acknowledged once it is stored, and a crash before that sends it again
        without storing it twice."""
        assert self.sender_api is not None
        try:
            results = self.sender_api.post_process_reward_labels([record.payload for record in records])
        except PrmsiteAPIError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 429):
                raise ServerUnavailableError(str(exc)) from exc
            raise  # the caller is refused (401, 403), not a label: fatal, the records stay in the spool
        except requests.RequestException as exc:
            raise ServerUnavailableError(str(exc)) from exc
        outcomes: list[Sent | Refused | Skipped] = []
        for result in results:
            status = result.get("status")
            if status is None:
                outcomes.append(Sent(result["id"]))
            elif status == 409:
                outcomes.append(Skipped(result.get("code") or "409"))
            else:
                outcomes.append(Refused(result))
        return outcomes

    def _forget(self, record: SpoolRecord) -> None:
        self._spooled.discard(int(record.payload["rollout_id"]))

    def _on_sent(self, record: SpoolRecord, outcome: Sent) -> None:
        self.counters.sent += 1
        self._forget(record)

    def _on_skipped(self, record: SpoolRecord, outcome: Skipped) -> None:
        self.label_counters.skipped += 1
        self._forget(record)
        rollout_id = record.payload["rollout_id"]
        logger.info("rollout %s: labelled or leased elsewhere first (%s); skipped", rollout_id, outcome.reason)

    def _on_refused(self, record: SpoolRecord, outcome: Refused) -> None:
        super()._on_refused(record, outcome)
        self._forget(record)

    async def _after_pool(self) -> None:
        if isinstance(self.source, ClaimSource):
            await self.source.close()

    def _summary_extra(self) -> dict[str, Any]:
        self._sync_source_counts()  # leases given back at the stop included
        o = self.options
        return {
            "labelling_scheme_version": o.labelling_scheme_version,
            "active_learning": o.active_learning,
            "reference_prm_version": o.reference_prm_version,
        }


def run(
    options: LabellerOptions, *, out: TextIO | None = None, err: TextIO | None = None
) -> tuple[int, dict[str, Any]]:
    """Run the labeller in this process; answer the exit status and the summary (``status`` failed, with ``error``,
    when the options cannot work). The summary line (or the JSON lines) go to ``out``, the bar to ``err``."""
    try:
        worker = AILabelWorker(options, out=out, err=err)
    except WorkerError as exc:
        return EXIT_FAILED, {"status": STATUS_FAILED, "error": str(exc)}
    summary = asyncio.run(worker.run())
    return exit_status(summary), summary
