"""The AI labeller's counters and its progress line and summary (labels, not rollouts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollouts.worker.progress import Counters, Progress


@dataclass
class LabelCounters(Counters):
    """``results``: labels judged (in the spool); ``sent``: stored; ``requests_*``: judge requests."""

    claimed: int = 0
    skipped: int = 0  # 409: labelled (or leased) by someone else first
    malformed: int = 0  # answers that could not be used (asked again)
    given_up: int = 0  # rollouts released after failing
    released: int = 0  # leases given back (given up, or unfinished at a stop)
    steps: int = 0  # steps graded in the labels judged


class LabelProgress(Progress):
    def postfix(self) -> str:
        c = self.counters
        per_s, tokens_per_s = self.rates()
        assert isinstance(c, LabelCounters)
        return (
            f"requests={c.requests_done} in flight={c.in_flight} malformed={c.malformed} failed={c.requests_failed} "
            f"skipped={c.skipped} {per_s:.2f} labels/s {tokens_per_s:.0f} tokens/s"
            + (f" unsent={c.unsent}" if c.unsent else "")
        )

    def summary_line(self, *, status: str = "", **extra: Any) -> str:
        c = self.counters
        assert isinstance(c, LabelCounters)
        per_s, tokens_per_s = self.rates()
        parts = [
            f"{c.results} labels of {c.steps} steps ({c.sent} stored, {c.unsent} left in the spool, "
            f"{c.skipped} skipped: labelled or leased elsewhere, {c.refused} refused)",
            f"{c.claimed} rollouts claimed, {c.given_up} given up, {c.released} released",
            f"{c.requests_done} judge requests, {c.malformed} malformed answers, {c.requests_failed} failed, "
            f"{c.retries} retries",
            f"{c.tokens} tokens",
            f"{per_s:.2f} labels/s, {tokens_per_s:.0f} tokens/s in {self.elapsed_s:.1f} s",
        ]
        parts += [f"{key}: {value}" for key, value in extra.items()]
        return (f"{status}: " if status else "") + "; ".join(parts)
