"""A rollout becomes a root-to-leaf path of its forest; shared prefixes are stored once, even under concurrency."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from forests.models import Node
from forests.selectors import FOREST_NOT_FOUND
from forests.trie import (
    EXAMPLE_AMBIGUOUS,
    EXAMPLE_MISMATCH,
    EXAMPLE_NOT_FOUND,
    GROUND_TRUTH_MISMATCH,
    ROOT_NOT_FOUND,
    forest_rollout_insert,
)
from prmsite.core.errors import ApplicationError, NotFoundError
from tests.factories import make_forest, make_root

PROMPT = "Is the Eiffel tower in Rome?"


@pytest.fixture
def forest(db):
    forest = make_forest("trie-forest")
    make_root(forest, PROMPT, ground_truth=0)
    return forest


def insert(steps, prediction=0, **kwargs):
    kwargs.setdefault("example", PROMPT)
    return forest_rollout_insert(forest_name="trie-forest", steps=steps, prediction=prediction, **kwargs)


def path_texts(leaf: Node) -> list[str]:
    texts = []
    node = leaf
    while node.parent_id is not None:
        texts.append(node.text)
        node = node.parent
    return texts[::-1]


def test_a_rollout_becomes_a_path_ending_in_a_leaf(forest):
    leaf = insert(["Step 1: Paris. ", "Step 2: so no. ", "code: 0"], prediction=0)
    assert path_texts(leaf) == ["Step 1: Paris. ", "Step 2: so no. ", "code: 0"]
    assert leaf.is_leaf and leaf.prediction == 0 and leaf.depth == 3
    root = Node.objects.get(forest=forest, depth=0)
    assert Node.objects.filter(tree=root).count() == 4
    assert set(Node.objects.filter(forest=forest).values_list("tree_id", flat=True)) == {root.pk}


def test_shared_prefixes_are_stored_once(forest):
    insert(["A", "B", "C"], prediction=0)
    insert(["A", "B", "D"], prediction=1)
    insert(["A", "E"], prediction=0)
    assert Node.objects.filter(forest=forest).count() == 1 + 5  # root + A, B, C, D, E
    assert Node.objects.filter(forest=forest, is_leaf=True).count() == 3


def test_an_identical_rollout_creates_nothing_new(forest):
    first = insert(["A", "B"], prediction=1)
    before = Node.objects.count()
    again = insert(["A", "B"], prediction=1)
    assert again.pk == first.pk
    assert Node.objects.count() == before


def test_a_rollout_may_end_inside_another_one(forest):
    insert(["A", "B", "C"], prediction=1)
    inner = insert(["A", "B"], prediction=0)
    assert inner.is_leaf and inner.prediction == 0
    assert inner.children.count() == 1


def test_a_leaf_keeps_its_first_prediction_and_gains_a_missing_one(forest):
    assert insert(["A"], prediction=None).prediction is None
    assert insert(["A"], prediction=1).prediction == 1
    assert insert(["A"], prediction=0).prediction == 1


def test_the_root_can_be_named_by_id(forest):
    other = make_root(forest, "Another statement", ground_truth=1)
    leaf = insert(["X"], example=None, root_id=other.pk, ground_truth=1)
    assert leaf.tree_id == other.pk


def test_unknown_forest_and_root_are_not_found(forest):
    with pytest.raises(NotFoundError) as no_forest:
        forest_rollout_insert(forest_name="nope", example=PROMPT, steps=["A"], prediction=0)
    assert no_forest.value.message == FOREST_NOT_FOUND.format(name="nope")
    with pytest.raises(NotFoundError) as no_root:
        insert(["A"], root_id=999_999)
    assert no_root.value.message == ROOT_NOT_FOUND.format(forest="trie-forest", root_id=999_999)


def test_an_example_that_matches_no_root_or_several_is_refused(forest):
    with pytest.raises(ApplicationError) as missing:
        insert(["A"], example="some other prompt")
    assert missing.value.message == EXAMPLE_NOT_FOUND.format(forest="trie-forest")
    make_root(forest, PROMPT, ground_truth=0)
    with pytest.raises(ApplicationError) as ambiguous:
        insert(["A"])
    assert ambiguous.value.message == EXAMPLE_AMBIGUOUS.format(count=2, forest="trie-forest")


def test_example_and_root_id_must_agree(forest):
    root = Node.objects.get(forest=forest, depth=0)
    with pytest.raises(ApplicationError) as refused:
        insert(["A"], example="not the prompt", root_id=root.pk)
    assert refused.value.message == EXAMPLE_MISMATCH.format(root_id=root.pk, forest="trie-forest")


def test_a_ground_truth_that_contradicts_the_tree_is_refused(forest):
    root = Node.objects.get(forest=forest, depth=0)
    with pytest.raises(ApplicationError) as refused:
        insert(["A"], ground_truth=1)
    assert refused.value.message == GROUND_TRUTH_MISMATCH.format(
        given=1, expected=0, root_id=root.pk, forest="trie-forest"
    )
    assert Node.objects.count() == 1


def test_a_failure_half_way_leaves_the_forest_as_it_was(forest, monkeypatch):
    insert(["A"], prediction=0)
    before = sorted(Node.objects.values_list("pk", "is_leaf"))

    def failing_bulk_create(*args, **kwargs):
        raise RuntimeError("disk full")

    # "B" is written on its own (it may race with another worker), then the chain C, D fails.
    monkeypatch.setattr(Node.objects, "bulk_create", failing_bulk_create)
    with pytest.raises(RuntimeError):
        insert(["A", "B", "C", "D"], prediction=1)
    assert sorted(Node.objects.values_list("pk", "is_leaf")) == before


def test_a_long_path_is_written_in_a_fixed_number_of_statements(forest):
    steps = [f"step {i}. " for i in range(400)]
    with CaptureQueriesContext(connection) as queries:
        leaf = insert(steps, prediction=1)
    assert leaf.depth == 400
    writes = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE"))]
    # The first new node, the chain in batches (SQLite binds at most 999 parameters per statement), the leaf: a
    # handful of statements for 400 nodes, where a per-node insert took 400 (and a savepoint each).
    assert len(writes) <= 10
    chain = [leaf]
    while chain[-1].parent_id is not None:
        chain.append(Node.objects.get(pk=chain[-1].parent_id))
    assert [n.text for n in reversed(chain[:-1])] == steps
    assert [n.depth for n in reversed(chain)] == list(range(401))
    # The ids the chain took are used up: the next node gets a fresh one.
    assert insert(["another"], prediction=0).pk > leaf.pk


@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_into_one_tree_share_nodes_and_lose_nothing():
    forest = make_forest("trie-forest")
    make_root(forest, PROMPT, ground_truth=0)
    # 8 threads, each inserting 6 rollouts that overlap heavily with the other threads' rollouts.
    rollouts = [[f"s1-{i % 2}", f"s2-{i % 3}", f"s3-{i % 4}", f"end-{i}"] for i in range(48)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(chunk):
        try:
            barrier.wait()
            for steps in chunk:
                insert(steps, prediction=0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(rollouts[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors

    expected_paths = {tuple(steps[:k]) for steps in rollouts for k in range(1, len(steps) + 1)}
    assert Node.objects.filter(forest=forest).count() == 1 + len(expected_paths)
    leaves = Node.objects.filter(forest=forest, is_leaf=True)
    assert sorted(tuple(path_texts(leaf)) for leaf in leaves) == sorted(map(tuple, rollouts))
    assert connection.vendor in {"sqlite", "postgresql"}
