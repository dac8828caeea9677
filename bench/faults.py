"""Run every fault scenario (tests/faults/, slow ones included) on SQLite, PostgreSQL or both, and print a table of
scenario -> result per database.

    python bench/faults.py --database both        # PostgreSQL: DATABASE_URL or postgres://postgres@127.0.0.1:5432/prmsite_ci

Each database pass is one pytest run of ``tests/faults`` (``-m ""``: the ``slow`` scenarios too, which CI runs only in
its SQLite pass); the PostgreSQL pass uses its own test database (``--test_database``, default ``test_faults``).
Exit status 1 when any scenario failed. See RELIABILITY.md, section 3.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "test_claimer_kill": "a. claimer kill -9 mid-lease",
    "test_server_kill": "b. web server kill -9 + restart during rollout_worker",
    "test_seed_kill": "c. seed_forest kill -9 half-way",
    "test_prm_kill": "d. train_prm / prm_label_worker kill -9",
    "test_storage_full": "e. adapter storage full",
    "test_database_unreachable": "f. database unreachable",
}
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/prmsite_ci"


def run_pass(database: str, *, postgres_url: str, test_database: str, workers: int) -> dict[str, list[tuple]]:
    env = dict(os.environ)
    env.pop("DATABASE_TEST_NAME", None)
    if database == "postgres":
        env["DATABASE_URL"] = postgres_url
        env["DATABASE_TEST_NAME"] = test_database
    else:
        env.pop("DATABASE_URL", None)
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-m", "", "-p", "no:randomly", f"--junitxml={report}"]
        command += ["-n", str(workers)] if workers > 1 else []
        command.append("tests/faults")
        print(f"[{database}] {' '.join(command)}", file=sys.stderr, flush=True)
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        results: dict[str, list[tuple]] = defaultdict(list)
        for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - pytest's own report
            module = case.get("classname", "").rsplit(".", 1)[-1]
            outcome = "passed"
            for child in case:
                if child.tag in {"failure", "error"}:
                    outcome = "FAILED"
                elif child.tag == "skipped":
                    outcome = "skipped"
            results[module].append((case.get("name"), outcome, float(case.get("time", 0))))
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres_url", default=os.environ.get("DATABASE_URL", "").strip() or DEFAULT_POSTGRES)
    parser.add_argument("--test_database", default="test_faults")
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist processes (default 1)")
    args = parser.parse_args()
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    passes = {
        db: run_pass(db, postgres_url=args.postgres_url, test_database=args.test_database, workers=args.workers)
        for db in databases
    }
    print()
    print("| scenario | " + " | ".join(databases) + " |")
    print("| --- | " + " | ".join("---" for _ in databases) + " |")
    failed = False
    for module, title in SCENARIOS.items():
        cells = []
        for db in databases:
            cases = passes[db].get(module, [])
            if not cases:
                cells.append("not run")
                failed = True
                continue
            outcomes = [outcome for _, outcome, _ in cases]
            failed |= "FAILED" in outcomes
            summary = ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "FAILED", "skipped") if o in outcomes)
            cells.append(f"{summary} ({sum(t for *_, t in cases):.0f} s)")
        print(f"| {title} | " + " | ".join(cells) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
