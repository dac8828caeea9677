"""Growth bookkeeping of arriving rollouts: tallies, and answers to expansions. An answer counts against an
expansion only from the worker holding it, at most its count of times; every other answer (another worker's, one
beyond the count, an id that names nothing) is still stored as a rollout of its tree that counts against no
expansion, so nothing generated is lost (issue 17, item 13)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from rest_framework.test import APIClient

from forests.growth.bookkeeping import EXPANSION_OFF_PATH, rollout_account
from forests.intake import receive_rollout
from forests.models import Expansion, ForestTally, Node, RolloutGrowth, TreeTally
from prmsite.core.errors import ApplicationError
from rollouts.models import Rollout
from tests.factories import make_worker_token
from tests.forests.growth.helpers import answer, claim, plan, seed

pytestmark = pytest.mark.django_db


def answer_fields(forest, expansion, index: int, *, expansion_id: int | None = None) -> dict:
    """A distinct rollout answering ``expansion`` (a fresh answer from its root)."""
    return {
        "model": "m",
        "example": expansion.prompt,
        "reasoning": [*expansion.prefix, f"Step 1: answer {index}. ", "code: 1"],
        "prediction": 1,
        "ground_truth": expansion.ground_truth,
        "worker": "w",
        "forest_name": forest.name,
        "root_id": expansion.root_id,
        "expansion_id": expansion.id if expansion_id is None else expansion_id,
    }


def counted(expansion_id: int) -> int:
    """Answers counted against the expansion."""
    return RolloutGrowth.objects.filter(expansion_id=expansion_id).count()


def unplanned() -> int:
    """Rollouts stored and tallied that count against no expansion."""
    return RolloutGrowth.objects.filter(expansion_id__isnull=True, stage="").count()


@pytest.mark.django_db
def test_an_expansion_counts_at_most_its_count_of_answers_and_keeps_the_rest_as_rollouts():
    forest, _ = seed("count", roots=1)
    plan(forest, policy="repeats", num_repeats=6)
    (expansion,) = claim(forest, by="w1").expansions
    assert expansion.count == 6
    for index in range(expansion.count + 3):
        receive_rollout(**answer_fields(forest, expansion, index), answered_by="w1")
    assert counted(expansion.id) == 6 and unplanned() == 3
    assert Rollout.objects.count() == 9 and TreeTally.objects.get().rollouts == 9
    assert not Expansion.objects.filter(pk=expansion.id).exists()


@pytest.mark.django_db
def test_another_workers_answer_is_stored_and_counts_against_nothing():
    forest, _ = seed("holder", roots=1)
    plan(forest, policy="repeats", num_repeats=2)
    (expansion,) = claim(forest, by="w1").expansions
    receive_rollout(**answer_fields(forest, expansion, 0), answered_by="w2")
    assert Rollout.objects.count() == 1 and unplanned() == 1 and counted(expansion.id) == 0
    assert Expansion.objects.get(pk=expansion.id).count == 2  # w1's work is untouched
    receive_rollout(**answer_fields(forest, expansion, 1), answered_by="w1")
    assert counted(expansion.id) == 1 and Expansion.objects.get(pk=expansion.id).count == 1


@pytest.mark.django_db
def test_an_expansion_nobody_holds_is_counted_down_by_nobody():
    forest, _ = seed("unclaimed", roots=2)
    plan(forest, policy="repeats", num_repeats=1)
    (leased,) = claim(forest, by="w1", limit=1).expansions
    pending = Expansion.objects.exclude(pk=leased.id).get()
    assert pending.leased_by == ""
    fields = answer_fields(forest, leased, 0, expansion_id=pending.pk)
    fields["example"] = pending.tree.text
    fields["root_id"] = pending.tree_id
    receive_rollout(**fields, answered_by="w1")
    assert Expansion.objects.get(pk=pending.pk).count == 1 and unplanned() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("expansion_id", [999_999_999, 2**63 - 1])
def test_an_id_that_names_no_expansion_leaves_no_dangling_growth_row(expansion_id):
    forest, _ = seed("unknown", roots=1)
    plan(forest, policy="repeats", num_repeats=1)
    (expansion,) = claim(forest, by="w1").expansions
    for index, answered_by in enumerate(("w1", None)):
        receive_rollout(**answer_fields(forest, expansion, index, expansion_id=expansion_id), answered_by=answered_by)
    assert counted(expansion_id) == 0 and unplanned() == 2
    assert Expansion.objects.get(pk=expansion.id).count == 1


@pytest.fixture
def two_workers(django_user_model) -> tuple[APIClient, APIClient]:
    clients = []
    for name in ("grower-a", "grower-b"):
        client = APIClient()
        token = make_worker_token(django_user_model.objects.create(username=name))
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        clients.append(client)
    return clients[0], clients[1]


def body_of(forest, expansion: dict, index: int, **changes) -> dict:
    return {
        "model": "m",
        "example": expansion["prompt"],
        "reasoning": [*expansion["prefix"], f"Step 1: answer {index}. ", "code: 1"],
        "prediction": 1,
        "ground_truth": expansion["ground_truth"],
        "worker": "w",
        "forest_name": forest.name,
        "root_id": expansion["root_id"],
        "expansion_id": expansion["id"],
        **changes,
    }


@pytest.mark.django_db
def test_over_http_only_the_holders_answers_count_and_every_answer_is_stored(two_workers):
    a, b = two_workers
    forest, _ = seed("http-answers", roots=1)
    a.put(f"/forest/{forest.name}/growth", {"policy": "repeats", "num_repeats": 2}, format="json")
    (expansion,) = a.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"]
    assert b.post("/rollout", body_of(forest, expansion, 0), format="json").status_code == 200
    assert counted(expansion["id"]) == 0
    for index, expansion_id in enumerate((999_999_999, 2**63 - 1), start=1):
        response = a.post("/rollout", body_of(forest, expansion, index, expansion_id=expansion_id), format="json")
        assert response.status_code == 200, expansion_id
    for expansion_id in (2**63, 10**30):  # beyond a database integer: a schema error
        response = a.post("/rollout", body_of(forest, expansion, 9, expansion_id=expansion_id), format="json")
        assert response.status_code == 400 and set(response.json()) >= {"detail", "code"}, expansion_id
    rollouts = [body_of(forest, expansion, i) for i in range(10, 14)]
    batch = a.post("/rollout/batch", {"rollouts": rollouts}, format="json")
    assert batch.status_code == 200 and all("id" in r for r in batch.json()["results"])
    assert counted(expansion["id"]) == 2 and unplanned() == 5 and Rollout.objects.count() == 7


@pytest.mark.django_db(transaction=True)
def test_concurrent_answers_beyond_the_count_are_kept_and_none_is_counted_twice():
    forest, _ = seed("racing-answers", roots=1)
    plan(forest, policy="repeats", num_repeats=6)
    (expansion,) = claim(forest, by="w1").expansions
    threads_n = 12
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def post(index: int) -> None:
        try:
            barrier.wait()
            receive_rollout(**answer_fields(forest, expansion, index), answered_by="w1")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(index,)) for index in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert counted(expansion.id) == 6 and unplanned() == 6 and Rollout.objects.count() == 12
    assert not Expansion.objects.filter(pk=expansion.id).exists()
    assert TreeTally.objects.get().rollouts == 12


@pytest.mark.django_db
def test_an_answer_in_flight_to_a_probe_decided_early_is_kept_as_a_rollout_of_its_tree():
    forest, _ = seed("omega-early", roots=1)
    plan(forest, policy="omega", num_repeats=2, completions_per_step=2)
    (repeats,) = claim(forest, by="w1").expansions
    answer(forest, repeats, ["Step 1: a. ", "Step 2: b. ", "code: 1"], 1)
    answer(forest, repeats, ["Step 1: a. ", "Step 2: wrong. ", "code: 0"], 0)
    (probe,) = claim(forest, by="w1").expansions
    assert probe.stage == "omega" and probe.count == 2
    receive_rollout(**answer_fields(forest, probe, 0), answered_by="w1")  # correct: the probe is decided
    assert not Expansion.objects.filter(pk=probe.id).exists()  # its second answer is no longer asked for
    receive_rollout(**answer_fields(forest, probe, 1), answered_by="w1")  # it was in flight: kept, not counted
    assert counted(probe.id) == 1 and unplanned() == 1
    assert TreeTally.objects.get().rollouts == 4


def test_answers_count_an_expansion_down_and_end_it_and_tallies_follow():
    forest, roots = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=2)
    (expansion,) = claim(forest).expansions
    answer(forest, expansion, ["Step 1: yes. ", "code: 1"], 1, usage=(7, 11))
    assert Expansion.objects.get(pk=expansion.id).count == 1
    answer(forest, expansion, ["Step 1: no. ", "code: 0"], 0, usage=(7, 13))
    assert not Expansion.objects.filter(pk=expansion.id).exists()
    tally = TreeTally.objects.get(root=roots[0])
    assert (tally.rollouts, tally.correct, tally.prompt_tokens, tally.completion_tokens) == (2, 1, 14, 24)
    forest_tally = ForestTally.objects.get(forest=forest)
    assert (forest_tally.rollouts, forest_tally.tokens) == (2, 38)
    assert set(RolloutGrowth.objects.values_list("stage", flat=True)) == {"repeats"}
    done = claim(forest)
    assert done.expansions == [] and done.done


def test_a_rollout_counted_once_even_when_its_bookkeeping_runs_twice():
    forest, roots = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=3)
    (expansion,) = claim(forest).expansions
    rollout = answer(forest, expansion, ["Step 1: yes. ", "code: 1"], 1)
    rollout_account(rollout=rollout, expansion_id=expansion.id)  # what a deduplicated repeat of the same post does
    assert TreeTally.objects.get(root=roots[0]).rollouts == 1
    assert Expansion.objects.get(pk=expansion.id).count == 2


def test_an_answer_must_start_with_the_expansions_prefix_and_nothing_is_stored_otherwise():
    forest, _ = seed(roots=1)
    plan(forest, policy="mc", num_repeats=1, completions_per_step=2)
    (root_expansion,) = claim(forest).expansions
    answer(forest, root_expansion, ["Step 1: a. ", "Step 2: b. ", "code: 0"], 0)
    mc = [e for e in claim(forest).expansions if e.depth == 2]
    assert mc and mc[0].prefix == ["Step 1: a. ", "Step 2: b. "]
    rollouts_before = Rollout.objects.count()
    nodes_before = Node.objects.count()
    with pytest.raises(ApplicationError) as refused:
        receive_rollout(
            model="m",
            example=mc[0].prompt,
            reasoning=["Step 1: a. ", "Step 2: c. ", "code: 1"],
            prediction=1,
            ground_truth=1,
            worker="w",
            forest_name=forest.name,
            root_id=mc[0].root_id,
            expansion_id=mc[0].id,
        )
    assert refused.value.message == EXPANSION_OFF_PATH.format(node_id=mc[0].node_id, expansion_id=mc[0].id)
    assert Rollout.objects.count() == rollouts_before and Node.objects.count() == nodes_before
