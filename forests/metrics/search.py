"""Search metrics of a forest: beam-search accuracy for each N, and the baselines on the same trees. Pure: no Django.

Every method is scored on the trees holding at least one rollout; each tree scores 1 (right), 0 (wrong) or, where a
method leaves a tie, the expected score of breaking it uniformly at random. Accuracy is the mean over trees with
1.96 standard errors (``forests.metrics.stats``). The baselines use every rollout of a tree ("N" of best-of-N is the
number of rollouts the tree holds):

- ``random_rollout``: the expected accuracy of one rollout drawn at random (the share of correct rollouts);
- ``majority_vote`` (self-consistency): the most frequent answer among rollouts with one, answers grouped by
  equivalence under the forest's answer kind (``prmsite.core.grading.answer_classes``: ``\\frac{1}{2}`` and ``0.5``
  are one answer of a math forest), not by string;
- ``best_of_n``: the prediction of the rollout whose path scores highest (the beam score of its path: same value
  function and aggregation as the beam search); rollouts without a score rank last;
- ``weighted_best_of_n``: the answer (grouped the same way) with the largest sum of path scores over the rollouts
  giving it;
- ``oracle``: right when any rollout of the tree is correct (the ceiling of every reranker).

Tokens: where rollouts recorded ``usage.total_tokens``, ``tokens_per_tree`` is the mean over trees of the tokens the
method's rollouts spent (one rollout for ``random_rollout``, every rollout otherwise); ``tokens_coverage`` is the share
of rollouts that recorded usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forests.metrics.beam import Aggregation, beam_search, path_scores, score_ranks
from forests.metrics.forest import ForestArrays
from forests.metrics.stats import Accuracy, accuracy_of
from prmsite.core.grading import AnswerSpec, answer_classes

BASELINES = ("random_rollout", "majority_vote", "best_of_n", "weighted_best_of_n", "oracle")
BASELINE_TITLES = {
    "random_rollout": "random rollout (expected)",
    "majority_vote": "majority vote (self-consistency)",
    "best_of_n": "best-of-N",
    "weighted_best_of_n": "weighted best-of-N",
    "oracle": "oracle (any rollout correct)",
}


@dataclass(frozen=True)
class BeamResult:
    num_beams: int
    accuracy: float | None
    ci95: float | None
    num_trees: int


@dataclass(frozen=True)
class Baseline:
    accuracy: float | None
    ci95: float | None
    num_trees: int
    rollouts_per_tree: float | None
    tokens_per_tree: float | None


@dataclass(frozen=True)
class SearchReport:
    """What ``beam_search`` prints and writes (``as_dict`` is the ``--output_json`` object)."""

    forest_name: str
    value_function_option: str
    aggregation: str
    results: list[BeamResult]
    baselines: dict[str, Baseline]
    num_trees: int
    rollouts_per_tree: float | None
    tokens_coverage: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "forest_name": self.forest_name,
            "value_function_option": self.value_function_option,
            "aggregation": self.aggregation,
            "results": [asdict(result) for result in self.results],
            "baselines": {name: asdict(baseline) for name, baseline in self.baselines.items()},
            "num_trees": self.num_trees,
            "rollouts_per_tree": self.rollouts_per_tree,
            "tokens_coverage": self.tokens_coverage,
            **self.extra,
        }


def _fractional_pick(weights: dict[Any, float], correct: dict[Any, bool]) -> float:
    """Expected score of picking uniformly among the keys of highest weight."""
    if not weights:
        return 0.0
    best = max(weights.values())
    tied = [key for key, weight in weights.items() if weight == best]
    return sum(correct[key] for key in tied) / len(tied)


def search_report(
    forest: ForestArrays,
    values: np.ndarray,
    *,
    forest_name: str,
    value_function_option: str,
    aggregation: Aggregation | str,
    num_beam_values: Sequence[int],
    answer_spec: AnswerSpec | None = None,
) -> SearchReport:
    """Beam search for each N in ``num_beam_values`` and the baselines, on the trees holding rollouts.
    ``answer_spec``: the forest's answer kind (label when ``None``), by which votes group answers."""
    aggregation = Aggregation(aggregation)
    answer_spec = answer_spec or AnswerSpec()
    roots = forest.trees_with_rollouts()
    scores = path_scores(forest, values, aggregation)
    ranks = score_ranks(scores)

    results = []
    for num_beams in num_beam_values:
        answers = beam_search(forest, ranks, num_beams, roots)
        right = [forest.node_is_correct(answer) for answer in answers.tolist()]
        accuracy = accuracy_of(right)
        results.append(BeamResult(num_beams=num_beams, **_accuracy_fields(accuracy)))

    per_tree: dict[str, list[float]] = {name: [] for name in BASELINES}
    tokens_all: list[float] = []
    tokens_one: list[float] = []
    rollouts: list[int] = []
    rollout_scores = scores[forest.rollout_node].tolist()
    correct = forest.rollout_correct.tolist()
    tokens = forest.rollout_tokens
    for root in roots.tolist():
        span = forest.rollouts_of_tree(root)
        these = range(span.start, span.stop)
        is_right = [correct[i] for i in these]
        classes = _answer_classes(forest, these, answer_spec)
        rollouts.append(len(is_right))
        per_tree["random_rollout"].append(sum(is_right) / len(is_right))
        per_tree["oracle"].append(1.0 if any(is_right) else 0.0)

        votes: dict[int, float] = {}
        weighted: dict[int, float] = {}
        answer_right: dict[int, bool] = {}
        best_score = None
        best_right: list[bool] = []
        for i, answer in zip(these, classes, strict=True):
            score = rollout_scores[i]
            scored = score == score  # not NaN
            if scored and (best_score is None or score > best_score):
                best_score, best_right = score, [correct[i]]
            elif scored and score == best_score:
                best_right.append(correct[i])
            if answer is None:
                continue
            votes[answer] = votes.get(answer, 0.0) + 1.0
            weighted[answer] = weighted.get(answer, 0.0) + (score if scored else 0.0)
            answer_right[answer] = correct[i]
        per_tree["majority_vote"].append(_fractional_pick(votes, answer_right))
        per_tree["weighted_best_of_n"].append(_fractional_pick(weighted, answer_right))
        # No scored rollout: every rollout ties, and the pick is a random rollout.
        pool = best_right if best_score is not None else is_right
        per_tree["best_of_n"].append(sum(pool) / len(pool))

        spent = tokens[span]
        recorded = spent[~np.isnan(spent)]
        if recorded.size:
            tokens_all.append(float(recorded.sum()))
            tokens_one.append(float(recorded.mean()))

    recorded_share = float(np.count_nonzero(~np.isnan(tokens))) / tokens.size if tokens.size else None
    rollouts_per_tree = float(np.mean(rollouts)) if rollouts else None
    tokens_per_tree = float(np.mean(tokens_all)) if tokens_all else None
    baselines = {}
    for name in BASELINES:
        one = name == "random_rollout"
        baselines[name] = Baseline(
            **_accuracy_fields(accuracy_of(per_tree[name])),
            rollouts_per_tree=(1.0 if rollouts else None) if one else rollouts_per_tree,
            tokens_per_tree=(float(np.mean(tokens_one)) if tokens_one else None) if one else tokens_per_tree,
        )
    return SearchReport(
        forest_name=forest_name,
        value_function_option=value_function_option,
        aggregation=str(aggregation),
        results=results,
        baselines=baselines,
        num_trees=int(roots.size),
        rollouts_per_tree=rollouts_per_tree,
        tokens_coverage=recorded_share,
    )


def _answer_classes(forest: ForestArrays, rollouts: range, spec: AnswerSpec) -> list[Any]:
    """One key per rollout of ``rollouts`` that equal answers share (``None``: no answer). A label forest's answers
    are its predictions; other kinds group the answers' texts by equivalence."""
    if spec.kind == "label":
        return [forest.rollout_prediction[i] for i in rollouts]
    return answer_classes([forest.rollout_answer[i] for i in rollouts], spec)


def _accuracy_fields(accuracy: Accuracy) -> dict[str, Any]:
    return {"accuracy": accuracy.accuracy, "ci95": accuracy.ci95, "num_trees": accuracy.num_trees}


# A search report runs one beam search per N over every tree, and each costs up to N beams per depth: both are bounded
# so that one request (the admin's action) or one command does a bounded amount of work (N = 1..2000 ran past 180 s).
MAX_BEAM_VALUES = 16
MAX_NUM_BEAMS = 1024
NUM_BEAMS_MALFORMED = "The numbers of beams N must be whole numbers from 1 up, separated by commas, not {text!r}."
NUM_BEAMS_TOO_MANY = "Give at most {max} numbers of beams N, not {count}."
NUM_BEAMS_TOO_LARGE = "Each number of beams N must be at most {max}, not {value}."


def parse_num_beam_values(text: str) -> list[int]:
    """``"1,5"`` -> ``[1, 5]``: 1 to ``MAX_BEAM_VALUES`` distinct integers from 1 to ``MAX_NUM_BEAMS``, ascending.
    ``ValueError`` with one of the messages above otherwise (the command and the admin's form both parse here)."""
    parts = text.split(",")
    if len(parts) > MAX_BEAM_VALUES:  # judged before parsing: "1," * 10**6 is refused at once
        raise ValueError(NUM_BEAMS_TOO_MANY.format(max=MAX_BEAM_VALUES, count=len(parts)))
    values = set()
    for part in parts:
        part = part.strip()
        if not (part.isascii() and part.isdigit()) or int(part[:12]) < 1:
            raise ValueError(NUM_BEAMS_MALFORMED.format(text=text[:100]))
        if len(part) > 12 or int(part) > MAX_NUM_BEAMS:
            raise ValueError(NUM_BEAMS_TOO_LARGE.format(max=MAX_NUM_BEAMS, value=part[:20]))
        values.add(int(part))
    return sorted(values)


def format_report(report: SearchReport) -> str:
    """The table ``beam_search`` prints: beam search by N beside the baselines on the same trees."""

    def figure(accuracy: float | None, ci95: float | None) -> str:
        if accuracy is None:
            return "-"
        return f"{accuracy:.3f} ± {ci95:.3f}" if ci95 is not None else f"{accuracy:.3f}"

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        f"forest {report.forest_name}: value function {report.value_function_option}, "
        f"aggregation {report.aggregation}, {report.num_trees} trees with rollouts",
        "",
        f"{'N':>6}  {'accuracy ± 95% CI':>20}  {'trees':>7}",
    ]
    for row in report.results:
        lines.append(f"{row.num_beams:>6}  {figure(row.accuracy, row.ci95):>20}  {row.num_trees:>7}")
    lines += [
        "",
        f"{'baseline (same trees)':<34}  {'accuracy ± 95% CI':>20}  {'rollouts/tree':>13}  {'tokens/tree':>12}",
    ]
    for name, baseline in report.baselines.items():
        lines.append(
            f"{BASELINE_TITLES[name]:<34}  {figure(baseline.accuracy, baseline.ci95):>20}  "
            f"{number(baseline.rollouts_per_tree, 1):>13}  {number(baseline.tokens_per_tree, 0):>12}"
        )
    if report.tokens_coverage is not None and report.tokens_coverage < 1:
        lines.append(f"(tokens recorded by {report.tokens_coverage:.0%} of the rollouts; the rest count as none)")
    return "\n".join(lines)
