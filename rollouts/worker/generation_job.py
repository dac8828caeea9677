"""A rollout worker's unit of work: one generation request (``n`` answers to a prompt, continuing a prefix), as the
dataset and forest sources hand them out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationJob:
    """One generation request: ``n`` answers to ``prompt``, each continuing ``prefix`` (steps)."""

    key: str  # identity of the request, e.g. "17:0" (item 17, first request) or "e42:1"
    prompt: str
    ground_truth: int | None  # the label kind's integer label; None for the other answer kinds (graded by the server)
    n: int
    prefix: tuple[str, ...] = ()
    meta: Any = None  # kept in the spool with each result: what a restarted worker has done
    extra: dict[str, Any] = field(default_factory=dict)  # fields added to every rollout of the request
    expansion_id: int | None = None
    first_index: int = 0  # index of the first answer among the unit's repeats


def request_sizes(total: int, n: int) -> list[int]:
    """``total`` answers in requests of at most ``n``."""
    n = max(1, n)
    return [min(n, total - start) for start in range(0, total, n)]
