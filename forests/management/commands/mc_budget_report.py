"""python manage.py mc_budget_report --forest_name F [--budgets 1,2,4,8] [--precisions 0.3,0.5,0.7] [--output DIR]"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from forests.growth.selectors import growth_plan_get
from forests.models import Node, RolloutGrowth
from forests.selectors import forest_get
from prmsite.core.errors import ApplicationError
from prmsite.core.mc_budget import (
    COLUMNS,
    DEFAULT_BUDGETS,
    DEFAULT_PRECISIONS,
    ReplayRollout,
    ReplayTree,
    budget_plot,
    policies_series,
    replay_forest,
    results_table,
)
from prmsite.core.progress import Bars
from rollouts.models import Rollout

TREES_PER_QUERY = 500
BAD_LIST = "--{flag} must be a comma-separated list of {what}, got {value!r}"


def _numbers(value: str, *, flag: str, kind: type, what: str, low: float, high: float) -> list:
    try:
        numbers = [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CommandError(BAD_LIST.format(flag=flag, what=what, value=value)) from None
    if not numbers or not all(low <= n <= high for n in numbers):
        raise CommandError(BAD_LIST.format(flag=flag, what=what, value=value))
    return sorted(set(numbers))


def forest_trees(*, forest_id: int, root_ids: list[int]) -> Iterator[ReplayTree]:
    """The forest's trees for a replay, ``TREES_PER_QUERY`` trees a query (nodes, rollouts, their tokens)."""
    for start in range(0, len(root_ids), TREES_PER_QUERY):
        chunk = root_ids[start : start + TREES_PER_QUERY]
        nodes: dict[int, list[tuple[int, int | None, int]]] = {root_id: [] for root_id in chunk}
        rows = Node.objects.filter(Q(tree_id__in=chunk) | Q(pk__in=chunk), forest_id=forest_id).order_by()
        for node_id, parent_id, depth, tree_id in rows.values_list("id", "parent_id", "depth", "tree_id"):
            nodes[tree_id or node_id].append((node_id, parent_id, depth))
        tokens = dict(
            (rollout_id, prompt + completion)
            for rollout_id, prompt, completion in RolloutGrowth.objects.filter(tree_id__in=chunk).values_list(
                "rollout_id", "prompt_tokens", "completion_tokens"
            )
        )
        rollouts: dict[int, list[ReplayRollout]] = {root_id: [] for root_id in chunk}
        for rollout_id, leaf_id, correct, tree_id in (
            Rollout.objects.filter(node__tree_id__in=chunk)
            .order_by("id")
            .values_list("id", "node_id", "correct", "node__tree_id")
        ):
            rollouts[tree_id].append(ReplayRollout(rollout_id, leaf_id, bool(correct), tokens.get(rollout_id, 0)))
        for root_id in chunk:
            yield ReplayTree(root_id=root_id, nodes=nodes[root_id], rollouts=rollouts[root_id])


class Command(BaseCommand):
    help = (
        "Replay the completions a forest already has in the order each growth policy would have asked for them (mc, "
        "omega, adaptive hard and soft), and report, per budget, the generations and tokens spent and how well the "
        "labels agree with the whole forest's (step accuracy, first-error agreement, ProcessBench F1). See "
        "docs/mc-budget.md."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True)
        parser.add_argument(
            "--budgets",
            default=",".join(str(b) for b in DEFAULT_BUDGETS),
            help="completions_per_step (mc, omega) and max_completions_per_step (adaptive) to replay "
            "(default 1,2,4,8).",
        )
        parser.add_argument(
            "--precisions",
            default=",".join(str(p) for p in DEFAULT_PRECISIONS),
            help="Precisions of the soft adaptive policy to replay (default 0.3,0.5,0.7).",
        )
        parser.add_argument(
            "--num_repeats",
            type=int,
            default=None,
            help="Base rollouts per tree (default: the forest's growth plan's, else 4).",
        )
        parser.add_argument("--round_size", type=int, default=2, help="Completions per round of adaptive (default 2).")
        parser.add_argument("--output", default=None, help="Directory for report.csv, report.json, report.png/.svg.")

    def handle(self, *args, forest_name: str, output: str | None, **options) -> None:
        budgets = _numbers(options["budgets"], flag="budgets", kind=int, what="integers >= 1", low=1, high=10**6)
        precisions = _numbers(
            options["precisions"], flag="precisions", kind=float, what="numbers in (0, 1]", low=1e-6, high=1.0
        )
        if options["round_size"] < 1:
            raise CommandError("--round_size must be at least 1")
        try:
            forest = forest_get(name=forest_name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        num_repeats = options["num_repeats"]
        if num_repeats is None:
            plan = growth_plan_get(forest=forest)
            num_repeats = int((plan.options if plan else {}).get("num_repeats") or 4)
        if num_repeats < 1:
            raise CommandError("--num_repeats must be at least 1")
        policies = policies_series(budgets, precisions, round_size=options["round_size"])
        root_ids = list(Node.objects.filter(forest=forest, depth=0).order_by("id").values_list("id", flat=True))
        bars = Bars(self.stderr)
        update = bars.callback("replaying", "tree", total=len(root_ids))
        done = 0

        def on_tree() -> None:
            nonlocal done
            done += 1
            update(done)

        try:
            results = replay_forest(
                forest_trees(forest_id=forest.pk, root_ids=root_ids), policies, num_repeats=num_repeats, on_tree=on_tree
            )
        finally:
            bars.close()
        self.stdout.write(results_table(results))
        if output:
            directory = Path(output)
            directory.mkdir(parents=True, exist_ok=True)
            with (directory / "report.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["policy", "estimate", "precision", *COLUMNS])
                for r in results:
                    writer.writerow([r.policy, r.estimate, r.precision, *(getattr(r, c) for c in COLUMNS)])
            report = {
                "forest_name": forest.name,
                "num_repeats": num_repeats,
                "budgets": budgets,
                "precisions": precisions,
                "results": [r.as_dict() for r in results],
            }
            (directory / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            title = f"{forest.name}: labels against budget ({len(root_ids)} trees)"
            for fmt in ("png", "svg"):
                (directory / f"report.{fmt}").write_bytes(budget_plot(results, fmt=fmt, title=title))
        trees = results[0].trees if results else 0
        where = f"; report.csv, report.json, report.png, report.svg in {output}" if output else ""
        self.stderr.write(
            self.style.SUCCESS(
                f"Replayed {len(policies)} policy budgets on {trees} trees of forest {forest.name} "
                f"(of {len(root_ids)}; the others have no rollout from the root){where}"
            )
        )
