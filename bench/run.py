"""Run every benchmark (bench/bench_*.py) in its own process and collect what each prints.

Each benchmark prints Markdown table rows (``| benchmark | figure | floor | ratio |``) as its last lines of output.
Figures are reported as ratios to a floor measured in the same run, because these machines are shared and noisy.
Results go to stdout and to bench/results/latest.md.

    python bench/run.py                      # every benchmark
    python bench/run.py bench_load           # the ones named (bench_cost: CPU per request, server against service)
    python bench/run.py --short bench_load   # short mode: BENCH_SHORT=1 (bench_load: 15 s a backend, not 180)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str]) -> int:
    short = "--short" in argv
    selected = {name for name in argv if name != "--short"}
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not selected or p.stem in selected)
    if not scripts:
        print(f"no benchmark matches {sorted(selected)}", file=sys.stderr)
        return 2
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    report: list[str] = []
    failed = 0
    for script in scripts:
        started = time.monotonic()
        print(f"=== {script.name}", flush=True)
        env = {**os.environ, "BENCH_SHORT": "1"} if short else None
        proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, text=True, capture_output=True, env=env)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            failed += 1
            sys.stderr.write(proc.stderr)
            print(f"--- {script.name} failed (exit {proc.returncode})", flush=True)
            continue
        rows = [line for line in proc.stdout.splitlines() if line.startswith("|")]
        report.append(f"### {script.stem} ({time.monotonic() - started:.0f} s)\n\n" + "\n".join(rows) + "\n")
    (out_dir / "latest.md").write_text("\n".join(report))
    print(f"{len(scripts) - failed} of {len(scripts)} benchmarks ran; results in {out_dir / 'latest.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
