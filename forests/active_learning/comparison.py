"""A round's metrics beside the previous round's: the table ``al_round`` prints at the end of a round. Pure: no
Django. Figures measured against different references are never compared."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str
    value: float | int | None


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def round_metrics(record: dict[str, Any]) -> list[Metric]:
    """The figures of a round worth comparing, in the order they are shown."""
    stages = record.get("stages") or {}
    label = _get(stages, "label", "summary") or {}
    train = _get(stages, "train", "summary") or {}
    prm_label = _get(stages, "prm_label", "summary") or {}
    beam = _get(stages, "measure", "summary", "beam_search") or {}
    evaluation = _get(stages, "measure", "summary", "evaluate_prm") or {}
    held_out = train.get("eval") or {}
    metrics = [
        Metric("AI labels stored this round", label.get("sent")),
        Metric(f"labels of {record.get('labelling_scheme_version')} on the server", label.get("labels_total")),
        Metric("training examples used", _get(train, "data", "train_examples_used")),
        Metric("held-out loss", held_out.get("loss")),
        Metric("held-out step accuracy", held_out.get("step_accuracy")),
        Metric("held-out ProcessBench F1", _get(held_out, "processbench", "f1")),
        Metric("rollouts labelled by the PRM", prm_label.get("labelled")),
    ]
    for result in beam.get("results") or []:
        metrics.append(Metric(f"beam search accuracy, N={result.get('num_beams')}", result.get("accuracy")))
    baselines = beam.get("baselines") or {}
    for name, title in (
        ("best_of_n", "best-of-N by the PRM"),
        ("weighted_best_of_n", "weighted best-of-N by the PRM"),
        ("majority_vote", "majority vote (no PRM)"),
        ("oracle", "oracle (any rollout right)"),
    ):
        if name in baselines:
            metrics.append(Metric(title, _get(baselines, name, "accuracy")))
    if evaluation:
        # Named by their reference: figures against different references are different rows, never compared.
        against = f"evaluate_prm vs {evaluation.get('reference')}"
        metrics += [
            Metric(f"{against}: F1", evaluation.get("f1")),
            Metric(f"{against}: accuracy on erroneous", evaluation.get("error_accuracy")),
            Metric(f"{against}: accuracy on correct", evaluation.get("correct_accuracy")),
            Metric(f"{against}: step agreement", evaluation.get("step_agreement")),
            Metric(f"{against}: rollouts", evaluation.get("num_rollouts")),
        ]
    return metrics


def _figure(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):  # bool is an int too
        return str(int(value))
    return f"{value:.3f}"


def _change(before: float | int | None, after: float | int | None) -> str:
    if before is None or after is None:
        return ""
    delta = after - before
    if isinstance(before, int) and isinstance(after, int) and not isinstance(delta, float):
        return f"{delta:+d}"
    return f"{delta:+.3f}"


def comparison_rows(current: dict[str, Any], previous: dict[str, Any] | None) -> Iterator[tuple[str, str, str, str]]:
    """(metric, previous, current, change) for every metric of either round, current's order first."""
    now = {m.name: m for m in round_metrics(current)}
    before = {m.name: m for m in round_metrics(previous)} if previous is not None else {}
    names = list(now) + [name for name in before if name not in now]
    for name in names:
        a = before.get(name)
        b = now.get(name)
        a_value = a.value if a is not None else None
        b_value = b.value if b is not None else None
        yield name, _figure(a_value), _figure(b_value), _change(a_value, b_value)


def comparison_table(current: dict[str, Any], previous: dict[str, Any] | None) -> str:
    """The round's metrics next to the previous round's, as a text table."""
    head_now = f"round {current['round']}"
    head_before = f"round {previous['round']}" if previous is not None else "(no earlier round)"
    rows = list(comparison_rows(current, previous))
    width = max([len("metric"), *(len(name) for name, *_ in rows)])
    columns = max(len(head_now), len(head_before), 8)
    lines = [f"{'metric':<{width}}  {head_before:>{columns}}  {head_now:>{columns}}  {'change':>8}"]
    lines += [f"{name:<{width}}  {a:>{columns}}  {b:>{columns}}  {delta:>8}" for name, a, b, delta in rows]
    return "\n".join(lines)
