"""Each tree's node count in its tally (``TreeTally.nodes``), which the forest page sorts and filters by: right after
every way nodes come in (the intake one at a time, in bulk, import_dataset, growth answering expansions), counted
once for a tally that has none (made by planning or before migration 0007), counted from the tree for a tree without
a tally (a seeded tree), and gone with its forest."""

from __future__ import annotations

import importlib
import json

import pytest
from django.core.management import call_command
from django.db import connection

from forests.forest_search import forest_tree_query, tree_query_parse
from forests.intake import receive_rollout, receive_rollouts_bulk
from forests.models import Forest, Node, TreeTally
from forests.services import forest_delete
from tests.factories import make_forest, make_root
from tests.forests.growth.helpers import answer, claim, plan, seed

pytestmark = pytest.mark.django_db

PROMPTS = ["Is the sky green?", "Is grass green?"]


def post(prompt: int, steps: list[str], prediction: int = 1, *, forest: Forest) -> None:
    receive_rollout(
        model="m",
        example=PROMPTS[prompt],
        reasoning=steps,
        worker="w",
        prediction=prediction,
        ground_truth=1 - prompt,
        forest_name=forest.name,
    )


def two_trees(name: str = "tallied") -> tuple[Forest, list[Node]]:
    forest = make_forest(name)
    return forest, [make_root(forest, PROMPTS[i], ground_truth=1 - i) for i in range(2)]


def tally_nodes(forest: Forest) -> dict[int, int | None]:
    return dict(TreeTally.objects.filter(forest=forest).values_list("root_id", "nodes"))


def true_nodes(forest: Forest) -> dict[int, int]:
    counts: dict[int, int] = {}
    for tree_id in Node.objects.filter(forest=forest).values_list("tree_id", flat=True):
        counts[tree_id] = counts.get(tree_id, 0) + 1
    return counts


def sorted_by_nodes(forest: Forest, **params: str) -> list[int]:
    return list(forest_tree_query(forest=forest, query=tree_query_parse({"sort": "-nodes", **params}, forest=forest)))


def test_the_intake_counts_the_nodes_each_path_creates():
    forest, roots = two_trees()
    post(0, ["a", "b", "c"], forest=forest)
    assert tally_nodes(forest) == {roots[0].pk: 4}
    post(0, ["a", "b", "c"], forest=forest)  # the same path: no node
    post(0, ["a", "b", "d", "e"], forest=forest)  # a fork: two nodes
    post(0, ["a"], forest=forest)  # ends inside a path: no node
    post(1, ["x"], forest=forest)
    assert tally_nodes(forest) == {roots[0].pk: 6, roots[1].pk: 2} == true_nodes(forest)


def test_the_bulk_intake_counts_the_nodes_of_each_tree():
    forest, roots = two_trees()
    post(0, ["a"], forest=forest)  # a tally before the batch
    batch = [
        {"model": "m", "example": PROMPTS[p], "reasoning": s, "prediction": 1, "ground_truth": 1 - p, "worker": "w"}
        for p, s in [(0, ["a", "b"]), (0, ["a", "b", "c"]), (0, ["a", "z"]), (1, ["x", "y"]), (1, ["x", "y"])]
    ]
    receive_rollouts_bulk(batch, forest_name=forest.name)
    assert tally_nodes(forest) == {roots[0].pk: 5, roots[1].pk: 3} == true_nodes(forest)


def test_growth_counts_the_nodes_of_planned_trees_and_of_the_answers():
    forest, roots = seed("grown-nodes", roots=2)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=2)
    claimed = claim(forest).expansions  # planning made every tree's tally, its nodes counted
    assert tally_nodes(forest) == {roots[0].pk: 1, roots[1].pk: 1}
    answered = 0
    while claimed and answered < 40:
        for expansion in claimed:
            for _ in range(expansion.count):
                answer(forest, expansion, [f"Step one {answered}. ", f"Step two {answered % 3} (code: 1)"], 1)
                answered += 1
        claimed = claim(forest).expansions
    assert answered > 4
    assert tally_nodes(forest) == true_nodes(forest)


@pytest.mark.django_db(transaction=True)
def test_import_dataset_counts_the_nodes_of_each_tree(tmp_path):
    items = [
        {"id": "0", "problem": "What is 2+3?", "steps": ["2+3 is 5.", "So \\boxed{5}."], "label": -1,
         "final_answer_correct": True},
        {"id": "1", "problem": "What is 2+3?", "steps": ["2+3 is 5.", "Then \\boxed{5}."], "label": -1,
         "final_answer_correct": True},
        {"id": "2", "problem": "What is 4*4?", "steps": ["4*4 is 16.", "So \\boxed{16}."], "label": -1,
         "final_answer_correct": True},
    ]  # fmt: skip
    path = tmp_path / "pb.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    call_command("import_dataset", "--format", "processbench", "--input", str(path), stdout=_Sink(), stderr=_Sink())
    forest = Forest.objects.get()
    assert sorted(tally_nodes(forest).values()) == [3, 4]
    assert tally_nodes(forest) == true_nodes(forest)


class _Sink:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def test_a_tally_without_a_node_count_is_counted_at_the_next_arrival():
    forest, roots = two_trees()
    post(0, ["a", "b"], forest=forest)
    TreeTally.objects.filter(forest=forest).update(nodes=None)  # as before migration 0007
    post(0, ["a", "c"], forest=forest)
    assert tally_nodes(forest) == {roots[0].pk: 4}


def test_seeded_trees_without_a_tally_are_counted_and_sorted():
    forest, roots = two_trees()
    make_root(forest, "A third tree?", ground_truth=0)
    post(1, ["x", "y"], forest=forest)
    TreeTally.objects.filter(forest=forest).delete()  # a forest grown before tallies
    post(0, ["a"], forest=forest)
    assert roots[1].pk not in tally_nodes(forest)
    order = sorted_by_nodes(forest)
    assert order[:2] == [roots[1].pk, roots[0].pk]  # 3 nodes (counted), then 2 (from the tally)
    assert sorted_by_nodes(forest, min_nodes="2", max_nodes="2") == [roots[0].pk]


def test_the_sort_and_the_filter_read_the_tally():
    """The page reads the tally, not the nodes: a tally that says otherwise decides the order."""
    forest, roots = two_trees()
    post(0, ["a", "b", "c"], forest=forest)
    post(1, ["x"], forest=forest)
    assert sorted_by_nodes(forest) == [roots[0].pk, roots[1].pk]
    TreeTally.objects.filter(root=roots[1]).update(nodes=100)
    assert sorted_by_nodes(forest) == [roots[1].pk, roots[0].pk]
    assert sorted_by_nodes(forest, min_nodes="50") == [roots[1].pk]


def test_the_tallies_go_with_their_forest():
    forest, _roots = two_trees()
    post(0, ["a"], forest=forest)
    forest_delete(forest=forest)
    assert not TreeTally.objects.exists()


def test_the_migration_counts_the_nodes_of_existing_tallies():
    forest, roots = two_trees()
    post(0, ["a", "b"], forest=forest)
    post(1, ["x"], forest=forest)
    TreeTally.objects.update(nodes=None)
    migration = importlib.import_module("forests.migrations.0007_tree_tally_nodes")
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL)
    assert tally_nodes(forest) == {roots[0].pk: 3, roots[1].pk: 2}
