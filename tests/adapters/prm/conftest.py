"""Fixtures of the PRM tests: a tiny base model built in code, synthetic stepwise data, a trained adapter.

Nothing reaches a hub: ``offline_hub`` (autouse) points HF_HOME at a fresh folder and switches the hub off.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.prm.examples import StepExample, examples_from_stepwise, split_by_prompt
from adapters.prm.synthetic import synthetic_rows, tiny_base_model_save
from tests.forests.conftest import offline_hub  # noqa: F401 - autouse for every PRM test

# Settings under which the tiny model learns the synthetic task in about a second on two CPU cores.
TINY_TRAINING = {"epochs": 6, "lr": 1e-2, "lora_r": 8, "lora_alpha": 16.0, "batch_size": 16, "max_length": 256}
EVAL_FRACTION = 0.2
SEED = 0


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama and its word-level tokenizer, saved as a model folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return tiny_base_model_save(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def soft_rows() -> list[dict]:
    """150 prompts x 2 rollouts of the synthetic task, labels as soft values."""
    return synthetic_rows(prompts=150, rollouts_per_prompt=2, seed=1, soft=True)


@pytest.fixture(scope="session")
def soft_examples(soft_rows) -> list[StepExample]:
    return examples_from_stepwise(soft_rows).examples


@dataclass
class Trained:
    examples: list[StepExample]
    held_out: list[StepExample]
    result: object  # adapters.prm.training.TrainResult


@pytest.fixture(scope="session")
def trained_soft(tiny_base, soft_examples, tmp_path_factory) -> Trained:
    """The tiny model trained on soft labels (``held_out`` is the split training held out)."""
    from adapters.prm.training import TrainSettings, prm_train  # deferred: it imports torch, heavy

    settings = TrainSettings(
        base_model=str(tiny_base),
        prm_version="prm-soft",
        output_dir=tmp_path_factory.mktemp("trained") / "prm-soft",
        eval_fraction=EVAL_FRACTION,
        seed=SEED,
        device="cpu",
        **TINY_TRAINING,
    )
    result = prm_train(settings, soft_examples)
    _, held_out = split_by_prompt(soft_examples, eval_fraction=EVAL_FRACTION, seed=SEED)
    return Trained(examples=soft_examples, held_out=held_out, result=result)
