"""Small builders for test data: plain functions, so each test states what it needs."""

from __future__ import annotations

from itertools import count

from forests.models import Forest, Node, text_sha256
from prmsite.core.domain import rollout_is_correct
from rollouts.models import ProcessRewardLabel, Rollout

_seq = count(1)


def make_forest(name: str | None = None, **fields) -> Forest:
    return Forest.objects.create(name=name or f"forest-{next(_seq)}", **fields)


def make_root(forest: Forest, text: str = "Is the sky green?", ground_truth: int = 0, **fields) -> Node:
    root = Node.objects.create(
        forest=forest,
        depth=0,
        text=text,
        text_sha256=text_sha256(text),
        ground_truth=ground_truth,
        serialized_item=fields.pop("serialized_item", {"statement": text, "label": ground_truth}),
        **fields,
    )
    root.tree = root
    root.save(update_fields=["tree"])
    return root


def make_child(parent: Node, text: str, **fields) -> Node:
    return Node.objects.create(
        forest_id=parent.forest_id,
        tree_id=parent.tree_id,
        parent=parent,
        depth=parent.depth + 1,
        text=text,
        text_sha256=text_sha256(text),
        **fields,
    )


def rollout_fields(**fields) -> dict:
    """The fields of a valid rollout, as POST /rollout takes them and the model stores them."""
    values = {
        "model": "tiny-model",
        "example": "Is the sky green?",
        "reasoning": ["Step 1: look up. ", "Verdict: False (code: 0)"],
        "prediction": 0,
        "ground_truth": 0,
        "worker": "worker-1",
    }
    values.update(fields)
    return values


def make_rollout(**fields) -> Rollout:
    """A rollout row as the intake would have stored it: with its answer and the grader's verdict (a label rollout's,
    unless ``answer`` / ``correct`` are given)."""
    values = rollout_fields(**fields)
    prediction = values["prediction"]
    values.setdefault("answer", None if prediction is None else str(prediction))
    values.setdefault("correct", rollout_is_correct(prediction, values["ground_truth"]))
    return Rollout.objects.create(**values)


def make_label(rollout: Rollout, prm_version: str = "prm-v1", **fields) -> ProcessRewardLabel:
    values = {"prm_output": [0.5] * len(rollout.reasoning), "worker": "prm-worker"}
    values.update(fields)
    return ProcessRewardLabel.objects.create(rollout=rollout, prm_version=prm_version, **values)


def make_worker_token(user) -> str:
    """A new API token for ``user`` (stored hashed: this is the only time its value is known)."""
    from knox.models import get_token_model

    return get_token_model().objects.create(user=user)[1]
