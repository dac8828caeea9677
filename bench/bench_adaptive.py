"""Benchmark of the adaptive growth policy (issue 23).

    .venv/bin/python bench/bench_adaptive.py      # or: python bench/run.py bench_adaptive

1. Generations and tokens for the same label agreement: a simulated forest of ``BENCH_ADAPTIVE_TREES`` trees (default
   1,000) with known step success probabilities (below), every step of every base path given ``PER_STEP`` (16)
   completions; ``prmsite.core.mc_budget`` replays it under ``mc`` and ``adaptive`` (hard labels) at budgets 1 to 16.
   For each agreement measure (first-error agreement, step accuracy) and target (95%), the figure is the generations
   (and tokens) of the cheapest adaptive budget that reaches it; the floor, those of the cheapest mc budget; the
   ratio, mc / adaptive (the goal: at least 2).
2. Claim latency under the adaptive policy against forest size: the median time of one claim (service call, limit 1)
   of a forest grown with ``policy=adaptive`` whose every tree has its adaptive expansions queued, in a forest of
   ``BENCH_BIG_NODES`` nodes (default 1,000,000: 100,000 trees of 10 nodes) as a ratio to the same in a forest of 1,000
   nodes, ``BENCH_LATENCY_CLAIMS`` claims each (default 400, alternating between the forests); SQLite and
   PostgreSQL (database ``prmsite_adaptive_bench`` on ``BENCH_PG_URL``, dropped at the end; ``BENCH_ADAPTIVE_PG=0``
   or ``BENCH_ADAPTIVE_SQLITE=0`` skips one). ``BENCH_SHORT=1``: 100,000 nodes.

The simulated trees: a question is solved with probability ``q`` (uniform in 0.1..0.9); a tree has 4 base rollouts of
``L`` steps (4..8); a wrong one has its first error at a uniform step ``e``; a completion from step ``d`` is right
with probability ``q + (1 - q) d / L`` before ``e`` and never from ``e`` on (from the root: ``q``).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.servers import RATIO_HEADER, PostgresUnavailable, manage, postgres_database, table_print  # noqa: E402
from prmsite.core.mc_budget import (  # noqa: E402
    ReplayPolicy,
    ReplayRollout,
    ReplayTree,
    replay_forest,
)

TREES = int(os.environ.get("BENCH_ADAPTIVE_TREES", "1000"))
SHORT = os.environ.get("BENCH_SHORT") == "1"
BIG_NODES = int(os.environ.get("BENCH_BIG_NODES", "100000" if SHORT else "1000000"))
LATENCY_CLAIMS = int(os.environ.get("BENCH_LATENCY_CLAIMS", "400"))
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")
PG_NAME = "prmsite_adaptive_bench"
PER_STEP = 16
NUM_REPEATS = 4
BUDGETS = (1, 2, 3, 4, 6, 8, 12, 16)
TARGET = 0.95
TOKENS_PER_STEP = 50


def simulated_tree(rng: random.Random, root_id: int, ids: list[int]) -> ReplayTree:
    q = rng.uniform(0.1, 0.9)
    steps = rng.randint(4, 8)
    nodes: list[tuple[int, int | None, int]] = [(root_id, None, 0)]
    rollouts: list[ReplayRollout] = []

    def new_id() -> int:
        ids[0] += 1
        return ids[0]

    def rollout(leaf: int, correct: bool, depth: int) -> None:
        # prompt: the question and the prefix; completion: the remaining steps
        rollouts.append(ReplayRollout(new_id(), leaf, correct, TOKENS_PER_STEP * (2 + depth + steps - depth)))

    served: list[tuple[int, float, int]] = [(root_id, q, 0)]
    for _ in range(NUM_REPEATS):
        correct = rng.random() < q
        error = steps + 1 if correct else rng.randint(1, steps)
        parent = root_id
        for depth in range(1, steps + 1):
            node = new_id()
            nodes.append((node, parent, depth))
            if depth < steps:
                served.append((node, 0.0 if depth >= error else q + (1 - q) * depth / steps, depth))
            parent = node
        rollout(parent, correct, 0)
    for node, p, depth in served:
        for _ in range(PER_STEP):
            leaf = new_id()
            nodes.append((leaf, node, depth + 1))
            rollout(leaf, rng.random() < p, depth)
    return ReplayTree(root_id=root_id, nodes=nodes, rollouts=rollouts)


def labels_rows() -> list[str]:
    rng = random.Random(2026)
    ids = [10**9]
    trees = [simulated_tree(rng, root_id, ids) for root_id in range(TREES)]
    policies = [ReplayPolicy(name, "hard", budget) for name in ("mc", "adaptive") for budget in BUDGETS]
    started = time.perf_counter()
    results = replay_forest(trees, policies, num_repeats=NUM_REPEATS)
    seconds = time.perf_counter() - started
    print(f"replayed {len(policies)} policy budgets on {TREES} simulated trees in {seconds:.0f} s")
    for r in results:
        print(
            f"  {r.name:14} budget {r.budget:2}: {r.generations:7} generations, {r.tokens:10} tokens, step accuracy "
            f"{r.step_accuracy:.3f}, first-error agreement {r.first_error_agreement:.3f}, F1 {r.processbench_f1:.3f}"
        )
    rows = []
    for metric, label in (("first_error_agreement", "first-error agreement"), ("step_accuracy", "step accuracy")):
        reaching = {}
        for name in ("mc hard", "adaptive hard"):
            candidates = [r for r in results if r.name == name and getattr(r, metric) >= TARGET]
            reaching[name] = min(candidates, key=lambda r: r.generations, default=None)
        mc, adaptive = reaching["mc hard"], reaching["adaptive hard"]
        if mc is None or adaptive is None:
            rows.append(f"| adaptive vs mc, {label} >= {TARGET:.0%} | not reached | | |")
            continue
        rows.append(
            f"| adaptive vs mc (hard), {label} >= {TARGET:.0%}, {TREES:,} simulated trees | adaptive budget "
            f"{adaptive.budget}: {adaptive.generations:,} generations, {adaptive.tokens:,} tokens "
            f"({getattr(adaptive, metric):.3f}) | mc budget {mc.budget}: {mc.generations:,} generations, "
            f"{mc.tokens:,} tokens ({getattr(mc, metric):.3f}) | {mc.generations / adaptive.generations:.2f} "
            f"(tokens {mc.tokens / adaptive.tokens:.2f}) |"
        )
    return rows


def _django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    django.setup()


def setup() -> None:
    """Two chain forests (``bench_expansions.seed_forest``) grown with ``policy=adaptive``: every tree planned and
    branched, five adaptive expansions queued per tree (a round of 2 from each of its steps 1 to 5), as after the
    repeats."""
    _django()
    from django.utils import timezone

    from bench.bench_expansions import TREE_NODES, seed_forest
    from forests.growth.plan import growth_plan_set
    from forests.models import Expansion, GrowthPlan, Node, TreeTally

    for name, nodes in (("small", 1000), ("big", BIG_NODES)):
        seed_forest(name, nodes // TREE_NODES)
        plan, _ = growth_plan_set(
            forest_name=name, given={"policy": "adaptive", "num_repeats": 1}, replace=True, now=timezone.now()
        )
        forest_id = plan.forest_id
        roots = list(Node.objects.filter(forest_id=forest_id, depth=0).order_by("id").values_list("id", flat=True))
        now = timezone.now()
        chains: dict[int, list[int]] = {root: [root] for root in roots}
        for node_id, tree_id in (
            Node.objects.filter(forest_id=forest_id, depth__gte=1, depth__lte=5)
            .order_by("depth")
            .values_list("id", "tree_id")
        ):
            chains[tree_id].append(node_id)
        for start in range(0, len(roots), 20_000):
            batch = roots[start : start + 20_000]
            TreeTally.objects.bulk_create(
                [TreeTally(root_id=r, forest_id=forest_id, rollouts=1, planned_version=plan.version) for r in batch]
            )
            TreeTally.objects.filter(root_id__in=batch).update(branched_version=plan.version)
            Expansion.objects.bulk_create(
                [
                    Expansion(
                        forest_id=forest_id,
                        tree_id=r,
                        node_id=chains[r][depth],
                        path=chains[r][: depth + 1],
                        stage="adaptive",
                        count=2,
                        plan_version=plan.version,
                        available_at=now,
                    )
                    for r in batch
                    for depth in range(1, 6)
                ],
                batch_size=5000,
            )
        GrowthPlan.objects.filter(pk=plan.pk).update(root_cursor=roots[-1])
    print(json.dumps({"nodes": Node.objects.count()}))


def latency() -> None:
    _django()
    from django.utils import timezone

    from forests.growth.queue import expansion_claim
    from forests.models import Node

    # Claims alternate between the two forests, so that a load that changes on a shared machine weighs on both alike.
    times: dict[str, list[float]] = {"small": [], "big": []}
    for _ in range(LATENCY_CLAIMS):
        for name in ("small", "big"):
            started = time.perf_counter()
            got = expansion_claim(forest_name=name, claimed_by="bench", now=timezone.now(), limit=1).expansions
            times[name].append(time.perf_counter() - started)
            if not got or got[0].stage != "adaptive":
                raise RuntimeError(f"claim in {name} handed out {got!r}, not an adaptive expansion")
    result = {
        name: {
            "nodes": Node.objects.filter(forest__name=name).count(),
            "median_ms": statistics.median(times[name]) * 1000,
            "p90_ms": statistics.quantiles(times[name], n=10)[-1] * 1000,
        }
        for name in ("small", "big")
    }
    print(json.dumps(result))


def child(env: dict[str, str], flag: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, flag], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def latency_row(label: str, database_url: str, env_base: dict[str, str]) -> str:
    env = {**env_base, "DATABASE_URL": database_url}
    manage(env, "migrate", "--noinput")
    child(env, "--setup")
    sizes = child(env, "--latency")
    small, big = sizes["small"], sizes["big"]
    return (
        f"| claim latency, policy adaptive, {label}, forest of {big['nodes']:,} nodes (median of {LATENCY_CLAIMS}) | "
        f"{big['median_ms']:.2f} ms (p90 {big['p90_ms']:.2f} ms) | forest of {small['nodes']:,} nodes: "
        f"{small['median_ms']:.2f} ms (p90 {small['p90_ms']:.2f} ms) | {big['median_ms'] / small['median_ms']:.2f} |"
    )


def main() -> int:
    env_base = {**os.environ, "DJANGO_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0", "PYTHONPATH": str(ROOT)}
    rows = labels_rows()
    if os.environ.get("BENCH_ADAPTIVE_SQLITE", "1") == "1":
        with tempfile.TemporaryDirectory(prefix="prmsite-bench-adaptive-") as folder:
            rows.append(latency_row("SQLite", f"sqlite:///{Path(folder) / 'bench.sqlite3'}", env_base))
    if os.environ.get("BENCH_ADAPTIVE_PG", "1") == "1":
        try:
            with postgres_database(PG_BASE, PG_NAME) as url:
                rows.append(latency_row("PostgreSQL", url, env_base))
        except PostgresUnavailable as exc:  # no PostgreSQL here: say so rather than fail the other figures
            rows.append(f"| PostgreSQL | skipped: {exc.reason} | | |")
    table_print(RATIO_HEADER, rows)
    return 0


if __name__ == "__main__":
    if "--setup" in sys.argv:
        setup()
    elif "--latency" in sys.argv:
        latency()
    else:
        raise SystemExit(main())
