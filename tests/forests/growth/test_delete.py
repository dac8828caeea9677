"""Deleting a forest deletes its growth rows and keeps its rollouts."""

from __future__ import annotations

import pytest

from forests.models import GrowthPlan, RolloutGrowth, TreeTally
from forests.services import forest_delete
from rollouts.models import Rollout
from tests.forests.growth.helpers import answer, claim, plan, seed

pytestmark = pytest.mark.django_db


def test_deleting_a_forest_deletes_its_growth_rows_and_keeps_its_rollouts():
    forest, _ = seed(roots=1)
    plan(forest, policy="omega", num_repeats=1)
    (e,) = claim(forest).expansions
    answer(forest, e, ["Step 1: a. ", "code: 0"], 0)
    forest_delete(forest=forest)
    assert not GrowthPlan.objects.exists() and not TreeTally.objects.exists() and not RolloutGrowth.objects.exists()
    assert Rollout.objects.count() == 1
