"""Training examples of a PRM: (prompt, steps, one target and one loss weight per step). Pure: no torch, no Django.

Step labels come in three kinds, all mapped onto the probability that the step is good:

- **hard**: ``True``/``False`` or the codes 0 (not preferred) and 1 (preferred): target 0.0 or 1.0, weight 1;
- **soft**: a float in [0, 1] (a Monte-Carlo estimate: the share of rollouts through the step that reach the right
  answer): the target is the float, weight 1. ``StepExample.hardened`` rounds soft targets to 0/1 at 0.5 (what TRL
  did; 0.5 itself stays 0.5) for ``train_prm --hard_targets``; evaluation always scores against the labels as given;
- **neutral**: the code 2 of an AI labeller. Its value is ``label_code_value(2)`` = 0.5 and its loss weight is
  ``neutral_weight``: 0 (the default) *skips* the step — it stays in the text, the model reads past it, but it neither
  pulls the reward up nor down; a positive weight trains the reward towards 0.5 there, i.e. "unsure". A neutral step
  is no error for ProcessBench (its first error is the first step whose target is below 0.5).
- ``None`` (an unlabelled step) is kept in the text with weight 0.

With ``train_prm --weight_by_confidence`` each step also gets a **confidence** in [0, 1] that multiplies its loss:
one minus the width of the 95% Wilson interval of its Monte-Carlo value, as a path-based export writes it per step
(``counts``, ``ci95_lows``, ``ci95_highs``: ``prmsite.core.domain.STEP_CONFIDENCE_COLUMNS``). The interval is read,
never recomputed: the export's rule is the only one. 1 of 1 correct completions gives 1 - 0.79 = 0.21, 20 of 20 gives
0.84 and 100 of 200 gives 0.86; a step without completions (count null or 0: a person's or a judge's label) or without
an interval has confidence 1. Training then scales the confidences so that their mean over the trained steps,
weighted by the steps' weights, is 1 (``confidence_scale``): the loss keeps its scale, only its distribution moves.

A rollout's steps join back to its response (``"".join(steps)``), so steps carry their own whitespace; a ``stepwise``
export has the columns ``prompt``, ``completions`` (the steps) and ``labels`` (bools, or floats for soft labels),
and the API's labels are (rollout, ``prm_output``) pairs whose rollout gives ``example`` (the prompt) and ``reasoning``
(the steps). Examples the rules cannot read are skipped and counted by reason, never half-read.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prmsite.core.domain import (
    LABEL_NEUTRAL,
    LABEL_VALUES,
    STEP_CONFIDENCE_COLUMNS,
    STEPWISE_COLUMNS,
    label_code_value,
)

SKIP_NOT_TEXT = "prompt or steps are not text"
SKIP_NO_STEPS = "no steps"
SKIP_LENGTH_MISMATCH = "number of labels differs from the number of steps"
SKIP_BAD_LABEL = "a label is neither a bool, a code 0/1/2 nor a float in [0, 1]"
SKIP_NO_TRAINED_STEP = "no step with a positive weight"
SKIP_ROLLOUT_MISSING = "the labelled rollout no longer exists"
SKIP_BAD_CONFIDENCE = "counts or ci95 intervals are not one number (or null) per step, in [0, 1] for the intervals"
CONFIDENCE_COLUMNS_MISSING = (
    "{source} lacks the column(s) {missing} that --weight_by_confidence reads (a stepwise export of this version "
    "carries them: export it again with export_preferences --kind stepwise)"
)
NO_CONFIDENT_STEP = "--weight_by_confidence: every trained step has confidence 0 (intervals as wide as [0, 1])"


@dataclass(frozen=True)
class StepExample:
    """One rollout with a target (probability the step is good) and a loss weight per step."""

    prompt: str
    steps: tuple[str, ...]
    targets: tuple[float, ...]
    weights: tuple[float, ...]
    source: str = ""  # where it came from: "row 12", "label 345"
    confidence: tuple[float, ...] = ()  # per step, multiplies the loss (``--weight_by_confidence``); () is all 1

    def hardened(self) -> StepExample:
        """The same example with every target rounded to 0 or 1 at 0.5 (a target of exactly 0.5 stays)."""
        targets = tuple(t if t == 0.5 else float(t > 0.5) for t in self.targets)
        return replace(self, targets=targets)

    def confidences(self) -> tuple[float, ...]:
        """The confidence of every step: 1 for each when none was read."""
        return self.confidence or (1.0,) * len(self.steps)

    def step_ok(self) -> list[bool]:
        """Which steps count as right for ProcessBench: target >= 0.5 (neutral steps are no error)."""
        return [target >= 0.5 for target in self.targets]


@dataclass
class ExampleSet:
    examples: list[StepExample] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        steps = sum(len(e.steps) for e in self.examples)
        trained = sum(sum(1 for w in e.weights if w > 0) for e in self.examples)
        return {"examples": len(self.examples), "steps": steps, "trained_steps": trained, "skipped": dict(self.skipped)}


def step_target(value: Any, *, neutral_weight: float) -> tuple[float, float]:
    """(target, weight) of one step label; ``ValueError`` for anything the module docstring does not allow."""
    if value is None:
        return 0.5, 0.0
    if isinstance(value, bool):
        return (1.0 if value else 0.0), 1.0
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a step label")
    if value == LABEL_NEUTRAL:
        return label_code_value(LABEL_NEUTRAL), float(neutral_weight)
    if isinstance(value, int):
        if value not in LABEL_VALUES:
            raise ValueError(f"{value!r} is not a step label code")
        return label_code_value(value), 1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value!r} is outside [0, 1]")
    return float(value), 1.0


def _fraction(value: Any) -> float | None:
    """An interval bound: None, or a finite number in [0, 1]; ``ValueError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{value!r} is not an interval bound")
    return float(value)


def step_confidence(count: Any, low: Any, high: Any) -> float:
    """The confidence of one step's label (see the module docstring): ``1 - (high - low)``, the complement of the
    width of its 95% Wilson interval; 1 when the step has no completions (``count`` None or 0) or no interval.
    ``ValueError`` for a count that is not a whole number of 0 or more, or bounds outside [0, 1] or crossed."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int | float) or not count >= 0):
        raise ValueError(f"{count!r} is not a count")
    if count is not None and not float(count).is_integer():
        raise ValueError(f"{count!r} is not a whole count")
    low, high = _fraction(low), _fraction(high)
    if not count or low is None or high is None:
        return 1.0
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is crossed")
    return 1.0 - (high - low)


def step_confidences(steps: int, counts: Any, lows: Any, highs: Any) -> tuple[float, ...]:
    """Each step's confidence from a row's ``counts``, ``ci95_lows`` and ``ci95_highs``; a row where all three are
    null (no completions behind any step) is all 1. ``ValueError`` for lists that do not hold one entry per step."""
    if counts is None and lows is None and highs is None:
        return (1.0,) * steps
    columns = (counts, lows, highs)
    if not all(isinstance(c, list | tuple) and len(c) == steps for c in columns):
        raise ValueError("the confidence columns do not hold one entry per step")
    return tuple(step_confidence(*figures) for figures in zip(*columns, strict=True))


def confidence_scale(weights: Iterable[float], confidences: Iterable[float]) -> float:
    """The factor that makes ``confidences`` average 1 over the trained steps, weighted by their loss ``weights``:
    ``sum(w) / sum(w * c)``. Scaled so, a batch's loss ``sum(w * c * loss) / sum(w)`` keeps the scale it has without
    confidences (all 1). ``ValueError`` (``NO_CONFIDENT_STEP``) when no trained step has a positive confidence."""
    total = weighted = 0.0
    for weight, confidence in zip(weights, confidences, strict=True):
        total += weight
        weighted += weight * confidence
    if not weighted > 0:
        raise ValueError(NO_CONFIDENT_STEP)
    return total / weighted


def example_make(
    prompt: Any,
    steps: Any,
    labels: Any,
    *,
    neutral_weight: float,
    source: str = "",
    confidence: tuple[Any, Any, Any] | None = None,
) -> StepExample | str:
    """A ``StepExample``, or the reason (one of the ``SKIP_*`` constants) it cannot be made. ``confidence``: the row's
    ``(counts, ci95_lows, ci95_highs)``, read into the example's per-step confidences."""
    if not isinstance(prompt, str) or not isinstance(steps, list | tuple) or not all(isinstance(s, str) for s in steps):
        return SKIP_NOT_TEXT
    if not steps:
        return SKIP_NO_STEPS
    if not isinstance(labels, list | tuple) or len(labels) != len(steps):
        return SKIP_LENGTH_MISMATCH
    try:
        pairs = [step_target(value, neutral_weight=neutral_weight) for value in labels]
    except ValueError:
        return SKIP_BAD_LABEL
    if not any(weight > 0 for _, weight in pairs):
        return SKIP_NO_TRAINED_STEP
    confidences: tuple[float, ...] = ()
    if confidence is not None:
        try:
            confidences = step_confidences(len(steps), *confidence)
        except ValueError:
            return SKIP_BAD_CONFIDENCE
    return StepExample(
        prompt=prompt,
        steps=tuple(steps),
        targets=tuple(t for t, _ in pairs),
        weights=tuple(w for _, w in pairs),
        source=source,
        confidence=confidences,
    )


def examples_from_stepwise(
    rows: Iterable[Mapping[str, Any]], *, neutral_weight: float = 0.0, weight_by_confidence: bool = False
) -> ExampleSet:
    """Examples from the rows of a ``stepwise`` export (``prompt``, ``completions``, ``labels``; with
    ``weight_by_confidence``, also ``counts``, ``ci95_lows`` and ``ci95_highs``; other columns ignored)."""
    result = ExampleSet()
    for index, row in enumerate(rows):
        made = example_make(
            row.get("prompt"),
            row.get("completions"),
            row.get("labels"),
            neutral_weight=neutral_weight,
            source=f"row {index}",
            confidence=tuple(row.get(c) for c in STEP_CONFIDENCE_COLUMNS) if weight_by_confidence else None,
        )
        if isinstance(made, str):
            result.skipped[made] += 1
        else:
            result.examples.append(made)
    return result


def examples_from_labels(
    labels: Iterable[Mapping[str, Any]],
    rollouts: Mapping[int, Mapping[str, Any]],
    *,
    neutral_weight: float = 0.0,
) -> ExampleSet:
    """Examples from the API's labels (``GET /process_reward_label``) and the rollouts they label, by id.

    Each label is one example: a rollout labelled by several workers appears once per label, which weighs the
    labellers' votes as an average would.
    """
    result = ExampleSet()
    for label in labels:
        rollout = rollouts.get(int(label["rollout_id"]))
        if rollout is None:
            result.skipped[SKIP_ROLLOUT_MISSING] += 1
            continue
        made = example_make(
            rollout.get("example"),
            rollout.get("reasoning"),
            label.get("prm_output"),
            neutral_weight=neutral_weight,
            source=f"label {label.get('id')}",
        )
        if isinstance(made, str):
            result.skipped[made] += 1
        else:
            result.examples.append(made)
    return result


def examples_from_api(client: Any, labelling_scheme_version: str, *, neutral_weight: float = 0.0) -> ExampleSet:
    """Every label of ``labelling_scheme_version`` on the server, with its rollout (a ``PrmsiteClient``)."""
    ids = client.get_process_reward_label_ids(labelling_scheme_version)
    labels = client.get_process_reward_labels(ids) if ids else []
    rollout_ids = sorted({int(label["rollout_id"]) for label in labels})
    rollouts = {int(r["id"]): r for r in client.get_rollouts_by_ids(rollout_ids)} if rollout_ids else {}
    return examples_from_labels(labels, rollouts, neutral_weight=neutral_weight)


def split_by_prompt(
    examples: Sequence[StepExample], *, eval_fraction: float, seed: int
) -> tuple[list[StepExample], list[StepExample]]:
    """(train, held out): whole prompts go to one side, so rollouts sharing a prompt (and often their first steps)
    never straddle the split. About ``eval_fraction`` of the prompts are held out, at least one when the fraction is
    positive and there are two prompts or more; the draw depends only on ``seed`` and the set of prompts."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), not {eval_fraction}")
    prompts = sorted({e.prompt for e in examples})
    held = 0
    if eval_fraction > 0 and len(prompts) >= 2:
        held = min(len(prompts) - 1, max(1, round(eval_fraction * len(prompts))))
    random.Random(seed).shuffle(prompts)
    held_out = set(prompts[:held])
    train = [e for e in examples if e.prompt not in held_out]
    evaluation = [e for e in examples if e.prompt in held_out]
    return train, evaluation


def stepwise_dataset_read(path: str | Path, *, split: str | None = None, confidence: bool = False) -> Any:
    """A ``stepwise`` export read with ``datasets``: a jsonl/json or parquet file, or a ``save_to_disk`` folder
    (a ``DatasetDict`` needs ``split`` unless it has one split, or a ``train`` one); its ``STEPWISE_COLUMNS``, and with
    ``confidence`` its ``STEP_CONFIDENCE_COLUMNS`` too. ``ValueError`` says what is wrong: no such path, an unknown
    file type, a missing column."""
    import datasets  # noqa: PLC0415 (deferred: datasets is heavy)

    source = Path(path).expanduser()
    if not source.exists():
        raise ValueError(f"no such file or folder: {source}")
    if source.is_dir():
        loaded = datasets.load_from_disk(str(source))
        if isinstance(loaded, datasets.DatasetDict):
            names = list(loaded.keys())
            chosen = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
            if chosen not in loaded:
                raise ValueError(f"{source} holds the splits {names}; choose one with --dataset_split")
            loaded = loaded[chosen]
    else:
        suffix = source.suffix.lower()
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
        if builder is None:
            raise ValueError(f"{source}: read .jsonl, .json, .parquet files or a save_to_disk folder, not {suffix!r}")
        loaded = datasets.load_dataset(builder, data_files=str(source), split="train")
    missing = [c for c in STEPWISE_COLUMNS if c not in loaded.column_names]
    if missing:
        raise ValueError(f"{source} lacks the column(s) {missing} of a stepwise export (it has {loaded.column_names})")
    if not confidence:
        return loaded.select_columns(list(STEPWISE_COLUMNS))
    missing = [c for c in STEP_CONFIDENCE_COLUMNS if c not in loaded.column_names]
    if missing:
        raise ValueError(CONFIDENCE_COLUMNS_MISSING.format(source=source, missing=missing))
    return loaded.select_columns([*STEPWISE_COLUMNS, *STEP_CONFIDENCE_COLUMNS])
