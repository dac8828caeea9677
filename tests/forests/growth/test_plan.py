"""The growth plan on the database: options kept or replaced, and how each policy plans a tree's work."""

from __future__ import annotations

import pytest
from django.utils import timezone

from forests.growth.plan import growth_plan_set
from forests.intake import receive_rollout
from forests.models import ErrorSearch, Expansion, Node
from prmsite.core.errors import ConflictError
from tests.factories import make_root
from tests.forests.growth.helpers import answer, claim, plan, seed

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

    forest, _roots = seed(roots=1)
    plan(forest, policy="repeats", num_repeats=1)
    assert len(claim(forest).expansions) == 1
    assert not claim(forest).done  # leased, not answered
    later_root = make_root(forest, "A question seeded later?", ground_truth=1)
    assert [e.root_id for e in claim(forest).expansions] == [later_root.pk]
