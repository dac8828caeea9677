"""Deleting a 1,000,000-node forest with forest_delete (what the admin's delete runs), against the floor: the raw
``bulk_create`` of the same rows into the same SQLite database. For scale, Django's own cascading
``Forest.delete()`` is timed on a smaller forest of the same shape.

Runs on a scratch SQLite file in a temporary folder (never the project's database). ``BENCH_DELETE_NODES`` and
``BENCH_DELETE_CASCADE_NODES`` change the sizes. Prints Markdown rows ``| benchmark | figure | floor | ratio |``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODES = int(os.environ.get("BENCH_DELETE_NODES", "1000000"))
CASCADE_NODES = int(os.environ.get("BENCH_DELETE_CASCADE_NODES", "20000"))
TREE_SIZE = 100  # nodes per tree: a root and 99 steps, three children per node (a ternary heap)
CHUNK = 50_000
ROLLOUT_EVERY = 10  # one rollout per 10 leaves points into the forest and must survive, detached


def setup(tmp: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def grow(name: str, nodes: int) -> tuple[object, float]:
    """A forest of ``nodes`` nodes in trees of TREE_SIZE; returns it and the time spent in bulk_create alone."""
    from django.db import transaction
    from django.db.models import Max

    from forests.models import Forest, Node, text_sha256
    from rollouts.models import Rollout

    forest = Forest.objects.create(name=name)
    next_id = (Node.objects.aggregate(m=Max("id"))["m"] or 0) + 1
    inserting = 0.0
    leaves: list[int] = []
    batch: list[Node] = []

    def flush() -> None:
        nonlocal inserting
        started = time.perf_counter()
        with transaction.atomic():
            Node.objects.bulk_create(batch, batch_size=2000)
        inserting += time.perf_counter() - started
        batch.clear()

    for n in range(nodes):
        tree_index, i = divmod(n, TREE_SIZE)
        root_id = next_id + tree_index * TREE_SIZE
        node_id = root_id + i
        parent = None if i == 0 else root_id + (i - 1) // 3
        depth = 0
        j = i
        while j:
            j = (j - 1) // 3
            depth += 1
        is_leaf = 3 * i + 1 >= TREE_SIZE
        text = f"item {tree_index}" if i == 0 else f"step {i} of tree {tree_index}"
        batch.append(
            Node(
                id=node_id,
                forest=forest,
                tree_id=root_id,
                parent_id=parent,
                depth=depth,
                text=text,
                text_sha256=text_sha256(text),
                is_leaf=is_leaf,
                prediction=(n % 2) if is_leaf else None,
                ground_truth=(tree_index % 2) if i == 0 else None,
            )
        )
        if is_leaf and n % ROLLOUT_EVERY == 0:
            leaves.append(node_id)
        if len(batch) >= CHUNK:
            flush()
    if batch:
        flush()
    Rollout.objects.bulk_create(
        [
            Rollout(
                model="m",
                example="e",
                reasoning=["s"],
                prediction=0,
                ground_truth=0,
                worker="w",
                forest=forest,
                node_id=leaf,
            )
            for leaf in leaves
        ],
        batch_size=2000,
    )
    return forest, inserting


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_delete_") as tmp_name:
        setup(Path(tmp_name))
        from forests.models import Forest, Node
        from forests.services import forest_delete
        from rollouts.models import Rollout

        keeper, _ = grow("keeper", 10 * TREE_SIZE)  # another forest that must be left alone
        forest, insert_s = grow("big", NODES)
        rollouts = Rollout.objects.filter(forest=forest).count()
        started = time.perf_counter()
        result = forest_delete(forest=forest)
        delete_s = time.perf_counter() - started
        assert result.nodes == NODES
        assert result.rollouts_detached == rollouts
        assert Node.objects.filter(forest=keeper).count() == 10 * TREE_SIZE
        assert Rollout.objects.filter(forest__isnull=True, node__isnull=True).count() == rollouts

        small, small_insert_s = grow("small", CASCADE_NODES)
        started = time.perf_counter()
        result = forest_delete(forest=small)
        small_delete_s = time.perf_counter() - started
        cascade, cascade_insert_s = grow("cascade", CASCADE_NODES)
        started = time.perf_counter()
        Forest.objects.get(pk=cascade.pk).delete()  # Django's collector: nodes fetched and deleted from Python
        cascade_s = time.perf_counter() - started

        print(f"{NODES:,} nodes, {rollouts:,} rollouts detached; insert {insert_s:.2f} s, delete {delete_s:.2f} s")
        print("| benchmark | figure | floor | ratio |")
        print("| --- | --- | --- | --- |")
        print(
            f"| forest_delete, {NODES:,}-node forest ({rollouts:,} rollouts detached) "
            f"| {delete_s:.2f} s | {insert_s:.2f} s (bulk_create of the same rows) | {delete_s / insert_s:.2f}x |"
        )
        print(
            f"| forest_delete, {CASCADE_NODES:,}-node forest | {small_delete_s:.2f} s "
            f"| {small_insert_s:.2f} s (bulk_create) | {small_delete_s / small_insert_s:.2f}x |"
        )
        print(
            f"| Django's cascading Forest.delete(), {CASCADE_NODES:,}-node forest (for comparison) | {cascade_s:.2f} s "
            f"| {cascade_insert_s:.2f} s (bulk_create) | {cascade_s / cascade_insert_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
