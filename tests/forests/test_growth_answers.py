"""Answers to expansions: only the worker holding an expansion answers it, at most its count of times, and an id that
names no expansion is refused; nothing is stored for a refused answer (issue 17, item 13)."""

from __future__ import annotations

import threading

import pytest
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from forests.growth_selectors import forest_growth_summary
from forests.growth_services import (
    EXPANSION_ANSWERED,
    EXPANSION_NOT_FOUND,
    EXPANSION_NOT_YOURS,
    rollout_receive,
)
from forests.models import Expansion, RolloutGrowth, TreeTally
from prmsite.errors import ConflictError, NotFoundError
from rollouts.models import Rollout
from tests.factories import make_worker_token
from tests.forests.growth_helpers import answer, claim, later, plan, seed


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


def stored() -> tuple[int, int]:
    return Rollout.objects.count(), RolloutGrowth.objects.count()


@pytest.mark.django_db
def test_an_expansion_accepts_at_most_its_count_of_answers():
    forest, _ = seed("count", roots=1)
    plan(forest, policy="repeats", num_repeats=6)
    (expansion,) = claim(forest, by="w1").expansions
    assert expansion.count == 6
    refused = []
    for index in range(expansion.count + 3):
        try:
            rollout_receive(**answer_fields(forest, expansion, index), answered_by="w1")
        except ConflictError as exc:
            refused.append(exc)
    assert len(refused) == 3 and {exc.code for exc in refused} == {"expansion_answered"}
    assert refused[0].message == EXPANSION_ANSWERED.format(expansion_id=expansion.id)
    assert RolloutGrowth.objects.filter(expansion_id=expansion.id).count() == 6
    assert stored() == (6, 6) and TreeTally.objects.get().rollouts == 6


@pytest.mark.django_db
def test_only_the_worker_holding_an_expansion_answers_it():
    forest, _ = seed("holder", roots=1)
    plan(forest, policy="repeats", num_repeats=2)
    (expansion,) = claim(forest, by="w1").expansions
    with pytest.raises(ConflictError) as refused:
        rollout_receive(**answer_fields(forest, expansion, 0), answered_by="w2")
    assert refused.value.code == "expansion_not_yours" and refused.value.status_code == 409
    assert refused.value.message == EXPANSION_NOT_YOURS.format(expansion_id=expansion.id)
    assert stored() == (0, 0) and Expansion.objects.get(pk=expansion.id).count == 2
    rollout_receive(**answer_fields(forest, expansion, 1), answered_by="w1")
    assert stored() == (1, 1) and Expansion.objects.get(pk=expansion.id).count == 1


@pytest.mark.django_db
def test_an_expansion_nobody_claimed_is_answered_by_nobody():
    forest, _ = seed("unclaimed", roots=2)
    plan(forest, policy="repeats", num_repeats=1)
    (leased,) = claim(forest, by="w1", limit=1).expansions
    pending = Expansion.objects.exclude(pk=leased.id).get()
    assert pending.leased_by == ""
    fields = answer_fields(forest, leased, 0, expansion_id=pending.pk)
    fields["example"] = pending.tree.text
    fields["root_id"] = pending.tree_id
    with pytest.raises(ConflictError, match="leased to another worker"):
        rollout_receive(**fields, answered_by="w1")
    assert stored() == (0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("expansion_id", [999_999_999, 2**63 - 1])
def test_an_unknown_expansion_id_is_a_404_and_stores_nothing(expansion_id):
    forest, _ = seed("unknown", roots=1)
    plan(forest, policy="repeats", num_repeats=1)
    (expansion,) = claim(forest, by="w1").expansions
    for answered_by in ("w1", None):
        with pytest.raises(NotFoundError) as refused:
            rollout_receive(**answer_fields(forest, expansion, 0, expansion_id=expansion_id), answered_by=answered_by)
        assert refused.value.message == EXPANSION_NOT_FOUND.format(expansion_id=expansion_id)
    assert stored() == (0, 0) and Expansion.objects.get(pk=expansion.id).count == 1


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
def test_over_http_answers_of_another_worker_unknown_ids_and_answers_beyond_the_count_are_4xx(two_workers):
    a, b = two_workers
    forest, _ = seed("http-answers", roots=1)
    a.put(f"/forest/{forest.name}/growth", {"policy": "repeats", "num_repeats": 2}, format="json")
    (expansion,) = a.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"]
    not_yours = b.post("/rollout", body_of(forest, expansion, 0), format="json")
    assert not_yours.status_code == 409 and not_yours.json()["code"] == "expansion_not_yours"
    for expansion_id, status in ((999_999_999, 404), (2**63 - 1, 404), (2**63, 400), (10**30, 400)):
        response = a.post("/rollout", body_of(forest, expansion, 0, expansion_id=expansion_id), format="json")
        assert response.status_code == status and set(response.json()) >= {"detail", "code"}, expansion_id
    batch = a.post("/rollout/batch", {"rollouts": [body_of(forest, expansion, i) for i in range(4)]}, format="json")
    results = batch.json()["results"]
    assert batch.status_code == 200 and ["id" in r for r in results] == [True, True, False, False]
    assert [r.get("code") for r in results[2:]] == ["expansion_answered"] * 2 and results[2]["status"] == 409
    from_b = b.post("/rollout/batch", {"rollouts": [body_of(forest, expansion, 9)]}, format="json").json()
    assert from_b["results"][0]["status"] == 409
    assert stored() == (2, 2)


@pytest.mark.django_db(transaction=True)
def test_concurrent_answers_beyond_the_count_are_refused_and_none_is_counted_twice():
    forest, _ = seed("racing-answers", roots=1)
    plan(forest, policy="repeats", num_repeats=6)
    (expansion,) = claim(forest, by="w1").expansions
    threads_n = 12
    barrier = threading.Barrier(threads_n)
    accepted: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def post(index: int) -> None:
        try:
            barrier.wait()
            rollout_receive(**answer_fields(forest, expansion, index), answered_by="w1")
            accepted.append(index)
        except ConflictError as exc:
            refused.append(exc.code)
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
    assert len(accepted) == 6 and refused == ["expansion_answered"] * 6
    assert RolloutGrowth.objects.filter(expansion_id=expansion.id).count() == 6 == Rollout.objects.count()
    assert not Expansion.objects.filter(pk=expansion.id).exists()
    assert TreeTally.objects.get().rollouts == 6


@pytest.mark.django_db
def test_a_probe_decided_early_still_takes_its_holders_answers_in_flight_up_to_the_count():
    forest, _ = seed("omega-early", roots=1)
    plan(forest, policy="omega", num_repeats=2, completions_per_step=2)
    (repeats,) = claim(forest, by="w1").expansions
    answer(forest, repeats, ["Step 1: a. ", "Step 2: b. ", "code: 1"], 1)
    answer(forest, repeats, ["Step 1: a. ", "Step 2: wrong. ", "code: 0"], 0)
    (probe,) = claim(forest, by="w1").expansions
    assert probe.stage == "omega" and probe.count == 2
    first = answer_fields(forest, probe, 0)
    rollout_receive(**first, answered_by="w1")  # correct: the probe is decided, its second answer is not needed
    closed = Expansion.objects.get(pk=probe.id)
    summary = forest_growth_summary(forest=forest, now=timezone.now())
    assert closed.count == 1 and summary.given_up_expansions == 0 and summary.leased_expansions == 0
    assert probe.id not in {e.id for e in claim(forest, by="w2", now=later(10_000)).expansions}  # never again
    rollout_receive(**answer_fields(forest, probe, 1), answered_by="w1")  # in flight when it was decided: taken
    with pytest.raises(ConflictError):
        rollout_receive(**answer_fields(forest, probe, 2), answered_by="w1")
    assert RolloutGrowth.objects.filter(expansion_id=probe.id).count() == 2
