"""A forest's page shows its growth: the plan, rollouts, pending expansions, tokens per forest and per tree."""

from __future__ import annotations

import pytest

from tests.forests.growth.helpers import answer, claim, plan, seed

pytestmark = pytest.mark.django_db


def test_the_forest_page_shows_the_plan_the_queue_and_the_tokens(staff_client):
    forest, _roots = seed("page-forest", roots=2)
    page = staff_client.get(f"/forests/{forest.name}/").content.decode()
    assert "No growth plan yet" in page
    plan(forest, policy="mc", num_repeats=2, completions_per_step=4, max_forest_tokens=999_999)
    first, _second = claim(forest).expansions
    answer(forest, first, ["Step 1: a. ", "code: 1"], 1, usage=(100, 23))
    page = staff_client.get(f"/forests/{forest.name}/").content.decode()
    assert "Policy <code>mc</code> (plan v1): 2 repeats per root, 4 completions per step" in page
    assert "at most 999999 tokens" in page
    assert "<strong>1</strong> rollouts (repeats: 1)" in page
    assert "<strong>2</strong> pending expansions (3 rollouts, 2 leased)" in page
    assert "<strong>123</strong> tokens (100 prompt, 23 completion)" in page
    # Tokens per tree, in the trees table: 123 for the answered tree, 0 for the other.
    assert '<td class="num">123</td>' in page and '<td class="num">0</td>' in page
