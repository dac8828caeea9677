"""MATH-style competition problems (default: https://huggingface.co/datasets/HuggingFaceH4/MATH-500, split ``test``).

Items have a ``problem`` and a ``solution`` whose final answer is in ``\\boxed{…}``, and/or an ``answer`` (MATH-500,
PRM800K and most re-releases carry both; the original MATH has ``solution`` only). The reference answer is
``answer`` when the item has a non-empty one, else the content of the last ``\\boxed{…}`` of ``solution`` (balanced
braces: ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``). Answers are graded by equivalence (``answer_kind``
``math``: Hugging Face's math-verify, so ``0.5``, ``\\frac12`` and ``\\dfrac{1}{2}`` are the same answer).

The model is asked to reason step by step with a blank line between steps (the shape of PRM800K and ProcessBench
steps; ``reasoning_delimiter_pattern`` cuts before every blank line) and to give the final answer in ``\\boxed{}``.
``prediction_pattern`` is empty on purpose: the answer is then the response's last ``\\boxed{…}`` read with balanced
braces (``prmsite.core.grading.extract_answer``), which no regular expression can do for nested braces.

Set ``MATH_DATASET`` (or pass ``--dataset_name``) to read another copy: a hub name, a ``save_to_disk`` folder, or a
jsonl/csv/parquet file (``{split}`` in the path picks one file per split).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prmsite.core.configs.interfaces import DatasetConfig
from prmsite.core.errors import ConfigError
from prmsite.core.grading import AnswerSpec, extract_answer

MATH_SPEC = AnswerSpec(kind="math")


def math_reference_answer(item: Mapping[str, Any]) -> str:
    """The reference answer of a MATH-style item: its ``answer``, else the last ``\\boxed{…}`` of its ``solution``."""
    answer = item.get("answer")
    if answer is not None and not isinstance(answer, bool | dict | list) and str(answer).strip():
        return str(answer).strip()
    solution = item.get("solution")
    boxed = extract_answer(solution, MATH_SPEC) if isinstance(solution, str) else None
    if boxed:
        return boxed
    fields = ", ".join(sorted(map(str, item))) or "none"
    raise ConfigError(
        f"item has neither an 'answer' nor a \\boxed{{}} answer in its 'solution' (item fields: {fields})"
    )


class Config(DatasetConfig):
    dataset_name = "HuggingFaceH4/MATH-500"
    dataset_env_var = "MATH_DATASET"

    answer_kind = "math"
    rollout_config_version = "math-boxed-v1"
    template = (
        "Solve the following math problem. Reason step by step and put a blank line between consecutive steps, so "
        "that each step is a paragraph of its own. Write mathematics in LaTeX. End your response with the final "
        "answer alone in \\boxed{{}}, for example \\boxed{{\\frac{{3}}{{4}}}}.\n\nProblem: {problem}\n\n"
    )
    reasoning_delimiter_pattern = r"\n\s*\n"
    prediction_pattern = ""  # the last \boxed{…} of the response (see the module docstring)
    sample_response = (
        "The two sides are $x$ and $2x$, and the perimeter is $2(x + 2x) = 6x = 18$.\n\n"
        "So $x = 3$ and the sides are $3$ and $6$.\n\n"
        "The ratio of the short side to the long side is $\\frac{3}{6} = \\frac{1}{2}$.\n\n"
        "The answer is $\\boxed{\\frac{1}{2}}$."
    )

    def get_reference_answer(self, item: Mapping[str, Any]) -> str:
        return math_reference_answer(item)
