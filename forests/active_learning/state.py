"""The rounds of ``al_round`` on disk. Pure: no Django.

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
