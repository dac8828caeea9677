"""The rounds of ``al_round`` on disk, and a round's metrics beside the previous round's. Pure: no Django.

One JSON file per forest in the state folder (``<state_dir>/<forest>.json``), rewritten whole (temporary file, then
rename) after every stage::

    {"forest_name": "…", "rounds": [
        {"round": 1, "prm_version": "…", "labelling_scheme_version": "…", "base_model": "…",
         "status": "running" | "completed" | "failed" | "stopped" | "abandoned", "error": "…",
         "started_at": "…", "finished_at": "…", "settings": {…},
         "stages": {"label": {"status": "done" | "skipped" | "failed" | "stopped", "seconds": …, "summary": {…}},
                    "train": {…}, "prm_label": {…}, "measure": {…}}}, …]}

Each stage's ``summary`` is what its command writes with ``--output_json`` (``ai_label_worker``, ``train_prm``,
``prm_label_worker``; ``measure`` holds ``beam_search`` and ``evaluate_prm``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prmsite.core.files import json_write_atomic

STAGES = ("label", "train", "prm_label", "measure")
STAGE_TITLES = {
    "label": "AI labels",
    "train": "train the PRM",
    "prm_label": "label with the PRM",
    "measure": "measure",
}
ROUND_RUNNING = "running"
ROUND_COMPLETED = "completed"
ROUND_FAILED = "failed"
ROUND_STOPPED = "stopped"
ROUND_ABANDONED = "abandoned"
STAGE_DONE = "done"
STAGE_SKIPPED = "skipped"
STAGE_FAILED = "failed"
STAGE_STOPPED = "stopped"


class StateError(ValueError):
    """The state file cannot be read or does not belong to this forest (one line)."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def state_path(state_dir: str | Path, forest_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", forest_name).strip(".") or "forest"
    return Path(state_dir).expanduser() / f"{safe}.json"


@dataclass
class RoundsState:
    forest_name: str
    path: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: str | Path, forest_name: str) -> RoundsState:
        path = state_path(state_dir, forest_name)
        if not path.exists():
            return cls(forest_name=forest_name, path=path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{path} cannot be read: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("rounds"), list):
            raise StateError(f"{path} is not an al_round state file")
        if data.get("forest_name") != forest_name:
            raise StateError(f"{path} holds the rounds of forest {data.get('forest_name')!r}, not {forest_name!r}")
        return cls(forest_name=forest_name, path=path, rounds=data["rounds"])

    def save(self) -> None:
        json_write_atomic(self.path, {"forest_name": self.forest_name, "rounds": self.rounds})

    def unfinished(self) -> dict[str, Any] | None:
        """The last round, when it did not complete (failed, stopped or still marked running: it can go on)."""
        if self.rounds and self.rounds[-1]["status"] in (ROUND_RUNNING, ROUND_FAILED, ROUND_STOPPED):
            return self.rounds[-1]
        return None

    def previous_completed(self, before: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The last completed round before ``before`` (or of all)."""
        rounds = self.rounds if before is None else self.rounds[: self.rounds.index(before)]
        return next((r for r in reversed(rounds) if r["status"] == ROUND_COMPLETED), None)

    def new_round(self, *, prm_version: str, labelling_scheme_version: str, base_model: str,
                  settings: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        record = {
            "round": len(self.rounds) + 1,
            "prm_version": prm_version,
            "labelling_scheme_version": labelling_scheme_version,
            "base_model": base_model,
            "status": ROUND_RUNNING,
            "error": "",
            "started_at": now_iso(),
            "finished_at": None,
            "settings": settings,
            "stages": {},
        }
        self.rounds.append(record)
        return record


# --- the metrics of a round ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | int | None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def round_metrics(record: dict[str, Any]) -> list[Metric]:
    """The figures of a round worth comparing, in the order they are shown."""
    stages = record.get("stages") or {}
    label = _get(stages, "label", "summary") or {}
    train = _get(stages, "train", "summary") or {}
    prm_label = _get(stages, "prm_label", "summary") or {}
    beam = _get(stages, "measure", "summary", "beam_search") or {}
    evaluation = _get(stages, "measure", "summary", "evaluate_prm") or {}
    held_out = train.get("eval") or {}
    metrics = [
        Metric("AI labels stored this round", label.get("sent")),
        Metric(f"labels of {record.get('labelling_scheme_version')} on the server", label.get("labels_total")),
        Metric("training examples used", _get(train, "data", "train_examples_used")),
        Metric("held-out loss", held_out.get("loss")),
        Metric("held-out step accuracy", held_out.get("step_accuracy")),
        Metric("held-out ProcessBench F1", _get(held_out, "processbench", "f1")),
        Metric("rollouts labelled by the PRM", prm_label.get("labelled")),
    ]
    for result in beam.get("results") or []:
        metrics.append(Metric(f"beam search accuracy, N={result.get('num_beams')}", result.get("accuracy")))
    baselines = beam.get("baselines") or {}
    for name, title in (
        ("best_of_n", "best-of-N by the PRM"),
        ("weighted_best_of_n", "weighted best-of-N by the PRM"),
        ("majority_vote", "majority vote (no PRM)"),
        ("oracle", "oracle (any rollout right)"),
    ):
        if name in baselines:
            metrics.append(Metric(title, _get(baselines, name, "accuracy")))
    if evaluation:
        # Named by their reference: figures against different references are different rows, never compared.
        against = f"evaluate_prm vs {evaluation.get('reference')}"
        metrics += [
            Metric(f"{against}: F1", evaluation.get("f1")),
            Metric(f"{against}: accuracy on erroneous", evaluation.get("error_accuracy")),
            Metric(f"{against}: accuracy on correct", evaluation.get("correct_accuracy")),
            Metric(f"{against}: step agreement", evaluation.get("step_agreement")),
            Metric(f"{against}: rollouts", evaluation.get("num_rollouts")),
        ]
    return metrics


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):  # bool is an int too
        return str(int(value))
    return f"{value:.3f}"


def _change(before: float | int | None, after: float | int | None) -> str:
    if before is None or after is None:
        return ""
    delta = after - before
    if isinstance(before, int) and isinstance(after, int) and not isinstance(delta, float):
        return f"{delta:+d}"
    return f"{delta:+.3f}"


def comparison_rows(current: dict[str, Any], previous: dict[str, Any] | None) -> Iterator[tuple[str, str, str, str]]:
    """(metric, previous, current, change) for every metric of either round, current's order first."""
    now = {m.name: m for m in round_metrics(current)}
    before = {m.name: m for m in round_metrics(previous)} if previous is not None else {}
    names = list(now) + [name for name in before if name not in now]
    for name in names:
        a = before.get(name)
        b = now.get(name)
        a_value = a.value if a is not None else None
        b_value = b.value if b is not None else None
        yield name, _figure(a_value), _figure(b_value), _change(a_value, b_value)


def comparison_table(current: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The round's metrics next to the previous round's, as a text table."""
    head_now = f"round {current['round']}"
    head_before = f"round {previous['round']}" if previous is not None else "(no earlier round)"
    rows = list(comparison_rows(current, previous))
    width = max([len("metric"), *(len(name) for name, *_ in rows)])
    columns = max(len(head_now), len(head_before), 8)
    lines = [f"{'metric':<{width}}  {head_before:>{columns}}  {head_now:>{columns}}  {'change':>8}"]
    lines += [f"{name:<{width}}  {a:>{columns}}  {b:>{columns}}  {delta:>8}" for name, a, b, delta in rows]
    return "\n".join(lines)
