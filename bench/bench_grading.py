"""Answers graded per second: the math kind (math-verify in its worker process) against the integer rule of the label
kind, the floor, measured in the same run.

    .venv/bin/python bench/bench_grading.py          # or: python bench/run.py bench_grading

Every pair is distinct (MATH-style answers built from templates with varying numbers) and the verdict cache is cleared
before each timed run, so no figure is helped by the cache; the worker is started before timing (its start, about
half a second, is paid once per process). Rows:

- math kind, a realistic MATH mix: a third plain numbers (integers, decimals, fractions; decided by the fast path
  without math-verify), the rest expressions, intervals, tuples, sets, radicals, equations;
- math kind, expressions only: every pair reaches math-verify;
- math kind, one forest's repeated answers: 20 distinct pairs graded over and over (the cache at work);
- the floor: label kind, integer pairs.

Each verdict is checked against the template's expected one (a wrong verdict fails the run), and none may time out.
``BENCH_GRADING_ANSWERS`` changes the number of math pairs (default 1500; 300 with BENCH_SHORT=1). Prints Markdown
rows ``| benchmark | figure | floor | ratio |``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prmsite.core import grading  # noqa: E402
from prmsite.core.grading import AnswerSpec, grade  # noqa: E402

SHORT = os.environ.get("BENCH_SHORT") == "1"
ANSWERS = int(os.environ.get("BENCH_GRADING_ANSWERS", "300" if SHORT else "1500"))
LABEL_ANSWERS = 200_000
MATH = AnswerSpec("math")
LABEL = AnswerSpec("label")

Pair = tuple[str, str, bool]  # answer, reference, expected verdict


def _numeric(r: random.Random, i: int) -> Pair:
    a, b = r.randint(2, 999), r.randint(2, 999)
    match i % 3:
        case 0:
            return f"{a * 1000 + i:,}", f"{a * 1000 + i}", True
        case 1:
            return f"\\frac{{{2 * a}}}{{{2 * b}}}", f"{a}/{b}", True
        case _:
            return f"{a + i}.5", f"{a + i + 1}.5", False


def _symbolic(r: random.Random, i: int) -> Pair:
    a, b, k, m = r.randint(1, 60), r.randint(61, 120), r.randint(2, 9), r.choice((2, 3, 5, 6, 7))
    match i % 9:
        case 0:
            return f"{k}\\sqrt{{{m}}}", f"\\sqrt{{{k * k * m}}}", True
        case 1:
            return f"(x + {a})(x + {b})", f"x^2 + {a + b}x + {a * b}", True
        case 2:
            return f"[{a}, {b})", f"[{a}, {b}]", False
        case 3:
            return f"({a}, \\frac{{\\pi}}{{{k}}})", f"\\left({a}, \\pi/{k}\\right)", True
        case 4:
            return f"2^{{n-{k}}}", f"\\frac{{2^n}}{{{2**k}}}", True
        case 5:
            return f"\\{{{a}, {b}\\}}", f"\\{{{b}, {a}\\}}", True
        case 6:
            return f"{a}\\pi", f"{a + 1}\\pi", False
        case 7:
            return f"y = {a}x + {b}", f"y = {a}x + {b + 1}", False
        case _:
            return f"\\frac{{{a}\\sqrt{{{m}}}}}{{{b}}}", f"\\frac{{{2 * a}\\sqrt{{{m}}}}}{{{2 * b}}}", True


def pairs(count: int, make: Callable[[random.Random, int], Pair]) -> list[Pair]:
    """``count`` distinct pairs from ``make``, in a fixed order."""
    found: dict[Pair, None] = {}
    i = 0
    while len(found) < count:
        found.setdefault(make(random.Random(i), i))
        i += 1
    return list(found)


def realistic(count: int) -> list[Pair]:
    numeric = pairs(count // 3, _numeric)
    symbolic = pairs(count - len(numeric), _symbolic)
    return [*numeric, *symbolic]


def timed(batch: list[Pair], spec: AnswerSpec, *, clear: bool = True) -> float:
    """Answers graded per second over ``batch``; every verdict must be the expected one and decided."""
    if clear:
        grading.clear_cache()
    started = time.perf_counter()
    verdicts = [grade(answer, reference, spec) for answer, reference, _ in batch]
    elapsed = time.perf_counter() - started
    wrong = [(p, v) for p, v in zip(batch, verdicts, strict=True) if v.correct != p[2] or v.reason]
    if wrong:
        raise RuntimeError(f"{len(wrong)} unexpected verdicts, e.g. {wrong[:3]}")
    return len(batch) / elapsed


def main() -> int:
    started = time.monotonic()
    grade("x + 1", "1 + x", MATH)  # start the worker outside the timing
    starts = grading.worker_starts()
    integers = [(f"{i % 1000:,}", f"{(i * 7) % 1000}", i % 1000 == (i * 7) % 1000) for i in range(LABEL_ANSWERS)]
    floor = timed(integers, LABEL)
    mix = timed(realistic(ANSWERS), MATH)
    calls = grading.math_verify_calls()
    symbolic = timed(pairs(ANSWERS, _symbolic), MATH)
    symbolic_calls = grading.math_verify_calls() - calls
    forest = pairs(20, _symbolic) * max(1, ANSWERS // 20)
    grading.clear_cache()
    cached = timed(forest, MATH, clear=False)
    if grading.worker_starts() != starts or symbolic_calls != ANSWERS:
        raise RuntimeError("the worker restarted, or a symbolic pair skipped math-verify")
    print(
        f"{ANSWERS} math pairs a run, {LABEL_ANSWERS} integer pairs, budget {grading.grade_time_budget():g} s a pair, "
        f"{os.cpu_count()} cores, {time.monotonic() - started:.0f} s"
    )
    print("| benchmark | figure | floor | ratio |")
    print("| --- | --- | --- | --- |")
    rows = [
        ("realistic MATH mix (1/3 plain numbers: fast path), distinct pairs, cache cleared", mix),
        ("expressions only (every pair through math-verify), distinct pairs, cache cleared", symbolic),
        ("one forest's 20 distinct pairs graded over and over (verdict cache)", cached),
    ]
    for name, rate in rows:
        print(
            f"| grade(), kind math, {name} | {rate:,.0f} answers/s "
            f"({floor / rate:,.0f}x slower than the floor) | kind label, integer pairs: {floor:,.0f} answers/s "
            f"| {rate / floor:.5f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
