"""Scripted answers of the stub model, and a seeded forest, shared by the worker tests."""

from __future__ import annotations

from tests.factories import make_forest, make_root
from tests.stub_openai import StubRequest

DELIMITER = r"Step|Verdict"
PREDICTION = r"code: (\d)"


def verdict_reply(request: StubRequest) -> str:
    """The right verdict (the label is the number modulo 2), except for statements whose number is a multiple of 3."""
    number = int(request.user_prompt.split("#")[1].split()[0])
    said = number % 2 if number % 3 else 1 - number % 2
    return f"Step 1: read statement {number}. Step 2: weigh it. Verdict: code: {said}"


def seeded_forest(name: str, roots: int, ground_truth: int = 1):
    forest = make_forest(
        name,
        rollout_config={
            "template": "{q}",
            "reasoning_delimiter_pattern": DELIMITER,
            "prediction_pattern": PREDICTION,
            "rollout_config_version": "forest-v1",
        },
    )
    return forest, [make_root(forest, f"Question #{i}?", ground_truth=ground_truth) for i in range(roots)]


def planted_reply(request: StubRequest) -> str:
    """A model whose answers go wrong exactly after the step "Step 3: WRONG turn.": a fresh answer's first choice
    takes the good road, its second the planted wrong one; continuations stay on the road their prefix is on."""
    partial = request.partial
    if "WRONG" in partial:
        return " Step 9: carry on. Verdict: code: 0"
    if partial:
        return " Step 8: fine. Verdict: code: 1"
    if request.index % 2 == 0:
        return "Step 1: a. Step 2: b. Step 3: c. Step 4: d. Verdict: code: 1"
    return "Step 1: a. Step 2: b. Step 3: WRONG turn. Step 4: e. Step 5: f. Step 6: g. Verdict: code: 0"


def idempotency_key_of(rollout) -> str | None:
    """The key a rollout was posted with."""
    return rollout.idempotency_key
