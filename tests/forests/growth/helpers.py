"""Helpers of the growth tests: a small seeded forest and a scripted "model" that answers expansions."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from forests.growth.plan import growth_plan_set
from forests.growth.queue import ClaimedExpansion, expansion_claim
from forests.intake import receive_rollout
from forests.models import Forest, Node
from tests.factories import make_forest, make_root

MODEL = "scripted-model"


def seed(name: str = "grow", roots: int = 3, ground_truth: int = 1) -> tuple[Forest, list[Node]]:
    forest = make_forest(
        name,
        rollout_config={
            "template": "{statement}",
            "reasoning_delimiter_pattern": "Step",
            "prediction_pattern": r"code: (\d)",
            "rollout_config_version": "test-1",
        },
    )
    return forest, [make_root(forest, f"Question {i}?", ground_truth=ground_truth) for i in range(roots)]


def plan(forest: Forest, **options) -> None:
    growth_plan_set(forest_name=forest.name, given=options, now=timezone.now())


def claim(forest: Forest, *, limit: int = 100, now: datetime | None = None, by: str = "w1", **kwargs):
    return expansion_claim(forest_name=forest.name, claimed_by=by, now=now or timezone.now(), limit=limit, **kwargs)


def later(seconds: float) -> datetime:
    return timezone.now() + timedelta(seconds=seconds)


def answer(
    forest: Forest,
    expansion: ClaimedExpansion,
    steps: list[str],
    prediction: int | None,
    *,
    usage: tuple[int, int] = (10, 20),
    send_expansion: bool = True,
):
    """Post one rollout answering ``expansion``: its prefix, then ``steps``."""
    fields = {
        "model": MODEL,
        "example": expansion.prompt,
        "reasoning": [*expansion.prefix, *steps],
        "prediction": prediction,
        "ground_truth": expansion.ground_truth,
        "worker": "test-worker",
        "forest_name": forest.name,
        "root_id": expansion.root_id,
        "attributes": {"usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}},
    }
    if send_expansion:
        fields["expansion_id"] = expansion.id
    return receive_rollout(**fields)
