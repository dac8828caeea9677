"""Progress of a worker: counters, a live tqdm bar on stderr, JSON lines for machines, and the closing summary.

The bar shows results done (with the rate), requests in flight, failed requests, results/s and tokens/s. With
``log_json`` there is no bar: a JSON object per ``interval_s`` (``"event": "progress"``) and one at the end
(``"event": "summary"``) go to ``out``, one per line. A worker with counters of its own passes a ``Counters``
subclass and overrides ``postfix`` and ``summary_line`` (the AI labeller does).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, TextIO

from tqdm import tqdm


@dataclass
class Counters:
    """What a worker did so far. ``requests_*`` count generation requests; ``results`` what they produced."""

    requests_done: int = 0
    requests_failed: int = 0
    in_flight: int = 0
    results: int = 0
    sent: int = 0
    refused: int = 0
    unsent: int = 0
    empty: int = 0
    truncated: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: Counters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Progress:
    """Counters plus their display. ``refresh()`` redraws (call it after changes; it rate-limits itself)."""

    def __init__(
        self,
        *,
        total: int | None = None,
        unit: str = "rollout",
        log_json: bool = False,
        interval_s: float = 10.0,
        err: TextIO | None = None,
        out: TextIO | None = None,
        show_bar: bool = True,
        description: str = "rollout_worker",
        counters: Counters | None = None,
    ) -> None:
        self.counters = counters if counters is not None else Counters()
        self.unit = unit
        self.log_json = log_json
        self.interval_s = interval_s
        self.out = out or sys.stdout
        self.started = time.monotonic()
        self._last_json = self.started
        self._last_draw = 0.0
        self._bar_n = 0
        self.bar: tqdm | None = None
        if show_bar and not log_json:
            self.bar = tqdm(
                total=total,
                unit=unit,
                desc=description,
                file=err or sys.stderr,
                dynamic_ncols=True,
                smoothing=0.1,
                mininterval=0.5,
            )

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rates(self) -> tuple[float, float]:
        elapsed = max(self.elapsed_s, 1e-9)
        return self.counters.results / elapsed, self.counters.tokens / elapsed

    def set_total(self, total: int | None) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.bar is not None and (force or now - self._last_draw >= 0.5):
            self._last_draw = now
            c = self.counters
            if c.results != self._bar_n:
                self.bar.update(c.results - self._bar_n)
                self._bar_n = c.results
            self.bar.set_postfix_str(self.postfix(), refresh=True)
        if self.log_json and (force or now - self._last_json >= self.interval_s):
            self._last_json = now
            self.emit("progress")

    def postfix(self) -> str:
        """What the bar shows after its count (a subclass shows its own counters)."""
        c = self.counters
        per_s, tokens_per_s = self.rates()
        return (
            f"done={c.requests_done} in flight={c.in_flight} failed={c.requests_failed} "
            f"{per_s:.1f} {self.unit}s/s {tokens_per_s:.0f} tokens/s" + (f" unsent={c.unsent}" if c.unsent else "")
        )

    def emit(self, event: str, **extra: Any) -> None:
        """One JSON line on ``out`` (only with ``log_json``)."""
        if not self.log_json:
            return
        per_s, tokens_per_s = self.rates()
        record = {
            "event": event,
            "elapsed_s": round(self.elapsed_s, 3),
            **self.counters.as_dict(),
            "tokens": self.counters.tokens,
            f"{self.unit}s_per_s": round(per_s, 3),
            "tokens_per_s": round(tokens_per_s, 1),
            **extra,
        }
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def summary(self, **extra: Any) -> dict[str, Any]:
        per_s, tokens_per_s = self.rates()
        return {
            **self.counters.as_dict(),
            "tokens": self.counters.tokens,
            "elapsed_s": round(self.elapsed_s, 3),
            f"{self.unit}s_per_s": round(per_s, 3),
            "tokens_per_s": round(tokens_per_s, 1),
            **extra,
        }

    def summary_line(self, *, status: str = "", **extra: Any) -> str:
        c = self.counters
        per_s, tokens_per_s = self.rates()
        parts = [
            f"{c.results} {self.unit}s ({c.sent} stored, {c.unsent} left in the spool, {c.refused} refused)",
            f"{c.requests_done} requests done, {c.requests_failed} failed, {c.retries} retries",
            f"{c.empty} empty, {c.truncated} cut off",
            f"{c.tokens} tokens",
            f"{per_s:.2f} {self.unit}s/s, {tokens_per_s:.0f} tokens/s in {self.elapsed_s:.1f} s",
        ]
        parts += [f"{key}: {value}" for key, value in extra.items()]
        return (f"{status}: " if status else "") + "; ".join(parts)

    def finish(self, *, status: str, **extra: Any) -> dict[str, Any]:
        """Close the bar and write the summary (a JSON line, or one line of text); answer it as a dict."""
        self.refresh(force=True)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        summary = self.summary(status=status, **extra)
        if self.log_json:
            self.emit("summary", status=status, **extra)
        else:
            self.out.write(self.summary_line(status=status, **extra) + "\n")
            self.out.flush()
        return summary
