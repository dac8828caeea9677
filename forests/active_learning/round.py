"""One round of the active-learning loop, as ``python manage.py al_round`` runs it.

Four stages, each the importable function of its own command, run in this process:

1. **label** — ``rollouts.worker.ai_labeller`` (``ai_label_worker``): the AI judge labels the scheme's queue with
   active learning against the previous round's PRM, until the queue is empty or ``max_labels`` are stored;
2. **train** — ``adapters.prm.training_run.train_prm_run`` (``train_prm``): a new adapter, ``prm_version`` V, from the
   scheme's labels on the server or from a stepwise export of the forest (soft Monte-Carlo labels), uploaded;
3. **prm_label** — ``adapters.prm.inference_worker.prm_label_worker_run`` (``prm_label_worker --exit_when_idle``):
   V labels every rollout the server has not seen it label;
4. **measure** — ``forests.search_reports.forest_search_report`` (``beam_search --value_function_option prm:V``) and
   ``prm_evaluation`` (``evaluate_prm --prm_version V --reference …``) on the forest.

Stages 1 to 3 are HTTP clients of the server (``WEBSERVER_API_BASE``, ``WEBSERVER_API_TOKEN``); the forest export and
stage 4 read the database, like ``beam_search``, so ``al_round`` runs where the server's database is reachable
(``DATABASE_URL``). After every stage the round is written to the state file (``forests.active_learning.state``); a
round that failed or was stopped goes on from its first unfinished stage when ``al_round`` runs again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import requests

from adapters.prm.inference_worker import LabelWorkerSettings, prm_label_worker_run
from adapters.prm.training import TrainSettings
from adapters.prm.training_run import train_prm_run
from forests.active_learning.state import (
    ROUND_ABANDONED,
    ROUND_COMPLETED,
    ROUND_FAILED,
    ROUND_RUNNING,
    ROUND_STOPPED,
    STAGE_DONE,
    STAGE_FAILED,
    STAGE_SKIPPED,
    STAGE_STOPPED,
    STAGE_TITLES,
    STAGES,
    RoundsState,
    now_iso,
)
from forests.exports import export_options, preferences_export
from forests.models import Forest, Node
from forests.prm_evaluation import prm_evaluation
from forests.search_reports import forest_search_report
from forests.selectors import forest_get
from forests.services import forest_search_report_save
from prmsite.core.client import PrmsiteAPIError, PrmsiteClient
from prmsite.core.domain import PRM_THRESHOLD
from prmsite.core.errors import NotFoundError
from prmsite.core.progress import Bars
from rollouts.worker.ai_labeller import LabellerOptions
from rollouts.worker.ai_labeller import run as labeller_run

TRAIN_ON_LABELS = "labels"
TRAIN_ON_FOREST = "forest"
TRAIN_SOURCES = (TRAIN_ON_LABELS, TRAIN_ON_FOREST)


class RoundError(Exception):
    """The round stopped (failed, or by a signal); the message is one line for the user."""


class _StageStopped(Exception):
    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class _StageFailed(Exception):
    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class RoundSettings:
    """Everything a round needs. ``labeller`` None skips the AI labels (the scheme's labels come from elsewhere:
    people, an earlier run); its ``labelling_scheme_version`` is the round's."""

    forest_name: str
    labelling_scheme_version: str
    train: TrainSettings  # its prm_version and output_dir are the round's
    labeller: LabellerOptions | None = None
    prm_version: str | None = None  # default: <forest>-r<round>
    state_dir: Path = Path("al_rounds")
    reference_prm_version: str | None = None  # active learning; default: the previous round's PRM
    train_on: str = TRAIN_ON_LABELS
    prm_label: LabelWorkerSettings = field(default_factory=lambda: LabelWorkerSettings(prm_version="-"))
    num_beam_values: tuple[int, ...] = (1, 5)
    aggregation: str = "last"
    reference: str = "labelled"  # evaluate_prm's; "labels" means labels:<labelling_scheme_version>
    threshold: float = PRM_THRESHOLD
    save_search_report: bool = False
    worker: str = field(default_factory=socket.gethostname)

    @property
    def evaluation_reference(self) -> str:
        return f"labels:{self.labelling_scheme_version}" if self.reference == "labels" else self.reference

    def as_record(self) -> dict[str, Any]:
        """What the state file keeps of the settings (no token, no API key)."""
        labeller = None
        if self.labeller is not None:
            o = self.labeller
            labeller = {
                "model": o.model,
                "worker_name": o.worker_name,
                "prompt_template": o.prompt_template,
                "structured_output": o.structured_output,
                "api": o.api,
                "max_labels": o.max_labels,
                "answer_attempts": o.answer_attempts,
                "concurrency": o.concurrency,
                "temperature": o.sampling.temperature,
                "max_tokens": o.sampling.max_tokens,
            }
        return {
            "labeller": labeller,
            "reference_prm_version": self.reference_prm_version,
            "train_on": self.train_on,
            "train": {k: v for k, v in self.train.as_dict().items() if k not in ("prm_version", "output_dir")},
            "prm_label": {"device": self.prm_label.device, "batch_size": self.prm_label.batch_size},
            "num_beam_values": list(self.num_beam_values),
            "aggregation": self.aggregation,
            "reference": self.evaluation_reference,
            "threshold": self.threshold,
        }


class Round:
    """Runs (or continues) one round of ``settings.forest_name``; ``run()`` answers (this round, the previous
    completed round or None) and raises :class:`RoundError` when a stage fails or a signal stops it."""

    def __init__(
        self,
        settings: RoundSettings,
        *,
        log: Callable[[str], None],
        err: TextIO | None = None,
        labeller_out: TextIO | None = None,
        client_factory: Callable[[], PrmsiteClient] = PrmsiteClient,
    ) -> None:
        self.settings = settings
        self.log = log
        self.err = err  # the raw stream for progress bars
        self.labeller_out = labeller_out
        self.client_factory = client_factory
        self.state = RoundsState.load(settings.state_dir, settings.forest_name)
        self.record: dict[str, Any] = {}
        self.forest: Forest | None = None

    # --- the round --------------------------------------------------------------------------------------------------

    def run(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        s = self.settings
        try:  # before any work: the measures read the forest from the database
            self.forest = forest_get(name=s.forest_name)
        except NotFoundError as exc:
            raise RoundError(
                f"{exc.message.rstrip('.')} in this database; al_round measures through the database, like "
                "beam_search: run it where DATABASE_URL reaches the server's"
            ) from exc
        with self.client_factory() as client:
            client.list_prm_adapters()  # the server answers and takes the token, before any work
            self.record = self._round_record()
            previous = self.state.previous_completed(self.record)
            for number, name in enumerate(STAGES, start=1):
                self._stage(number, name, client, previous)
        self.record["status"] = ROUND_COMPLETED
        self.record["error"] = ""
        self.record["finished_at"] = now_iso()
        self.record["seconds"] = round(sum(float(st.get("seconds") or 0) for st in self.record["stages"].values()), 3)
        self.state.save()
        return self.record, previous

    def _round_record(self) -> dict[str, Any]:
        s = self.settings
        unfinished = self.state.unfinished()
        if unfinished is not None and s.prm_version in (None, unfinished["prm_version"]):
            done = [
                n for n in STAGES if (unfinished["stages"].get(n) or {}).get("status") in (STAGE_DONE, STAGE_SKIPPED)
            ]
            self.log(
                f"al_round {s.forest_name}: round {unfinished['round']} (prm {unfinished['prm_version']}) "
                f"{unfinished['status']} earlier; going on" + (f" after {', '.join(done)}" if done else "")
            )
            unfinished["status"] = ROUND_RUNNING
            self.state.save()
            return unfinished
        if unfinished is not None:
            unfinished["status"] = ROUND_ABANDONED
            self.log(f"al_round {s.forest_name}: round {unfinished['round']} left unfinished (abandoned)")
        number = len(self.state.rounds) + 1
        prm_version = s.prm_version or f"{s.forest_name}-r{number}"
        record = self.state.new_round(
            prm_version=prm_version,
            labelling_scheme_version=s.labelling_scheme_version,
            base_model=s.train.base_model,
            settings=s.as_record(),
        )
        self.state.save()
        return record

    def _stage(self, number: int, name: str, client: PrmsiteClient, previous: dict[str, Any] | None) -> None:
        title = f"[{number}/{len(STAGES)}] {STAGE_TITLES[name]}"
        stages = self.record["stages"]
        if (stages.get(name) or {}).get("status") in (STAGE_DONE, STAGE_SKIPPED):
            self.log(f"{title}: done in an earlier run")
            return
        run = {
            "label": self._label,
            "train": self._train,
            "prm_label": self._prm_label,
            "measure": self._measure,
        }[name]
        stages[name] = {"status": "running", "started_at": now_iso()}
        self.state.save()
        started = time.monotonic()
        status, summary, error = STAGE_DONE, None, ""
        try:
            summary = run(title, client, previous)
            if summary.get("skipped"):
                status = STAGE_SKIPPED
        except _StageStopped as exc:
            status, summary, error = STAGE_STOPPED, exc.summary, str(exc)
        except KeyboardInterrupt:
            status, error = STAGE_STOPPED, "stopped by a signal"
        except Exception as exc:  # any failure ends the round with one line; the state keeps it
            status, summary, error = STAGE_FAILED, getattr(exc, "summary", None), _one_line(exc)
        seconds = round(time.monotonic() - started, 3)
        stages[name] = {"status": status, "seconds": seconds, "summary": summary, "finished_at": now_iso()}
        if error:
            stages[name]["error"] = error
        if status in (STAGE_STOPPED, STAGE_FAILED):
            self.record["status"] = ROUND_STOPPED if status == STAGE_STOPPED else ROUND_FAILED
            self.record["error"] = f"{name}: {error}"
            self.state.save()
            verb = "was stopped" if status == STAGE_STOPPED else "failed"
            raise RoundError(
                f"round {self.record['round']} {verb} at stage {name}: {error} (al_round again goes on from there)"
            )
        self.state.save()
        self.log(f"{title}: {'skipped' if status == STAGE_SKIPPED else 'done'} in {seconds:.1f} s")

    # --- the stages -------------------------------------------------------------------------------------------------

    def _label(self, title: str, client: PrmsiteClient, previous: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        scheme = s.labelling_scheme_version
        if s.labeller is None:
            total = len(client.get_process_reward_label_ids(scheme))
            self.log(f"{title}: no judge (--skip_ai_labels); the scheme {scheme} has {total} labels")
            return {"skipped": True, "labels_total": total}
        reference = s.reference_prm_version or (previous["prm_version"] if previous else None)
        options = dataclasses.replace(
            s.labeller, labelling_scheme_version=scheme, exit_when_idle=True, reference_prm_version=reference
        )
        budget = f", at most {options.max_labels} labels" if options.max_labels else ""
        against = f"against {reference}" if reference else "against the server's newest adapter, if any"
        self.log(
            f"{title}: {options.model or 'the judge'} labels the queue of {scheme} (active learning {against}){budget}"
        )
        _code, summary = labeller_run(options, out=self.labeller_out, err=self.err)
        try:
            summary["labels_total"] = len(client.get_process_reward_label_ids(scheme))
        except (PrmsiteAPIError, requests.RequestException):
            summary["labels_total"] = None  # the labeller's own error says more
        if summary["status"] == "failed":
            raise _StageFailed(summary.get("error") or "the labeller failed", summary)
        if summary["status"] == "stopped":
            raise _StageStopped("stopped by a signal", summary)
        return summary

    def _train(self, title: str, client: PrmsiteClient, previous: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        version = self.record["prm_version"]
        folder = s.state_dir / f"{_safe(s.forest_name)}-round-{self.record['round']}"
        if any(a["prm_version"] == version for a in client.list_prm_adapters()):
            # Trained and uploaded by an earlier run that ended before it could record it.
            self.log(f"{title}: the server has the adapter of {version} already; not trained again")
            return {"prm_version": version, "uploaded": True, "note": "adapter found on the server"}
        dataset = None
        if s.train_on == TRAIN_ON_FOREST:
            dataset = str(self._export_stepwise(folder / "stepwise.jsonl"))
        source = f"the stepwise export {dataset}" if dataset else f"the labels of {s.labelling_scheme_version}"
        self.log(f"{title}: {version} on {s.train.base_model}, from {source}")
        settings = dataclasses.replace(s.train, prm_version=version, output_dir=folder / "adapter", overwrite=True)
        with _signals(interrupt=True):
            summary = train_prm_run(
                settings,
                dataset=dataset,
                labelling_scheme_version=None if dataset else s.labelling_scheme_version,
                client=client,
                upload=True,
                worker=s.worker,
                progress_file=self.err,
                log=self.log,
            )
        return summary

    def _export_stepwise(self, output: Path) -> Path:
        assert self.forest is not None
        output.parent.mkdir(parents=True, exist_ok=True)
        bars = Bars(self.err)
        try:
            summary = preferences_export(
                forest=self.forest,
                output=output,
                fmt="jsonl",
                options=export_options(kind="stepwise", soft_labels=True),
                on_rows=bars.callback("reading nodes", "node", Node.objects.filter(forest=self.forest).count()),
                on_progress=bars.callback("exporting", "tree"),
            )
        finally:
            bars.close()
        self.log(f"export: {summary.line()}")
        return output

    def _prm_label(self, title: str, client: PrmsiteClient, previous: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        settings = dataclasses.replace(
            s.prm_label, prm_version=self.record["prm_version"], exit_when_idle=True, wait=0.0
        )
        self.log(f"{title}: {settings.prm_version} scores every rollout it has not labelled yet")
        stop = threading.Event()
        with _signals(stop=stop):
            summary = prm_label_worker_run(
                settings,
                client=client,
                client_factory=self.client_factory,
                stop=stop,
                progress_file=self.err,
                log=self.log,
            )
        self.log(f"{title}: {summary.line()}")
        if summary.ended_by == "stop":
            raise _StageStopped("stopped by a signal", summary.as_dict())
        return summary.as_dict()

    def _measure(self, title: str, client: PrmsiteClient, previous: dict[str, Any] | None) -> dict[str, Any]:
        s = self.settings
        forest = self.forest
        assert forest is not None
        version = self.record["prm_version"]
        self.log(f"{title}: beam search with prm:{version} and evaluate_prm against {s.evaluation_reference}")
        bars = Bars(self.err)
        with _signals(interrupt=True):
            try:
                report = forest_search_report(
                    forest=forest,
                    num_beam_values=s.num_beam_values,
                    value_function_option=f"prm:{version}",
                    aggregation=s.aggregation,
                    on_rows=bars.callback("reading nodes", "node", Node.objects.filter(forest=forest).count()),
                )
                evaluation = prm_evaluation(
                    prm_version=version, reference=s.evaluation_reference, forest=forest, threshold=s.threshold
                )
            finally:
                bars.close()
        figures = {"beam_search": report.as_dict(), "evaluate_prm": evaluation.as_dict()}
        if figures["evaluate_prm"]["num_rollouts"] == 0:
            raise _StageFailed(
                f"no rollout of forest {forest.name} has both a label of {version} and a reference "
                f"({s.evaluation_reference}); are the forest's rollouts on the server prm_label_worker labelled?",
                figures,
            )
        if s.save_search_report:
            forest_search_report_save(forest=forest, report=figures["beam_search"])
        return figures


# --- helpers ---------------------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip(".") or "forest"


def _one_line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())


@contextlib.contextmanager
def _signals(*, stop: threading.Event | None = None, interrupt: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM during a stage: set ``stop`` (the stage ends cleanly; a second signal interrupts), or
    raise ``KeyboardInterrupt`` at once (``interrupt``). Only the main thread can set handlers; elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop is not None and not stop.is_set() and not interrupt:
            stop.set()
            return
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
