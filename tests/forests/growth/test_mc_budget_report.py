"""``mc_budget_report`` on a forest whose answers the test controls (issue 23, part 3): a scripted model right with a
known probability per step grows the whole forest under mc; the replay shows the adaptive policy reaching the whole
forest's labels with fewer generations."""

from __future__ import annotations

import json
import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rollouts.models import Rollout
from tests.forests.growth.helpers import answer, claim, plan, seed

pytestmark = pytest.mark.django_db

WRONG_STEP = "Step 2: wrong. "
P_RIGHT = 0.6  # the scripted model's chance of a right answer from a prefix without the wrong step


def _grow_whole_forest(name: str, *, roots: int = 3, per_step: int = 6) -> None:
    """Every tree: a right and a wrong base rollout (the wrong step planted at depth 2), then mc with ``per_step``
    completions per step, answered by the scripted model (right with P_RIGHT before the wrong step, never after)."""
    forest, _ = seed(name, roots=roots)
    plan(forest, policy="mc", num_repeats=2, completions_per_step=per_step)
    rng = random.Random(7)
    for base in claim(forest).expansions:
        answer(forest, base, ["Step 1: a. ", "Step 2: b. ", "Step 3: c. ", "code: 1"], 1)
        answer(forest, base, ["Step 1: a. ", WRONG_STEP, "Step 3: d. ", "Step 4: e. ", "code: 0"], 0)
    made = 0
    for _ in range(50):
        expansions = claim(forest, limit=1000).expansions
        if not expansions:
            break
        for e in expansions:
            for _ in range(e.count):
                made += 1
                right = WRONG_STEP not in e.prefix and rng.random() < P_RIGHT
                answer(forest, e, [f"Step 9: more {made}. ", f"code: {int(right)}"], int(right), usage=(5, 10))
    assert made > 0


def test_the_report_shows_adaptive_reaching_the_whole_forests_labels_with_fewer_generations(tmp_path):
    _grow_whole_forest("budget-report")
    out = StringIO()
    err = StringIO()
    call_command(
        "mc_budget_report",
        "--forest_name",
        "budget-report",
        "--budgets",
        "2,6",
        "--precisions",
        "0.5",
        "--output",
        str(tmp_path),
        stdout=out,
        stderr=err,
    )
    assert "adaptive hard" in out.getvalue() and "Replayed 10 policy budgets on 3 trees" in err.getvalue()
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {(r["name"], r["budget"]): r for r in report["results"]}
    whole = rows[("mc hard", 6)]
    adaptive = rows[("adaptive hard", 6)]
    # mc at the forest's own budget asks for every completion the forest has: it is the whole forest.
    assert whole["generations"] == Rollout.objects.count() and whole["step_accuracy"] == 1.0
    assert whole["tokens"] == 15 * (Rollout.objects.count() - 6) + 30 * 6  # the base rollouts reported 30 each
    # The adaptive policy reaches the same labels (every step, every first error) with measurably fewer generations.
    assert adaptive["step_accuracy"] == 1.0 and adaptive["first_error_agreement"] == 1.0
    assert adaptive["processbench_f1"] == 1.0
    assert adaptive["generations"] <= 0.6 * whole["generations"]
    assert adaptive["tokens"] < whole["tokens"]
    # A smaller budget costs less for every policy.
    assert rows[("mc hard", 2)]["generations"] < whole["generations"]
    for name in ("report.csv", "report.png", "report.svg"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_a_forest_that_does_not_exist_or_a_bad_list_is_a_one_line_error():
    with pytest.raises(CommandError, match="nope"):
        call_command("mc_budget_report", "--forest_name", "nope", stdout=StringIO(), stderr=StringIO())
    seed("budget-flags", roots=1)
    for flag, value in (("--budgets", "0,2"), ("--budgets", "two"), ("--precisions", "1.5")):
        with pytest.raises(CommandError, match=flag.lstrip("-")):
            call_command(
                "mc_budget_report", "--forest_name", "budget-flags", flag, value, stdout=StringIO(), stderr=StringIO()
            )
