"""The two intervals every figure carries. Pure: no Django.

- A node's value is a proportion (correct rollouts / rollouts through it): its 95% interval is the Wilson score
  interval, which stays inside [0, 1] and is honest for small counts (1 of 1 reads 0.21 to 1, not 1 to 1).
- An accuracy over trees is a mean of per-tree scores: its 95% interval is 1.96 times the standard error of that
  mean, ``s / sqrt(n)`` with ``s`` the sample standard deviation (n - 1 in the denominator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


def wilson_interval(successes: float, trials: float, *, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / trials``; ``None`` when there are no trials.

    ``successes`` may be fractional (an average of values in [0, 1] times its count); it must lie in [0, trials].
    """
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes {successes} outside [0, {trials}]")
    low, high = wilson_intervals(np.array([successes], dtype=np.float64), np.array([trials], dtype=np.float64), z=z)
    return float(low[0]), float(high[0])


def wilson_intervals(successes: np.ndarray, trials: np.ndarray, *, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise Wilson score intervals; NaN where there are no trials or the proportion is outside [0, 1]."""
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    low = np.full(trials.shape, np.nan)
    high = np.full(trials.shape, np.nan)
    ok = trials > 0
    ok[ok] = (successes[ok] >= 0) & (successes[ok] <= trials[ok] * (1 + 1e-12))
    n = trials[ok]
    p = np.clip(successes[ok] / n, 0.0, 1.0)
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low[ok] = np.maximum(0.0, centre - half)
    high[ok] = np.minimum(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Accuracy:
    """A mean of per-tree scores (1 right, 0 wrong, or an expectation in between) with its 95% interval."""

    accuracy: float | None
    ci95: float | None  # half-width: the interval is accuracy ± ci95 (None for fewer than two trees)
    num_trees: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def accuracy_of(scores: Sequence[float] | np.ndarray) -> Accuracy:
    """Mean of ``scores`` (one per tree) and 1.96 standard errors of that mean."""
    values = np.asarray(scores, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        return Accuracy(accuracy=None, ci95=None, num_trees=0)
    mean = float(values.mean())
    ci95 = Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else None
    return Accuracy(accuracy=mean, ci95=ci95, num_trees=n)
