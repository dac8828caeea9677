"""The AI step labeller's prompt: a template with named fields, rendered for each rollout. Pure: no Django.

A template is plain text (``--prompt_template PATH``; :data:`DEFAULT_TEMPLATE` otherwise) in which these fields are
replaced, each written ``{name}``:

- ``{problem}``: the rollout's prompt (its ``example``);
- ``{steps}``: the steps, each in a numbered tag (``<step number="1">…</step>``), the numbers the verdicts must use;
- ``{num_steps}``: how many steps there are;
- ``{format_instructions}``: how to answer (:data:`FORMAT_INSTRUCTIONS`: the JSON object the parser reads first);
- ``{prediction}``, ``{ground_truth}``: the rollout's predicted and true class labels (``none`` when missing);
- ``{final_answer}``: the rollout's final answer as text (a label rollout's prediction; ``none`` when missing; not
  ``{answer}``, which templates write inside ``\\boxed{answer}``);
- ``{correct}``: ``yes`` when the server's grader found the rollout correct, else ``no`` (the stored verdict; from a
  server too old to send one, the label rule of ``prmsite.core.domain``);
- ``{model}``: the model that wrote the rollout.

Every other brace is text, so JSON examples and LaTeX (``\\boxed{answer}``) need no escaping; a ``{name}`` that is no
field is sent as it is, and named in a warning when the template is read (``PromptTemplate.unknown_fields``), so a
typo does not go unnoticed. A template must hold ``{steps}``. Values are inserted in one pass: a rollout whose text
holds ``{steps}`` is not expanded again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prmsite.core.domain import rollout_is_correct

FIELDS = (
    "problem",
    "steps",
    "num_steps",
    "format_instructions",
    "prediction",
    "ground_truth",
    "final_answer",
    "correct",
    "model",
)
REQUIRED_FIELDS = ("steps",)

FORMAT_INSTRUCTIONS = """\
Answer with one JSON object and nothing else, with exactly one entry per step, from step 1 to step {num_steps}:
{"steps": [{"step": 1, "explanation": "<one short sentence>", "label": <0, 1 or 2>}, ...]}"""

DEFAULT_TEMPLATE = """\
You are grading a step-by-step solution, one step at a time.

# Problem

{problem}

# Solution, in {num_steps} steps

{steps}

# Your task

Grade every step, from step 1 to step {num_steps}, in the context of the problem and the steps before it:
- 1 (preferred): the step is correct and brings the solution closer to the right answer;
- 0 (not preferred): the step is wrong (a false statement, a wrong calculation or inference, a misreading of the \
problem) or builds on an earlier wrong step;
- 2 (neutral): the step is neither wrong nor useful (it restates, hedges or only formats).
Give each grade a short explanation: what is right or wrong in the step.

{format_instructions}
"""

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    """A template the labeller cannot use (one line saying why)."""


def render_steps(steps: list[str]) -> str:
    """The steps in numbered tags, each step's text as it is (stripped of surrounding blank lines)."""
    return "\n".join(f'<step number="{i}">\n{step.strip()}\n</step>' for i, step in enumerate(steps, start=1))


@dataclass(frozen=True)
class PromptTemplate:
    """A checked template: ``render(rollout)`` is the judge's prompt for one rollout."""

    text: str
    source: str = "the default template"

    def __post_init__(self) -> None:
        missing = [name for name in REQUIRED_FIELDS if name not in self.names]
        if missing:
            raise TemplateError(f"{self.source} lacks {{{missing[0]}}}: the judge would never see the steps")

    @property
    def names(self) -> set[str]:
        return {m.group(1) for m in _FIELD.finditer(self.text)}

    @property
    def unknown_fields(self) -> list[str]:
        """``{name}``s of the template that are no field (sent as they are): typos, or LaTeX such as ``{answer}``."""
        return sorted(self.names - set(FIELDS))

    @classmethod
    def default(cls) -> PromptTemplate:
        return cls(DEFAULT_TEMPLATE)

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        location = Path(path).expanduser()
        try:
            text = location.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"--prompt_template {path}: cannot be read ({exc})") from exc
        return cls(text, source=f"--prompt_template {path}")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fields(self, rollout: Mapping[str, Any]) -> dict[str, str]:
        """The value of every field for ``rollout`` (a rollout as ``GET /rollout`` hands it out)."""
        steps = [str(step) for step in rollout.get("reasoning") or []]
        prediction, ground_truth = rollout.get("prediction"), rollout.get("ground_truth")
        answer = rollout.get("answer", None if prediction is None else str(prediction))
        correct = rollout.get("correct")
        if not isinstance(correct, bool):
            correct = rollout_is_correct(prediction, ground_truth)
        return {
            "problem": str(rollout.get("example") or "").strip(),
            "steps": render_steps(steps),
            "num_steps": str(len(steps)),
            "format_instructions": _substitute(FORMAT_INSTRUCTIONS, {"num_steps": str(len(steps))}),
            "prediction": "none" if prediction is None else str(prediction),
            "ground_truth": "none" if ground_truth is None else str(ground_truth),
            "final_answer": "none" if answer is None else str(answer),
            "correct": "yes" if correct else "no",
            "model": str(rollout.get("model") or ""),
        }

    def render(self, rollout: Mapping[str, Any]) -> str:
        return _substitute(self.text, self.fields(rollout))


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """One pass over ``text``: each ``{name}`` of ``values`` becomes its value; everything else stays."""

    def replace(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return _FIELD.sub(replace, text)
