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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prmsite.core.domain import LABEL_NEUTRAL, LABEL_VALUES, STEPWISE_COLUMNS, label_code_value

SKIP_NOT_TEXT = "prompt or steps are not text"
SKIP_NO_STEPS = "no steps"
SKIP_LENGTH_MISMATCH = "number of labels differs from the number of steps"
SKIP_BAD_LABEL = "a label is neither a bool, a code 0/1/2 nor a float in [0, 1]"
SKIP_NO_TRAINED_STEP = "no step with a positive weight"
SKIP_ROLLOUT_MISSING = "the labelled rollout no longer exists"


@dataclass(frozen=True)
class StepExample:
    """One rollout with a target (probability the step is good) and a loss weight per step."""

    prompt: str
    steps: tuple[str, ...]
    targets: tuple[float, ...]
    weights: tuple[float, ...]
    source: str = ""  # where it came from: "row 12", "label 345"

    def hardened(self) -> StepExample:
        """The same example with every target rounded to 0 or 1 at 0.5 (a target of exactly 0.5 stays)."""
        targets = tuple(t if t == 0.5 else float(t > 0.5) for t in self.targets)
        return StepExample(
            prompt=self.prompt, steps=self.steps, targets=targets, weights=self.weights, source=self.source
        )

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


def example_make(
    prompt: Any,
    steps: Any,
    labels: Any,
    *,
    neutral_weight: float,
    source: str = "",
) -> StepExample | str:
    """A ``StepExample``, or the reason (one of the ``SKIP_*`` constants) it cannot be made."""
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
    return StepExample(
        prompt=prompt,
        steps=tuple(steps),
        targets=tuple(t for t, _ in pairs),
        weights=tuple(w for _, w in pairs),
        source=source,
    )


def examples_from_stepwise(rows: Iterable[Mapping[str, Any]], *, neutral_weight: float = 0.0) -> ExampleSet:
    """Examples from the rows of a ``stepwise`` export (``prompt``, ``completions``, ``labels``; other columns
    ignored)."""
    result = ExampleSet()
    for index, row in enumerate(rows):
        made = example_make(
            row.get("prompt"),
            row.get("completions"),
            row.get("labels"),
            neutral_weight=neutral_weight,
            source=f"row {index}",
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


def stepwise_dataset_read(path: str | Path, *, split: str | None = None) -> Any:
    """A ``stepwise`` export read with ``datasets``: a jsonl/json or parquet file, or a ``save_to_disk`` folder
    (a ``DatasetDict`` needs ``split`` unless it has one split, or a ``train`` one). ``ValueError`` says what is
    wrong: no such path, an unknown file type, a missing column."""
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
    return loaded.select_columns(list(STEPWISE_COLUMNS))
