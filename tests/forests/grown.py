"""A small grown forest with hand-computed values, shared by the metrics, evaluation and export tests.

Tree A ("Is A?", ground truth 1), rollouts (steps -> prediction, how many identical ones):
    s1 s2 yes -> 1  x2      s1 s2 no -> 0      s1 t2 yes -> 1      u1 no -> 0
Tree B ("Is B?", ground truth 0):
    b1 no -> 0      b1 yes -> 1      c1 yes -> 1
Tree C ("Is C?", ground truth 1): no rollout.

Exact values (correct rollouts / rollouts through the node):
    A: s1 3/4, s1.s2 2/3, s1.s2.yes 2/2, s1.s2.no 0/1, s1.t2 1/1, s1.t2.yes 1/1, u1 0/1, u1.no 0/1; root 3/5
    B: b1 1/2, b1.no 1/1, b1.yes 0/1, c1 0/1, c1.yes 0/1; root 1/3
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forests.models import Forest, Node
from forests.trie import forest_rollout_insert
from rollouts.models import Rollout
from tests.factories import make_forest, make_rollout, make_root

PROMPTS = {"A": "Is A?", "B": "Is B?", "C": "Is C?"}
TRUTHS = {"A": 1, "B": 0, "C": 1}
ROLLOUTS = [
    ("A", ["s1 ", "s2 ", "yes"], 1, 2),
    ("A", ["s1 ", "s2 ", "no"], 0, 1),
    ("A", ["s1 ", "t2 ", "yes"], 1, 1),
    ("A", ["u1 ", "no"], 0, 1),
    ("B", ["b1 ", "no"], 0, 1),
    ("B", ["b1 ", "yes"], 1, 1),
    ("B", ["c1 ", "yes"], 1, 1),
]


@dataclass
class Grown:
    forest: Forest
    roots: dict[str, Node]
    rollouts: dict[tuple[str, ...], list[Rollout]] = field(default_factory=dict)

    def node(self, tree: str, *steps: str) -> Node:
        node = self.roots[tree]
        for step in steps:
            node = Node.objects.get(parent=node, text=step)
        return node

    def rollout(self, tree: str, *steps: str, which: int = 0) -> Rollout:
        return self.rollouts[(tree, *steps)][which]


def grow(name: str = "metrics-forest", *, tokens: int | None = 100) -> Grown:
    forest = make_forest(name, config_name="liar", dataset_split="test")
    roots = {key: make_root(forest, PROMPTS[key], ground_truth=TRUTHS[key]) for key in ("A", "B", "C")}
    grown = Grown(forest=forest, roots=roots)
    for tree, steps, prediction, copies in ROLLOUTS:
        for _ in range(copies):
            leaf = forest_rollout_insert(
                forest_name=forest.name,
                example=PROMPTS[tree],
                steps=steps,
                prediction=prediction,
                ground_truth=TRUTHS[tree],
            )
            attributes = {"usage": {"prompt_tokens": 10, "completion_tokens": tokens - 10, "total_tokens": tokens}}
            rollout = make_rollout(
                forest=forest,
                node=leaf,
                example=PROMPTS[tree],
                reasoning=steps,
                prediction=prediction,
                ground_truth=TRUTHS[tree],
                model=f"model-{tree.lower()}",
                attributes=attributes if tokens is not None else {},
            )
            grown.rollouts.setdefault((tree, *steps), []).append(rollout)
    return grown


def add_rollout(tree: str, steps: list[str], prediction: int | None, *, forest_name: str = "metrics-forest") -> Rollout:
    """One more rollout into the grown forest, linked to its leaf."""
    leaf = forest_rollout_insert(forest_name=forest_name, example=PROMPTS[tree], steps=steps, prediction=prediction)
    return make_rollout(
        forest_id=leaf.forest_id,
        node=leaf,
        example=PROMPTS[tree],
        reasoning=steps,
        prediction=prediction,
        ground_truth=TRUTHS[tree],
    )
