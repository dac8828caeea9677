"""The intake's bulk path (``forests.intake.receive_rollouts_bulk``, for import_dataset): the same rules and messages
as ``receive_rollout``, the same trie, rollouts, leaves, tallies and growth bookkeeping as storing the rollouts one at
a time, all or nothing per batch, and a number of statements that does not grow with the batch."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from forests import intake
from forests.intake import NO_STEPS, receive_rollout, receive_rollouts_bulk
from forests.models import Expansion, ForestTally, Node, RolloutGrowth, TreeTally
from forests.selectors import FOREST_NOT_FOUND
from forests.trie import EXAMPLE_MISMATCH, EXAMPLE_NOT_FOUND, GROUND_TRUTH_MISMATCH, ROOT_NOT_FOUND
from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError
from rollouts.models import Rollout
from rollouts.storage import IDEMPOTENCY_CONFLICT
from tests.factories import make_forest, make_root
from tests.forests.growth.helpers import claim, plan, seed

pytestmark = pytest.mark.django_db

PROMPTS = ["Is the sky green?", "Is grass green?"]


def fields(prompt: int, steps: list[str], prediction: int | None = 1, **more) -> dict:
    return {
        "model": "m",
        "example": PROMPTS[prompt],
        "reasoning": steps,
        "prediction": prediction,
        "ground_truth": 1 - prompt,
        "worker": "w",
        "attributes": {"usage": {"prompt_tokens": 3, "completion_tokens": 5}},
        **more,
    }


# Shared prefixes, a path ending inside another (a leaf that is an inner node), the same path twice with other
# answers (the first keeps its leaf), two trees.
BATCH = [
    fields(0, ["a", "b", "c"], 1),
    fields(0, ["a", "b", "d"], 0),
    fields(0, ["a", "b"], 0),
    fields(0, ["a", "b", "c"], 0),
    fields(1, ["a", "x"], 1),
    fields(0, ["e"], None),
]


def two_forests():
    forests = []
    for name in ("one-by-one", "bulk"):
        forest = make_forest(name)
        make_root(forest, PROMPTS[0], ground_truth=1)
        make_root(forest, PROMPTS[1], ground_truth=0)
        forests.append(forest)
    return forests


def trie_of(forest) -> set:
    """Each node as (its path of texts, is_leaf, prediction, answer, correct)."""
    nodes = {node.pk: node for node in Node.objects.filter(forest=forest)}

    def path(node):
        texts = []
        while node is not None:
            texts.append(node.text)
            node = nodes.get(node.parent_id)
        return tuple(reversed(texts))

    return {(path(n), n.is_leaf, n.prediction, n.answer, n.correct) for n in nodes.values()}


def rollouts_of(forest) -> list:
    return [
        (r.example, tuple(r.reasoning), r.prediction, r.ground_truth, r.answer, r.correct, r.node.text, r.node.depth)
        for r in Rollout.objects.filter(forest=forest).select_related("node").order_by("id")
    ]


def tallies_of(forest) -> tuple:
    trees = sorted(
        (Node.objects.get(pk=t.root_id).text, t.rollouts, t.correct, t.prompt_tokens, t.completion_tokens)
        for t in TreeTally.objects.filter(forest=forest)
    )
    total = ForestTally.objects.get(forest=forest)
    return (
        trees,
        (total.rollouts, total.correct, total.prompt_tokens, total.completion_tokens),
        RolloutGrowth.objects.filter(forest=forest).count(),
    )


def test_a_batch_stores_what_storing_one_at_a_time_stores():
    one, bulk = two_forests()
    for item in BATCH:
        receive_rollout(**item, forest_name=one.name)
    results = receive_rollouts_bulk(BATCH, forest_name=bulk.name)
    assert [created for _, created in results] == [True] * len(BATCH)
    assert [rollout.pk for rollout, _ in results] == list(
        Rollout.objects.filter(forest=bulk).order_by("id").values_list("id", flat=True)
    )
    assert trie_of(bulk) == trie_of(one)
    assert rollouts_of(bulk) == rollouts_of(one)
    assert tallies_of(bulk) == tallies_of(one)
    # and a second batch into the now existing trees: prefixes found in the database, old leaves keep their facts
    more = [fields(0, ["a", "b", "c", "z"], 1), fields(0, ["a", "b"], 1), fields(1, ["q"], 0)]
    for item in more:
        receive_rollout(**item, forest_name=one.name)
    receive_rollouts_bulk(more, forest_name=bulk.name)
    assert trie_of(bulk) == trie_of(one)
    assert rollouts_of(bulk) == rollouts_of(one)
    assert tallies_of(bulk) == tallies_of(one)


def test_a_batch_queues_the_branching_a_tree_becomes_due_for():
    forest, (root,) = seed("bulk-grow", roots=1)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=3)
    claim(forest)  # plans the tree: its repeats
    stage = {"model": "m", "example": root.text, "worker": "w", "ground_truth": 1, "root_id": root.pk}
    receive_rollouts_bulk(
        [
            {**stage, "reasoning": ["Step 1: a. ", "Step 2: b. ", "code: 1"], "prediction": 1},
            {**stage, "reasoning": ["Step 1: a. ", "Step 2: c. ", "code: 0"], "prediction": 0},
        ],
        forest_name=forest.name,
    )
    assert TreeTally.objects.get(root_id=root.pk).rollouts == 2
    assert set(Expansion.objects.filter(stage="mc").values_list("count", flat=True)) == {1, 2}


def test_a_stated_verdict_is_stored_and_nothing_is_graded(monkeypatch):
    _, bulk = two_forests()

    def no_grading(*args, **kwargs):
        raise AssertionError("graded")

    monkeypatch.setattr("forests.trie.grade", no_grading)
    ((rollout, _),) = receive_rollouts_bulk(
        [fields(0, ["a"], 0, correct=True, verdict_reason="the dataset says so")], forest_name=bulk.name
    )
    rollout.refresh_from_db()
    assert rollout.correct is True and rollout.verdict_reason == "the dataset says so"
    assert rollout.node.correct is True


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"reasoning": []}, ApplicationError, lambda f, r: NO_STEPS),
        ({"root_id": 10**9}, NotFoundError, lambda f, r: ROOT_NOT_FOUND.format(forest=f.name, root_id=10**9)),
        ({"example": "Other?"}, ApplicationError, lambda f, r: EXAMPLE_NOT_FOUND.format(forest=f.name)),
        (
            {"example": "Other?", "root_id": "ROOT"},
            ApplicationError,
            lambda f, r: EXAMPLE_MISMATCH.format(root_id=r.pk, forest=f.name),
        ),
        (
            {"ground_truth": 0},
            ApplicationError,
            lambda f, r: GROUND_TRUTH_MISMATCH.format(given=0, expected=1, root_id=r.pk, forest=f.name),
        ),
    ],
)
def test_a_refused_rollout_is_named_by_its_index_and_nothing_of_the_batch_is_written(change, error, message):
    _, bulk = two_forests()
    root = Node.objects.get(forest=bulk, text=PROMPTS[0])
    change = {k: (root.pk if v == "ROOT" else v) for k, v in change.items()}
    nodes = Node.objects.count()
    with pytest.raises(error) as refused:
        receive_rollouts_bulk([fields(1, ["a"]), fields(0, ["b"], **change), fields(0, ["c"])], forest_name=bulk.name)
    assert refused.value.message == message(bulk, root) and refused.value.extra["index"] == 1
    assert not Rollout.objects.exists() and Node.objects.count() == nodes
    assert not RolloutGrowth.objects.exists() and not TreeTally.objects.exists()


def test_an_unknown_forest_is_not_found():
    with pytest.raises(NotFoundError) as refused:
        receive_rollouts_bulk([fields(0, ["a"])], forest_name="nope")
    assert refused.value.message == FOREST_NOT_FOUND.format(name="nope") and refused.value.extra["index"] == 0


def test_idempotency_keys_answer_the_stored_rollout_and_refuse_other_content():
    _, bulk = two_forests()
    first = receive_rollout(**fields(0, ["a"], idempotency_key="k1"), forest_name=bulk.name)
    results = receive_rollouts_bulk(
        [
            fields(0, ["a"], idempotency_key="k1"),
            fields(0, ["b"], idempotency_key="k2"),
            fields(0, ["b"], idempotency_key="k2"),  # the same key twice in the batch: stored once
        ],
        forest_name=bulk.name,
    )
    assert (results[0][0].pk, results[0][1]) == (first.pk, False)
    assert results[1][1] is True and results[2] == (results[1][0], False)
    assert Rollout.objects.count() == 2 and RolloutGrowth.objects.count() == 2
    assert TreeTally.objects.get(root__text=PROMPTS[0]).rollouts == 2
    with pytest.raises(ConflictError) as refused:
        receive_rollouts_bulk(
            [fields(1, ["z"]), fields(0, ["a"], worker="other", idempotency_key="k1")], forest_name=bulk.name
        )
    assert refused.value.message == IDEMPOTENCY_CONFLICT.format(key="k1", rollout_id=first.pk)
    assert refused.value.extra["index"] == 1 and Rollout.objects.count() == 2
    with pytest.raises(ConflictError) as refused:
        receive_rollouts_bulk(
            [fields(0, ["n"], idempotency_key="k3"), fields(0, ["m"], idempotency_key="k3")], forest_name=bulk.name
        )
    assert refused.value.extra["index"] == 1 and not Rollout.objects.filter(idempotency_key="k3").exists()


def test_a_concurrent_writer_makes_the_batch_go_one_at_a_time(monkeypatch):
    one, bulk = two_forests()

    def raced(**kwargs):
        raise IntegrityError("a concurrent writer added the same step")

    monkeypatch.setattr(intake, "forest_rollouts_insert", raced)
    for item in BATCH:
        receive_rollout(**item, forest_name=one.name)
    results = receive_rollouts_bulk(BATCH, forest_name=bulk.name)
    assert all(created for _, created in results)
    assert trie_of(bulk) == trie_of(one) and rollouts_of(bulk) == rollouts_of(one)
    assert tallies_of(bulk) == tallies_of(one)


def test_the_statements_do_not_grow_with_the_batch():
    """Only the INSERTs grow, by one statement per chunk of rows the database takes at once."""
    _, bulk = two_forests()

    def statements(start: int, count: int) -> tuple[int, int]:
        batch = [fields(i % 2, ["s", f"t{i}", f"u{i}"], idempotency_key=f"k{i}") for i in range(start, start + count)]
        with CaptureQueriesContext(connection) as queries:
            receive_rollouts_bulk(batch, forest_name=bulk.name)
        inserts = sum(query["sql"].lstrip().upper().startswith("INSERT") for query in queries)
        return len(queries) - inserts, inserts

    statements(0, 4)  # the trees' and the forest's tallies are created from their rollouts once
    (small, small_inserts), (large, large_inserts) = statements(10, 4), statements(100, 200)
    assert large == small
    assert large_inserts <= small_inserts + (400 + 200 + 200) // 50  # nodes, rollouts, growth rows: in chunks
