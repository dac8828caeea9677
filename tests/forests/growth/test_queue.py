"""The expansion queue: claims hand out leases that nobody else gets, releases give them back."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.utils import timezone

from forests.growth.plan import NO_PLAN, growth_plan_set
from forests.growth.queue import expansion_release
from forests.models import Expansion
from forests.selectors import FOREST_NOT_FOUND
from prmsite.core.errors import NotFoundError
from tests.forests.growth.helpers import claim, later, plan, seed

pytestmark = pytest.mark.django_db


def test_claiming_needs_a_plan_and_a_forest():
    forest, _ = seed()
    with pytest.raises(NotFoundError) as no_plan:
        claim(forest)
    assert no_plan.value.message == NO_PLAN.format(name=forest.name)
    with pytest.raises(NotFoundError) as no_forest:
        growth_plan_set(forest_name="nope", given={}, now=timezone.now())
    assert no_forest.value.message == FOREST_NOT_FOUND.format(name="nope")


@override_settings(GROWTH_EXPANSION_MAX_COUNT=3)
def test_repeats_queue_every_root_up_to_num_repeats_in_leases_of_bounded_size():
    forest, roots = seed(roots=3)
    plan(forest, policy="repeats", num_repeats=4)
    result = claim(forest)
    by_root: dict[int, list[int]] = {}
    for e in result.expansions:
        assert e.stage == "repeats" and e.prefix == [] and e.depth == 0 and e.node_id == e.root_id
        assert e.prompt.startswith("Question") and e.ground_truth == 1
        by_root.setdefault(e.root_id, []).append(e.count)
    assert {root: sorted(counts) for root, counts in by_root.items()} == {r.pk: [1, 3] for r in roots}
    assert not result.done


def test_a_leased_expansion_is_handed_to_nobody_else_until_its_lease_ends():
    forest, _ = seed(roots=2)
    plan(forest, policy="repeats", num_repeats=1)
    first = claim(forest, limit=1)
    second = claim(forest, limit=5, by="w2")
    assert len(first.expansions) == 1 and len(second.expansions) == 1
    assert first.expansions[0].id != second.expansions[0].id
    assert claim(forest, by="w3").expansions == []
    # After the lease, it goes out again.
    again = claim(forest, now=later(10_000), by="w3")
    assert {e.id for e in again.expansions} == {first.expansions[0].id, second.expansions[0].id}


def test_max_rollouts_stops_a_claim_once_its_expansions_ask_for_that_many():
    forest, _ = seed(roots=5)
    plan(forest, policy="repeats", num_repeats=2)
    assert [e.count for e in claim(forest, max_rollouts=3).expansions] == [2, 2]
    assert len(claim(forest, max_rollouts=1).expansions) == 1


def test_a_released_lease_is_claimable_at_once_and_failures_give_an_expansion_up():
    forest, _ = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=1)
    (e,) = claim(forest).expansions
    assert expansion_release(forest_name=forest.name, ids=[e.id], released_by="someone-else", now=timezone.now()) == 0
    assert expansion_release(forest_name=forest.name, ids=[e.id], released_by="w1", now=timezone.now()) == 1
    assert Expansion.objects.get(pk=e.id).attempts == 0
    with override_settings(GROWTH_MAX_ATTEMPTS=2):
        for _ in range(2):
            (again,) = claim(forest).expansions
            expansion_release(
                forest_name=forest.name, ids=[again.id], released_by="w1", now=timezone.now(), failed=True, error="400"
            )
        result = claim(forest)
    assert result.expansions == [] and result.done
    assert Expansion.objects.get(pk=e.id).last_error == "400"
