"""The adaptive growth policy on the database (issue 23, part 1): rounds of completions per step until its label is
decided, drops of what is asked of decided steps, the per-step cap under concurrent workers, and resume."""

from __future__ import annotations

import random
import threading

import pytest
from django.db import connections

from forests.growth.policies import GrowthOptions, adaptive_steps
from forests.growth.selectors import tree_snapshot
from forests.intake import receive_rollout
from forests.models import Expansion, Node, RolloutGrowth
from rollouts.models import Rollout
from tests.forests.growth.helpers import answer, claim, later, plan, seed

pytestmark = pytest.mark.django_db

GOOD = ["Step 1: a. ", "Step 2: b. ", "code: 1"]
WRONG = ["Step 1: a. ", "Step 2: c. ", "code: 0"]


def _grown(forest, *, repeats=(GOOD, WRONG)):
    (base,) = claim(forest).expansions
    for steps in repeats:
        answer(forest, base, steps, int(steps[-1].endswith("1")))


def test_hard_serves_only_steps_no_correct_rollout_passes_through_and_stops_at_the_first_success():
    forest, _ = seed("adaptive-hard", roots=1)
    plan(forest, policy="adaptive", num_repeats=2, max_completions_per_step=6, round_size=2)
    _grown(forest)
    (expansion,) = claim(forest).expansions
    # "Step 1: a." has the correct rollout through it (known good); the root is no step; only "Step 2: c." is served.
    assert (expansion.stage, expansion.prefix, expansion.count) == ("adaptive", WRONG[:2], 2)
    answer(forest, expansion, ["Step 3: d. ", "code: 1"], 1)
    # Decided good at its first correct completion: the round's second rollout is no longer asked for.
    assert not Expansion.objects.exists()
    result = claim(forest)
    assert result.expansions == [] and result.done


def test_hard_decides_a_step_bad_only_after_max_completions_without_a_correct_one():
    forest, _ = seed("adaptive-bad", roots=1)
    plan(forest, policy="adaptive", num_repeats=2, max_completions_per_step=4, round_size=2)
    _grown(forest)
    asked = []
    for _ in range(10):
        expansions = claim(forest).expansions
        if not expansions:
            break
        for e in expansions:
            asked.append(e.count)
            for i in range(e.count):
                answer(forest, e, [f"Step 3: wrong {len(asked)}.{i}. ", "code: 0"], 0)
    # The base wrong rollout is the step's first trial: rounds of 2 and then 1 bring it to 4, then it is bad.
    assert asked == [2, 1]
    step = Node.objects.get(text="Step 2: c. ")
    through = tree_snapshot(root_id=step.tree_id).through()
    assert through[step.pk] == (4, 0)
    assert claim(forest).done


def test_soft_stops_when_the_interval_is_narrower_than_the_precision():
    forest, _ = seed("adaptive-soft", roots=1)
    plan(forest, policy="adaptive", estimate="soft", precision=0.5, num_repeats=2, max_completions_per_step=50)
    _grown(forest)
    generations = 0
    for _ in range(100):
        expansions = claim(forest).expansions
        if not expansions:
            break
        for e in expansions:
            for i in range(e.count):
                generations += 1
                answer(forest, e, [f"Step 9: x{generations}.{i}. ", "code: 1"], 1)
    snapshot = tree_snapshot(root_id=Node.objects.get(depth=0).pk)
    options = GrowthOptions(policy="adaptive", estimate="soft", precision=0.5, num_repeats=2)
    rule = options.adaptive_rule()
    steps = adaptive_steps(snapshot, options)
    # Every step stopped because its interval is narrow enough, long before the cap of 50.
    assert len(steps) == 3 and all(rule.decided(s.successes, s.trials) and s.trials < 20 for s in steps)
    assert generations < 30


def test_a_restarted_worker_takes_over_expired_leases_and_nothing_is_grown_twice():
    forest, _ = seed("adaptive-resume", roots=1)
    plan(forest, policy="adaptive", num_repeats=2, max_completions_per_step=4, round_size=2)
    _grown(forest)
    (lost,) = claim(forest, by="w1").expansions  # the worker dies holding it
    assert claim(forest, by="w2").expansions == []  # the lease is live: nobody else gets it
    (resumed,) = claim(forest, by="w2", now=later(10_000)).expansions
    assert resumed.id == lost.id and resumed.count == 2
    for i in range(2):
        receive_rollout(
            model="m",
            example=resumed.prompt,
            reasoning=[*resumed.prefix, f"Step 3: r{i}. ", "code: 0"],
            prediction=0,
            ground_truth=resumed.ground_truth,
            worker="w2",
            forest_name=forest.name,
            root_id=resumed.root_id,
            expansion_id=resumed.id,
            answered_by="w2",
        )
    assert RolloutGrowth.objects.filter(expansion_id=lost.id).count() == 2
    (following,) = claim(forest, by="w2", now=later(20_000)).expansions
    assert following.id != lost.id and following.count == 1  # 1 base + 2 + 1 = the cap of 4


def _steps_over_cap(forest, cap: int, asked_of: dict[int, int]) -> list[tuple[int, int]]:
    """Steps asked for more than ``cap`` rollouts: the base rollouts through the step plus the answers counted against
    the adaptive expansions from it (``asked_of``: expansion id -> node id)."""
    from_node: dict[int, int] = {}
    for expansion_id in RolloutGrowth.objects.filter(stage="adaptive").values_list("expansion_id", flat=True):
        node_id = asked_of[expansion_id]
        from_node[node_id] = from_node.get(node_id, 0) + 1
    over = []
    options = GrowthOptions(policy="adaptive", num_repeats=2, max_completions_per_step=cap)
    for root in Node.objects.filter(forest=forest, depth=0):
        snapshot = tree_snapshot(root_id=root.pk)
        base = snapshot.rollouts[:2]
        for step in adaptive_steps(snapshot, options):
            base_through = sum(step.node_id in snapshot.path(r.leaf_id) for r in base)
            if base_through + from_node.get(step.node_id, 0) > cap:
                over.append((step.node_id, base_through + from_node.get(step.node_id, 0)))
    return over


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_concurrent_workers_keep_every_step_within_its_cap_and_count_nothing_twice():
    """Eight workers claim and answer at once (both databases run this): a stub model whose completions are right
    with a probability fixed per step. No step gets more rollouts than max_completions_per_step, no expansion counts
    more answers than it asked for, every rollout is counted once, and the forest ends with nothing asked."""
    cap = 5
    forest, _ = seed("adaptive-race", roots=6)
    plan(forest, policy="adaptive", num_repeats=2, max_completions_per_step=cap, round_size=2)
    errors: list[BaseException] = []
    asked: dict[int, int] = {}
    asked_of: dict[int, int] = {}
    lock = threading.Lock()

    def work(worker: int) -> None:
        rng = random.Random(worker)
        try:
            idle = 0
            while idle < 3:
                result = claim(forest, by=f"w{worker}", limit=2)
                if not result.expansions:
                    if result.done:
                        return
                    idle += 1
                    continue
                idle = 0
                for e in result.expansions:
                    with lock:
                        asked.setdefault(e.id, e.count)
                        asked_of[e.id] = e.node_id
                    for i in range(e.count):
                        # Wrong from depth 2 on; right with probability 1/2 from shallower prefixes.
                        right = len(e.prefix) < 2 and rng.random() < 0.5
                        receive_rollout(
                            model="m",
                            example=e.prompt,
                            reasoning=[*e.prefix, *[f"Step {d}: w{worker}e{e.id}i{i}. " for d in range(2)], "code: x"],
                            prediction=int(right),
                            ground_truth=e.ground_truth,
                            worker=f"w{worker}",
                            forest_name=forest.name,
                            root_id=e.root_id,
                            expansion_id=e.id,
                            answered_by=f"w{worker}",
                        )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not _steps_over_cap(forest, cap, asked_of)
    counted = RolloutGrowth.objects.filter(stage="adaptive").values_list("expansion_id", flat=True)
    per_expansion: dict[int, int] = {}
    for expansion_id in counted:
        per_expansion[expansion_id] = per_expansion.get(expansion_id, 0) + 1
    assert per_expansion and all(n <= asked[expansion_id] for expansion_id, n in per_expansion.items())
    assert RolloutGrowth.objects.count() == Rollout.objects.count()
    assert claim(forest).done


def test_the_forest_page_says_how_the_adaptive_policy_grows_it(staff_client):
    forest, _ = seed("adaptive-page", roots=1)
    plan(forest, policy="adaptive", estimate="soft", precision=0.3, max_completions_per_step=12, round_size=3)
    page = staff_client.get(f"/forests/{forest.name}/").content.decode()
    assert "soft labels from up to 12 completions per step in rounds of 3" in page
    assert "narrower than 0.3" in page


def test_a_bulk_import_into_a_branched_tree_decides_its_steps_too():
    from django.db import transaction

    from forests.intake import receive_rollouts_bulk

    forest, _ = seed("adaptive-bulk", roots=1)
    plan(forest, policy="adaptive", num_repeats=2, max_completions_per_step=6)
    _grown(forest)
    assert Expansion.objects.filter(stage="adaptive").count() == 1  # "Step 2: c." is served
    (served,) = claim(forest).expansions
    imported = {
        "model": "m",
        "example": served.prompt,
        "reasoning": [*served.prefix, "Step 3: imported. ", "code: 1"],
        "prediction": 1,
        "ground_truth": served.ground_truth,
        "worker": "import",
    }
    with transaction.atomic():
        receive_rollouts_bulk([imported], forest_name=forest.name)
    # A correct rollout now passes through the step: decided good, its round is no longer asked for.
    assert not Expansion.objects.exists()


def test_the_queue_serves_a_trees_steps_in_the_policys_order():
    forest, _ = seed("adaptive-order", roots=1)
    plan(forest, policy="adaptive", num_repeats=3, max_completions_per_step=4)
    wrong_elsewhere = ["Step 1: x. ", "Step 2: y. ", "Step 3: z. ", "code: 0"]
    _grown(forest, repeats=(GOOD, WRONG, wrong_elsewhere))
    served = [e.prefix[-1] for e in claim(forest).expansions]
    # Every step has 1 trial and no success (the same expected change, 1/3); then nearest the first error: "c" and
    # "x" are 1 step below the deepest step known good ("a", or the root), "y" 2, "z" 3; then shallow first.
    assert served == ["Step 1: x. ", "Step 2: c. ", "Step 2: y. ", "Step 3: z. "]
