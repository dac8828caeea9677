"""Search metrics and exports on a generated 1,000,000-node forest, against the floor: merely reading the rows.

The forest: trees of 64 rollouts of 10 steps each, branching like sampled reasoning (the first steps vary most;
identical rollouts share their leaf), with usage recorded on every rollout. Each measured run is a fresh process
(Django set up and libraries imported before the clock starts), so its peak memory is its own: the figure is the
growth of the peak resident set over what the process held before the run (``ru_maxrss``).

- floor (nodes): iterating the node and rollout rows beam_search reads (no text), doing nothing with them;
- floor (text): the same plus every node's text and every rollout's model, what the exports read;
- beam_search --num_beam_values 1,5 (ratio to the first floor);
- export_preferences --kind K for every kind, jsonl, and the tree kind as parquet too (ratio to the second floor).

Runs on a scratch SQLite file in a temporary folder (never the project's database), offline. ``BENCH_METRICS_NODES``
changes the size, ``BENCH_METRICS_REPEAT`` the number of runs of which the best is kept (each figure with a floor
measured just before it). Prints Markdown rows ``| benchmark | figure | floor (same run) | ratio |``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.forest_writer import forest_write  # noqa: E402

NODES = int(os.environ.get("BENCH_METRICS_NODES", "1000000"))
FOREST = "bench-metrics"
REPEAT = int(os.environ.get("BENCH_METRICS_REPEAT", "2"))
KINDS = ("pairs", "stepwise", "math_shepherd", "openrlhf", "processbench", "tree")


def setup(database: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["HF_HOME"] = str(database.parent / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def generate(database: Path) -> tuple[int, int]:
    """Write the forest with raw inserts (``bench.forest_writer``; setup, not measured); returns (nodes, rollouts)."""
    setup(database)
    from django.core.management import call_command
    from django.db import connection, transaction

    from forests.models import Forest

    call_command("migrate", verbosity=0)
    forest = Forest.objects.create(name=FOREST, config_name="bench", dataset_split="test")
    usage = {"prompt_tokens": 80, "completion_tokens": 220, "total_tokens": 300}
    with transaction.atomic():
        total_nodes, total_rollouts = forest_write(forest_id=forest.pk, nodes=NODES, usage=usage)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return total_nodes, total_rollouts


def measure(database: Path, phase: str, output: Path) -> dict:
    """Run one phase in this (fresh) process; return its wall time and peak memory growth."""
    setup(database)
    import io

    import datasets  # noqa: F401 - imported before the clock, like every library the phases use
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    from django.core.management import call_command

    from forests.models import Forest, Node
    from rollouts.models import Rollout

    forest = Forest.objects.get(name=FOREST)
    rss_before = _rss_kib()
    started = time.perf_counter()
    if phase.startswith("floor"):
        with_text = phase == "floor-text"
        columns = ["id", "parent_id", "depth", "is_leaf", "prediction", "ground_truth"]
        columns += ["text"] if with_text else []
        rollout_columns = ["id", "node_id", "prediction", "attributes__usage__total_tokens"]
        rows = 0
        for _ in Rollout.objects.filter(forest=forest, node__isnull=False).values_list(*rollout_columns).iterator(5000):
            rows += 1
        for _ in Node.objects.filter(forest=forest).values_list(*columns).iterator(5000):
            rows += 1
        if with_text:
            for _ in Rollout.objects.filter(forest=forest).values_list("id", "model").iterator(5000):
                rows += 1
    elif phase == "beam_search":
        out, err = io.StringIO(), io.StringIO()
        call_command("beam_search", "--forest_name", FOREST, "--num_beam_values", "1,5", stdout=out, stderr=err)
    else:
        kind, _, fmt = phase.partition(":")
        call_command(
            "export_preferences", "--forest_name", FOREST, "--kind", kind, "--output", str(output),
            "--format", fmt or "jsonl", stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {"seconds": seconds, "peak_growth_mib": max(0, peak - rss_before) / 1024}
    if output.exists():
        result["output_mib"] = output.stat().st_size / 2**20
    return result


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_phase(database: Path, phase: str, output: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--phase", phase, str(database), str(output)],
        cwd=ROOT,
        text=True,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp_name:
        tmp = Path(tmp_name)
        database = tmp / "bench.sqlite3"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--generate", str(database)], cwd=ROOT, text=True, capture_output=True
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit("generating the forest failed")
        nodes, rollouts = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"generated {nodes:,} nodes, {rollouts:,} rollouts in {time.perf_counter() - started:.0f} s")
        figures: dict[str, dict] = {}
        floors: dict[str, dict] = {}
        plan = [("beam_search", "floor-nodes")] + [(phase, "floor-text") for phase in (*KINDS, "tree:parquet")]
        for phase, floor in plan:
            # The floor is measured right before each figure, and both are the best of REPEAT runs: the machines
            # are shared, and the load drifts over minutes.
            for _ in range(REPEAT):
                output = tmp / f"{phase.replace(':', '.')}.out"
                base, figure = run_phase(database, floor, output), run_phase(database, phase, output)
                output.unlink(missing_ok=True)
                if phase not in figures or figure["seconds"] < figures[phase]["seconds"]:
                    figures[phase] = figure
                if phase not in floors or base["seconds"] < floors[phase]["seconds"]:
                    floors[phase] = base
            print(phase, json.dumps(figures[phase]), floor, json.dumps(floors[phase]), flush=True)

        def row(name: str, phase: str, floor: str) -> str:
            f, base = figures[phase], floors[phase]
            size = f" ({f['output_mib']:.0f} MiB written)" if "output_mib" in f else ""
            floor_name = "rows without text" if floor == "floor-nodes" else "rows with text"
            return (
                f"| {name}, {nodes:,} nodes, {rollouts:,} rollouts "
                f"| {f['seconds']:.1f} s, peak +{f['peak_growth_mib']:.0f} MiB{size} "
                f"| reading the {floor_name}: {base['seconds']:.1f} s, +{base['peak_growth_mib']:.0f} MiB "
                f"| {f['seconds'] / base['seconds']:.2f} |"
            )

        print("| benchmark | figure | floor (same run) | ratio |")
        print("| --- | --- | --- | --- |")
        print(row("beam_search --num_beam_values 1,5", "beam_search", "floor-nodes"))
        for kind in KINDS:
            print(row(f"export_preferences --kind {kind} (jsonl)", kind, "floor-text"))
        print(row("export_preferences --kind tree --format parquet", "tree:parquet", "floor-text"))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        print(json.dumps(generate(Path(sys.argv[2]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--phase":
        print(json.dumps(measure(Path(sys.argv[3]), sys.argv[2], Path(sys.argv[4]))))
    else:
        main()
