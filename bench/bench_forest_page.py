"""The forest page's sort, filter and search on a generated forest of 1,000,000 nodes, against reading one page.

The forest is ``bench_metrics``'s (``bench.forest_writer``: trees of 64 rollouts of 10 steps, about 400 nodes a tree,
so 2,500 trees for a million nodes), written with raw inserts, each tree's tally with it as the intake keeps it (its
rollouts, correct ones and nodes; the search index is kept by the database as the nodes go in). Each figure is
the best of ``BENCH_FOREST_PAGE_REPEAT`` runs, each just after its floor, in one process (the page's view called
with a superuser, no HTTP):

- floor: reading one page of the trees table's rows (50 roots with their prompt and item, by id), nothing else;
- figure: the tree list the parameters ask for: its page of ids (with the count of matching trees, for the
  pagination) and their rows; the whole page is given too (it adds what every view of the page reads whatever
  its parameters: the forest's progress counts over all its nodes, the page's per-tree counts, tokens, growth
  summary and the rendering);
- sorted by accuracy, rollouts, nodes; filtered by ground truth, rollouts, accuracy; searched for a rare word (one
  tree), a word of a few trees' prompts, that word with a word of nearly every step, and a word of nearly every step
  alone (the worst case of an inverted index of steps; one row per tree in the trees' words).

Runs on a scratch SQLite file in a temporary folder, and on PostgreSQL too when ``BENCH_FOREST_PAGE_PG`` names a
scratch database URL (its tables are migrated there and the forest deleted afterwards). ``BENCH_FOREST_PAGE_NODES``
sets the size (default 1,000,000). Prints Markdown rows ``| benchmark | figure | floor (same run) | ratio |``.

The disagreement sort is not measured: it reads the whole forest outside the database once per value source and
forest size, then is cached (see docs/forests.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.forest_writer import forest_write  # noqa: E402
from bench.servers import table_print  # noqa: E402

NODES = int(os.environ.get("BENCH_FOREST_PAGE_NODES", "1000000"))
REPEAT = int(os.environ.get("BENCH_FOREST_PAGE_REPEAT", "3"))
CASES = [
    ("sorted by accuracy, descending", {"sort": "-accuracy"}),
    ("sorted by rollouts", {"sort": "rollouts"}),
    ("sorted by nodes, descending", {"sort": "-nodes"}),
    ("filtered: ground truth 1, at least 64 rollouts, accuracy 0.5 to 1", {"truth": "1", "min_rollouts": "64",
                                                                            "min_accuracy": "0.5"}),
    ("search, a rare word (one tree)", {"q": "1234"}),
    ("search, a prompt word of 1 tree in 37 + sort by accuracy", {"q": "district5", "sort": "-accuracy"}),
    ("search, that word and one of nearly every step", {"q": "district5 variant"}),
    ("search, a word of nearly every step", {"q": "variant"}),
]  # fmt: skip


def setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


FOREST = "bench-forest-page"


def generate(database_url: str) -> tuple[int, int]:
    """The forest (``bench.forest_writer``, each tree's tally with it), written with raw inserts (not measured);
    returns (nodes, rollouts)."""
    setup(database_url)
    from django.core.management import call_command
    from django.db import connection, transaction

    from forests.models import Forest

    call_command("migrate", verbosity=0)
    forest = Forest.objects.create(
        name=FOREST, config_name="bench", dataset_split="test", rollout_config={"template": "Item: {statement}"}
    )
    with transaction.atomic():
        total_nodes, total_rollouts = forest_write(
            forest_id=forest.pk, nodes=NODES, template="Item: {statement}", tallies=True
        )
    growth_rows(forest.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return total_nodes, total_rollouts


def growth_rows(forest_id: int) -> None:
    """What the growth bookkeeping keeps beside the tallies: a ``RolloutGrowth`` row per rollout (stage "repeats")
    and the forest's tally (what the forest page's growth summary reads)."""
    from django.db import connection
    from django.db.models import Count, Q

    from forests.models import ForestTally, Node, RolloutGrowth
    from rollouts.models import Rollout

    quote = connection.ops.quote_name
    growth, rollout, node = (quote(m._meta.db_table) for m in (RolloutGrowth, Rollout, Node))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {growth} (rollout_id, forest_id, tree_id, expansion_id, stage, prompt_tokens, "  # noqa: S608
            f"completion_tokens, created_at) SELECT r.id, r.forest_id, n.tree_id, NULL, 'repeats', 0, 0, r.created_at "
            f"FROM {rollout} r JOIN {node} n ON n.id = r.node_id WHERE r.forest_id = %s",
            [forest_id],
        )
    counts = Rollout.objects.filter(forest_id=forest_id).aggregate(
        n=Count("id"), correct=Count("id", filter=Q(correct=True))
    )
    ForestTally.objects.update_or_create(
        forest_id=forest_id, defaults={"rollouts": counts["n"], "correct": counts["correct"]}
    )


def measure(database_url: str) -> dict[str, float]:
    """Every case and its floor, best of REPEAT, in this process."""
    setup(database_url)
    from django.contrib.auth import get_user_model
    from django.test import RequestFactory

    from forests.forest_search import tree_page, tree_query_parse, tree_rows_load
    from forests.models import Forest, Node
    from forests.views import TREES_PER_PAGE, forest_detail

    forest = Forest.objects.get(name=FOREST)
    user = get_user_model().objects.filter(username="bench-page").first()
    user = user or get_user_model().objects.create_superuser("bench-page", "bench@example.invalid", "unused-password")
    factory = RequestFactory()

    def floor() -> None:
        ids = list(Node.objects.filter(forest=forest, depth=0).order_by("id").values_list("id", flat=True)[:50])
        assert len(tree_rows_load(forest=forest, root_ids=ids)) == min(TREES_PER_PAGE, len(ids))

    def tree_list(params: dict) -> None:
        """What the sort, filter or search costs: the page of ids (with the count of matching trees) and its rows."""
        query = tree_query_parse(params, forest=forest)
        _page, ids = tree_page(forest=forest, query=query, page_number="1", per_page=TREES_PER_PAGE)
        tree_rows_load(forest=forest, root_ids=ids)

    def view(params: dict) -> None:
        request = factory.get(f"/forests/{FOREST}/", params)
        request.user = user
        response = forest_detail(request, forest_name=FOREST)
        assert response.status_code == 200, response.content[:300]

    results: dict[str, float] = {}
    for name, params in [("default page", {}), *CASES]:
        best_floor = best_list = best = float("inf")
        for _ in range(REPEAT):
            started = time.perf_counter()
            floor()
            best_floor = min(best_floor, time.perf_counter() - started)
            started = time.perf_counter()
            tree_list(params)
            best_list = min(best_list, time.perf_counter() - started)
            started = time.perf_counter()
            view(params)
            best = min(best, time.perf_counter() - started)
        results[name] = best_list
        results[f"{name} (page)"] = best
        results[f"{name} (floor)"] = best_floor
    return results


def cleanup(database_url: str) -> None:
    setup(database_url)

    from forests.models import Forest
    from forests.services import forest_delete

    forest = Forest.objects.filter(name=FOREST).first()
    if forest is not None:
        forest_delete(forest=forest)


def child(*args: str) -> str:
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{args[0]} failed (exit {proc.returncode})")
    return proc.stdout.strip().splitlines()[-1]


def run(label: str, database_url: str) -> list[str]:
    started = time.perf_counter()
    nodes, rollouts = json.loads(child("--generate", database_url))
    print(f"{label}: generated {nodes:,} nodes, {rollouts:,} rollouts in {time.perf_counter() - started:.0f} s")
    try:
        results = json.loads(child("--measure", database_url))
    finally:
        if label != "SQLite":
            child("--cleanup", database_url)
    rows = []
    for name, _params in [("default page", {}), *CASES]:
        figure, page, base = results[name], results[f"{name} (page)"], results[f"{name} (floor)"]
        rows.append(
            f"| forest page's tree list, {name}, {label}, {nodes:,} nodes | {figure * 1000:.0f} ms "
            f"(the whole page: {page * 1000:.0f} ms) | reading one page of rows (50 trees): {base * 1000:.1f} ms "
            f"| {figure / base:.1f} |"
        )
    return rows


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_forest_page_") as tmp:
        rows += run("SQLite", f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
    if os.environ.get("BENCH_FOREST_PAGE_PG"):
        rows += run("PostgreSQL", os.environ["BENCH_FOREST_PAGE_PG"])
    table_print(("benchmark", "figure", "floor (same run)", "ratio"), rows)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        print(json.dumps(generate(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2])))
    elif len(sys.argv) > 1 and sys.argv[1] == "--cleanup":
        cleanup(sys.argv[2])
        print("{}")
    else:
        main()
