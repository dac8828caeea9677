"""The growth scheduler on the database: plans, the expansion queue and its leases, bookkeeping as rollouts arrive."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.utils import timezone

from forests.growth.bookkeeping import EXPANSION_OFF_PATH
from forests.growth.plan import growth_plan_set
from forests.growth.queue import expansion_release
from forests.intake import receive_rollout
from forests.models import ErrorSearch, Expansion, ForestTally, GrowthPlan, Node, RolloutGrowth, TreeTally
from forests.services import forest_delete
from prmsite.errors import ApplicationError, ConflictError, NotFoundError
from rollouts.models import Rollout
from tests.forests.growth_helpers import answer, claim, later, plan, seed

pytestmark = pytest.mark.django_db


def test_a_plan_is_kept_and_other_options_are_refused_unless_replaced():
    forest, _ = seed()
    plan(forest, policy="repeats", num_repeats=2)
    plan(forest, num_repeats=2)  # the same again: fine
    plan(forest)  # nothing given: the stored plan
    with pytest.raises(ConflictError, match="num_repeats: stored 2, given 3"):
        plan(forest, num_repeats=3)
    stored, changed = growth_plan_set(
        forest_name=forest.name, given={"num_repeats": 3}, replace=True, now=timezone.now()
    )
    assert changed and stored.version == 2 and stored.options["num_repeats"] == 3
    assert stored.history[0]["options"]["num_repeats"] == 2


def test_claiming_needs_a_plan_and_a_forest():
    forest, _ = seed()
    with pytest.raises(NotFoundError, match="no growth plan"):
        claim(forest)
    with pytest.raises(NotFoundError, match="No forest"):
        growth_plan_set(forest_name="nope", given={}, now=timezone.now())


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
    from forests.growth_services import _account

    forest, roots = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=3)
    (expansion,) = claim(forest).expansions
    rollout = answer(forest, expansion, ["Step 1: yes. ", "code: 1"], 1)
    _account(rollout=rollout, expansion_id=expansion.id)  # what a deduplicated repeat of the same post does
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
    with pytest.raises(ApplicationError, match="does not pass through node"):
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
    assert Rollout.objects.count() == rollouts_before and Node.objects.count() == nodes_before
    assert EXPANSION_OFF_PATH


def test_mc_gives_every_non_leaf_node_of_the_base_paths_its_completions():
    forest, _roots = seed(roots=1)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=3)
    (repeats,) = claim(forest).expansions
    answer(forest, repeats, ["Step 1: a. ", "Step 2: b. ", "code: 1"], 1)
    answer(forest, repeats, ["Step 1: a. ", "Step 2: c. ", "code: 0"], 0)
    queued = sorted((e.depth, e.count, e.prefix[-1] if e.prefix else "") for e in claim(forest).expansions)
    # root and "Step 1: a." have 2 rollouts through them: 1 more each; each "Step 2" has 1: 2 more; the final
    # "code: …" steps are leaves (no completion from them).
    assert queued == [(0, 1, ""), (1, 1, "Step 1: a. "), (2, 2, "Step 2: b. "), (2, 2, "Step 2: c. ")]
    assert set(Expansion.objects.values_list("stage", flat=True)) == {"mc"}


def test_mc_leaves_uniform_trees_alone_with_skip_uniform():
    forest, _ = seed(roots=1)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=4, skip_uniform=True)
    (repeats,) = claim(forest).expansions
    answer(forest, repeats, ["Step 1: a. ", "code: 1"], 1)
    answer(forest, repeats, ["Step 1: b. ", "code: 1"], 1)
    result = claim(forest)
    assert result.expansions == [] and result.done


def test_a_tree_cap_bounds_what_is_asked_of_a_tree():
    forest, _ = seed(roots=1)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=10, max_rollouts_per_tree=5)
    (repeats,) = claim(forest).expansions
    answer(forest, repeats, ["Step 1: a. ", "Step 2: b. ", "code: 1"], 1)
    answer(forest, repeats, ["Step 1: a. ", "Step 2: c. ", "code: 0"], 0)
    assert sum(e.count for e in claim(forest).expansions) == 3


def test_the_token_cap_stops_the_forest():
    forest, _ = seed(roots=2)
    plan(forest, policy="repeats", num_repeats=2, max_forest_tokens=50)
    first = claim(forest, limit=1).expansions[0]
    answer(forest, first, ["Step 1: a. ", "code: 1"], 1, usage=(20, 40))
    result = claim(forest)
    assert result.expansions == [] and result.done and "max_forest_tokens" in result.reason


def test_omega_finds_the_planted_first_error():
    """Scripted model: from any prefix that does not contain the bad step "Step 3: wrong" it answers right."""
    forest, _roots = seed(roots=1)
    plan(forest, policy="omega", num_repeats=2, completions_per_step=2)
    (repeats,) = claim(forest).expansions
    good = ["Step 1: a. ", "Step 2: b. ", "Step 3: c. ", "Step 4: d. ", "code: 1"]
    bad = ["Step 1: a. ", "Step 2: b. ", "Step 3: wrong. ", "Step 4: e. ", "Step 5: f. ", "code: 0"]
    answer(forest, repeats, good, 1)
    answer(forest, repeats, bad, 0)
    generations = 0
    for _ in range(20):
        expansions = claim(forest).expansions
        if not expansions:
            break
        for e in expansions:
            assert e.stage == "omega"
            for i in range(e.count):
                generations += 1
                right = "Step 3: wrong. " not in e.prefix
                answer(forest, e, [f"Step x{i}: more. ", f"code: {int(right)}"], int(right))
    search = ErrorSearch.objects.get()
    assert search.status == "found"
    first_error = Node.objects.get(pk=search.first_error_id)
    assert first_error.text == "Step 3: wrong. " and first_error.depth == 3
    # Steps 1 and 2 are known right from the correct rollout: one probe of depth 4 and one of 3 at most.
    assert generations <= 2 * 2


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


def test_replacing_the_plan_drops_the_old_queue_and_plans_again():
    forest, _roots = seed(roots=2)
    plan(forest, policy="repeats", num_repeats=1)
    claim(forest)
    growth_plan_set(forest_name=forest.name, given={"num_repeats": 2}, replace=True, now=timezone.now())
    assert not Expansion.objects.exists()
    result = claim(forest)
    assert sorted(e.count for e in result.expansions) == [2, 2]
    assert set(Expansion.objects.values_list("plan_version", flat=True)) == {2}


def test_rollouts_that_arrived_before_the_plan_count_towards_the_repeats():
    from forests.intake import receive_rollout

    forest, roots = seed(roots=1)
    for text in ("Step 1: a. ", "Step 1: b. "):
        receive_rollout(
            model="m",
            example=roots[0].text,
            reasoning=[text, "code: 1"],
            prediction=1,
            ground_truth=1,
            worker="w",
            forest_name=forest.name,
        )
    plan(forest, policy="repeats", num_repeats=3)
    assert [e.count for e in claim(forest).expansions] == [1]


def test_new_roots_are_planned_as_claims_come_in():
    from tests.factories import make_root

    forest, _roots = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=1)
    assert len(claim(forest).expansions) == 1
    assert not claim(forest).done  # leased, not answered
    later_root = make_root(forest, "A question seeded later?", ground_truth=1)
    assert [e.root_id for e in claim(forest).expansions] == [later_root.pk]


def test_deleting_a_forest_deletes_its_growth_rows_and_keeps_its_rollouts():
    forest, _ = seed(roots=1)
    plan(forest, policy="omega", num_repeats=1)
    (e,) = claim(forest).expansions
    answer(forest, e, ["Step 1: a. ", "code: 0"], 0)
    forest_delete(forest=forest)
    assert not GrowthPlan.objects.exists() and not TreeTally.objects.exists() and not RolloutGrowth.objects.exists()
    assert Rollout.objects.count() == 1
