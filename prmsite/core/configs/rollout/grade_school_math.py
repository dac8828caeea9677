"""GSM8K-style arithmetic word problems (https://huggingface.co/datasets/openai/gsm8k, subset ``main``).

The module is called ``grade_school_math`` (what GSM stands for) since config names are ``[a-z_]+``: no digits.

Items have a ``question`` and an ``answer`` whose last line is ``#### <number>``; the reference answer is that number
(thousands separators removed: ``#### 2,400`` gives ``2400``). Answers are graded as numbers (``answer_kind``
``number``), so ``72``, ``72.0`` and ``$72`` all match a reference of ``72``. Set ``GSM8K_DATASET`` (or pass
``--dataset_name``) to read another copy: a hub name, a ``save_to_disk`` folder, or a jsonl/csv/parquet file
(``{split}`` in the path picks one file per split). The model is asked to reason one step per line and to end with
``#### <number>`` as the dataset does.

Forests seeded before answer kinds existed keep the ``label`` kind stored on them (integer labels, compared as
integers), and the workers growing them keep posting integer predictions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prmsite.core.configs.interfaces import DatasetConfig
from prmsite.core.errors import ConfigError

ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)\s*$")


def gsm8k_answer(answer: str) -> str:
    """The number after ``####`` at the end of a GSM8K answer, as text without thousands separators."""
    match = ANSWER.search(answer.strip()) if isinstance(answer, str) else None
    if match is None:
        raise ConfigError(f"GSM8K answer does not end with '#### <number>': {str(answer)[-80:]!r}")
    return match.group(1).replace(",", "")


def gsm8k_label(answer: str) -> int:
    """The integer after ``####`` at the end of a GSM8K answer (the integer label of forests seeded as ``label``)."""
    number = gsm8k_answer(answer)
    try:
        return int(number)
    except ValueError:
        raise ConfigError(f"GSM8K answer {number!r} is not an integer") from None


class Config(DatasetConfig):
    dataset_name = "openai/gsm8k"
    dataset_subset = "main"
    dataset_env_var = "GSM8K_DATASET"

    answer_kind = "number"
    rollout_config_version = "gsm8k-20231101a1"
    template = (
        "Solve the following grade-school math problem. Reason step by step, one step per line, and show each "
        "calculation. End your response with a last line of the form `#### <answer>`, where <answer> is the final "
        "number only.\n\nProblem: {question}\n\n"
    )
    reasoning_delimiter_pattern = r"\n+"
    prediction_pattern = r"####\s*\$?\s*(-?[\d,]*\.?\d+)"
    sample_response = (
        "Natalia sold 48 / 2 = 24 clips in May.\nAltogether she sold 48 + 24 = 72 clips in April and May.\n#### 72"
    )

    def get_reference_answer(self, item: Mapping[str, Any]) -> str:
        return gsm8k_answer(item["answer"])
