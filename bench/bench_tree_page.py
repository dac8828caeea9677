"""The tree page of a 2,000-node tree with two value sources laid over it, against the floor: reading its rows.

The tree: one root and rollouts of 12 steps, branching like sampled reasoning (the first steps vary most), until it
holds 2,000 nodes (``FOREST_TREE_MAX_NODES``, all laid out); every rollout carries a ``prm:bench`` label (a score per
step). Measured in one process after a warm-up request (Django set up, templates and caches loaded):

- floor: the queries the page cannot avoid, run through the same selectors (the tree's rows with their texts, its
  rollouts, the source's labels), doing nothing with them;
- GET the tree page ``?source=exact&compare=prm:bench`` through Django's test client, logged in (ratio to the floor);
- the same with the exact values alone.

Runs on a scratch SQLite file in a temporary folder (never the project's database), offline. ``BENCH_TREE_NODES``
changes the size, ``BENCH_TREE_REPEAT`` the number of runs, each a page and a floor; the best of each is kept.
Prints Markdown rows ``| benchmark | figure | floor (same run) | ratio |``.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODES = int(os.environ.get("BENCH_TREE_NODES", "2000"))
REPEAT = int(os.environ.get("BENCH_TREE_REPEAT", "5"))
STEPS = 12
FOREST = "bench-tree"
VERSION = "bench"


def setup(database: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def generate() -> tuple[object, object, int]:
    """The forest, its root and its number of rollouts (setup, not measured)."""
    from django.core.management import call_command
    from django.db import transaction

    from forests.models import Forest, Node, text_sha256
    from forests.trie import forest_rollout_insert
    from rollouts.models import ProcessRewardLabel, Rollout

    call_command("migrate", verbosity=0)
    forest = Forest.objects.create(name=FOREST, config_name="bench", dataset_split="test")
    prompt = "Is the statement about the district's **parks** true? Reason step by step, then answer (code: 0/1)."
    rng = random.Random(20261207)
    rollouts = 0
    with transaction.atomic():
        root = Node.objects.create(
            forest=forest, depth=0, text=prompt, text_sha256=text_sha256(prompt), ground_truth=1,
            serialized_item={"statement": prompt, "label": 1},
        )  # fmt: skip
        root.tree = root
        root.save(update_fields=["tree"])
        while Node.objects.filter(tree_id=root.pk).count() < NODES:
            steps = []
            for step in range(STEPS):
                choice = rng.randrange(4 if step < 4 else 2) if rng.random() < 0.6 else 0
                text = (
                    f"Step {step + 1}, variant {choice}: the claim about *district {choice}* is weighed, $x_{step}$. "
                )
                steps.append(text)
            prediction = rng.randrange(2)
            leaf = forest_rollout_insert(
                forest_name=forest.name, example=prompt, steps=steps, prediction=prediction, ground_truth=1
            )
            rollout = Rollout.objects.create(
                model="bench-model", example=prompt, reasoning=steps, prediction=prediction, ground_truth=1,
                worker="bench", forest=forest, node=leaf, answer=str(prediction), correct=prediction == 1,
            )  # fmt: skip
            ProcessRewardLabel.objects.create(
                rollout=rollout, prm_version=VERSION, worker="bench", prm_output=[rng.random() for _ in steps]
            )
            rollouts += 1
    return forest, root, rollouts


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-tree-") as folder:
        setup(Path(folder) / "bench.sqlite3")
        from django.conf import settings
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.urls import reverse

        from forests.models import Node
        from forests.selectors import tree_rollouts, tree_rows
        from forests.tree_sources import tree_source_read

        forest, root, rollouts = generate()
        nodes = Node.objects.filter(tree_id=root.pk).count()
        settings.ALLOWED_HOSTS = ["testserver", *settings.ALLOWED_HOSTS]
        settings.FOREST_TREE_MAX_NODES = max(settings.FOREST_TREE_MAX_NODES, nodes)  # the last rollout may overshoot
        user = get_user_model().objects.create_superuser("bench", password=None)
        client = Client()
        client.force_login(user)
        url = reverse("forests:tree", args=[forest.name, root.pk])

        def floor() -> float:
            started = time.perf_counter()
            tree_rows(root=root, text_chars=settings.FOREST_TREE_STEP_CHARS)
            tree_rollouts(root=root)
            tree_source_read(forest=forest, root=root, name=f"prm:{VERSION}")
            return time.perf_counter() - started

        def get(params: dict) -> float:
            started = time.perf_counter()
            response = client.get(url, params)
            seconds = time.perf_counter() - started
            assert response.status_code == 200, response.status_code
            assert response.content.count(b'<div class="step') == nodes, "the page did not lay out every node"
            return seconds

        two = {"source": "exact", "compare": f"prm:{VERSION}"}
        get(two)  # warm-up: templates, the markdown cache
        if os.environ.get("BENCH_TREE_PROFILE"):
            import cProfile

            cProfile.runctx("get(two)", globals(), locals(), sort="cumulative")
            return
        results = []
        for params, title in ((two, "exact and prm:bench side by side"), ({}, "exact values alone")):
            pairs = [(get(params), floor()) for _ in range(REPEAT)]
            results.append((title, min(page for page, _ in pairs), min(base for _, base in pairs)))
        for title, page, base in results:
            print(
                f"| tree page, {nodes:,} nodes, {rollouts} rollouts, {title} | {page * 1000:.0f} ms "
                f"| reading its rows (nodes with text, rollouts, labels): {base * 1000:.0f} ms | {page / base:.1f} |"
            )


if __name__ == "__main__":
    main()
