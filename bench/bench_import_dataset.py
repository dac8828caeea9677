"""Importing 100,000 labelled steps: import_dataset (a ProcessBench-style JSON-lines file: the whole file checked, then
every path through the one intake and every label through label_create, in one transaction) against the floor, the
same rows (roots, trie nodes, rollouts, labels) written by ``bulk_create`` with ids chosen beforehand, into the same
SQLite database. The floor is the least any import of these rows must do: no parsing, no checks, no lookups.

Runs on a scratch SQLite file in a temporary folder (never the project's database). ``BENCH_SHORT=1`` imports 10,000
steps instead; ``BENCH_IMPORT_STEPS`` sets the number. Prints Markdown rows ``| benchmark | figure | floor | ratio |``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT = "--short" in sys.argv or os.environ.get("BENCH_SHORT", "") == "1"
STEPS = int(os.environ.get("BENCH_IMPORT_STEPS", "10000" if SHORT else "100000"))
PATHS_PER_PROBLEM = 5
STEPS_PER_PATH = 10
SHARED_STEPS = 3  # every path of a problem starts with the same 3 steps: the trie merges them


def setup(tmp: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def records() -> list[dict]:
    problems = STEPS // (PATHS_PER_PROBLEM * STEPS_PER_PATH)
    rows = []
    for p in range(problems):
        for k in range(PATHS_PER_PROBLEM):
            steps = [
                f"Step {s + 1}: for problem {p} we compute {s} * {p % 17} = {s * (p % 17)}"
                + ("" if s < SHARED_STEPS else f" along path {k}")
                for s in range(STEPS_PER_PATH)
            ]
            steps[-1] += f" so the answer is \\boxed{{{p + k}}}"
            label = -1 if k == 0 else SHARED_STEPS + k
            rows.append(
                {
                    "id": f"bench-{p}-{k}",
                    "generator": "bench-model",
                    "problem": f"Problem {p}: what is the sum of the first {p % 50} odd numbers?",
                    "steps": steps,
                    "final_answer_correct": k == 0,
                    "label": label,
                }
            )
    return rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_import_") as tmp_name:
        tmp = Path(tmp_name)
        setup(tmp)
        from django.db import connection, transaction

        from forests.dataset_import import dataset_import
        from forests.models import Forest, Node, text_sha256
        from forests.services import forest_delete
        from prmsite.core.step_datasets import processbench_labels
        from rollouts.models import ProcessRewardLabel, Rollout

        rows = records()
        data = tmp / "bench.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        steps = sum(len(row["steps"]) for row in rows)

        def next_id(table: str) -> int:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608 - a fixed table name
                largest = cursor.fetchone()[0]
                cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
                row = cursor.fetchone()
            return max(largest, row[0] if row else 0) + 1

        def floor(run: int) -> float:
            # The rows the import writes, built beforehand with their ids: only the inserts are timed.
            node_id, rollout_id = next_id(Node._meta.db_table), next_id(Rollout._meta.db_table)
            forest_id = next_id(Forest._meta.db_table)
            nodes, rollouts, labels = [], [], []
            ids: dict[tuple, int] = {}
            for row in rows:
                key: tuple = (row["problem"],)
                if key not in ids:
                    ids[key] = node_id
                    nodes.append(
                        Node(id=node_id, forest_id=forest_id, tree_id=node_id, depth=0, text=row["problem"],
                             text_sha256=text_sha256(row["problem"]), reference_answer=None, serialized_item=row)
                    )  # fmt: skip
                    node_id += 1
                root = ids[key]
                for depth, step in enumerate(row["steps"], start=1):
                    parent = ids[key]
                    key = (*key, step)
                    if key not in ids:
                        ids[key] = node_id
                        nodes.append(
                            Node(id=node_id, forest_id=forest_id, tree_id=root, parent_id=parent, depth=depth,
                                 text=step, text_sha256=text_sha256(step), is_leaf=depth == len(row["steps"]))
                        )  # fmt: skip
                        node_id += 1
                rollouts.append(
                    Rollout(id=rollout_id, model=row["generator"], example=row["problem"], reasoning=row["steps"],
                            answer=None, correct=row["final_answer_correct"], worker="floor", forest_id=forest_id,
                            node_id=ids[key], idempotency_key=f"floor-{run}-{rollout_id}")
                )  # fmt: skip
                labels.append(
                    ProcessRewardLabel(rollout_id=rollout_id, prm_version=f"floor-{run}", worker="floor",
                                       prm_output=processbench_labels(row["label"], len(row["steps"])))
                )  # fmt: skip
                rollout_id += 1
            started = time.perf_counter()
            with transaction.atomic():
                forest = Forest.objects.create(id=forest_id, name=f"floor-{run}")
                Node.objects.bulk_create(nodes, batch_size=500)
                Rollout.objects.bulk_create(rollouts, batch_size=500)
                ProcessRewardLabel.objects.bulk_create(labels, batch_size=500)
            elapsed = time.perf_counter() - started
            forest_delete(forest=forest)
            return elapsed

        def imported(suffix: str) -> float:
            started = time.perf_counter()
            result = dataset_import(path=data, fmt="processbench", forest_name_suffix=suffix)
            elapsed = time.perf_counter() - started
            assert result.rollouts == len(rows) and result.labels == len(rows), result
            forest_delete(forest=Forest.objects.get(name=result.forest_name))
            Rollout.objects.filter(worker="import_dataset").delete()
            return elapsed

        floors = [floor(1)]
        runs = [imported("a")]
        floors.append(floor(2))
        base, figure = min(floors), min(runs)
        print(
            f"{steps} steps, {len(rows)} paths; floor runs {', '.join(f'{f:.2f}' for f in floors)} s; "
            f"import {figure:.2f} s"
        )
        print("| benchmark | figure | floor | ratio |")
        print("| --- | --- | --- | --- |")
        print(
            f"| import_dataset {steps:,} steps ({len(rows):,} paths, ProcessBench jsonl) against bulk_create of the "
            f"same rows | {figure:.2f} s | {base:.2f} s | {figure / base:.2f}x |"
        )


if __name__ == "__main__":
    main()
