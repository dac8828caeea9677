"""An AI judge's step verdicts: the JSON schema it is asked to follow, and a tolerant parser for what it answers.

Pure: no Django, no network. A verdict is one label code per step (``core.domain``: 0 not preferred, 1 preferred,
2 neutral) with a short explanation. ``parse_verdicts(text, num_steps)`` answers every step's verdict or raises
:class:`VerdictError` saying what is wrong; it never answers part of a rollout.

What the parser reads, in this order (the first complete reading wins):

1. JSON anywhere in the answer: in prose, in a code fence, after a ``<think>…</think>`` block (which is dropped), the
   last JSON value first. Trailing commas, ``//`` comments and Python-style literals (single quotes, ``True``) are
   forgiven. Shapes: ``{"steps": [{"step": 1, "explanation": "…", "label": 1}, …]}`` (the schema's; the list may
   also sit under ``verdicts``, ``labels``, ``grades``, ``judgements``, ``results``, ``evaluations``), a bare list of
   such objects, a list of codes, ``{"labels": [1, 0], "explanations": ["…", "…"]}``, or a mapping
   ``{"1": 1, "step 2": {"label": 0, "reason": "…"}}``. A code is an integer (``1``, ``1.0``, ``"1"``) or a label
   name (``"preferred"``, ``"not preferred"``, ``"neutral"``); the explanation may be called ``explanation``,
   ``reason``, ``reasoning``, ``rationale``, ``justification``, ``comment`` or ``critique``.
2. Lines such as ``Step 3: 0 — because …``, ``**Step 3** - label: 1 (preferred): …`` or ``- Step 3 (code 2) …``; an
   explanation runs on over the following lines up to a blank line or the next step. A step named on several lines
   takes its last line (an answer that restates a step before grading it is read right).

An answer is refused (``VerdictError.kind``): ``no_verdicts`` (nothing readable), ``incomplete`` (steps without a
verdict), ``wrong_steps`` (a step the rollout does not have, or more verdicts than steps), ``bad_code`` (a code other
than 0, 1, 2), ``conflict`` (one JSON answer grading a step twice, differently).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prmsite.core.domain import LABEL_CODES

VALID_CODES = frozenset(LABEL_CODES)
CODE_OF_NAME = {name: code for code, name in LABEL_CODES.items()}

# How the judge is asked for structured output (``--structured_output``).
STRUCTURED_NONE = "none"
STRUCTURED_JSON_SCHEMA = "json_schema"  # OpenAI's response_format; vLLM, SGLang, llama.cpp, Ollama accept it too
STRUCTURED_VLLM = "structured_outputs"  # vLLM >= 0.10.2: extra_body {"structured_outputs": {"json": schema}}
STRUCTURED_GUIDED_JSON = "guided_json"  # vLLM before 0.12 (and TGI-era servers): extra_body {"guided_json": schema}
STRUCTURED_OUTPUTS = (STRUCTURED_JSON_SCHEMA, STRUCTURED_VLLM, STRUCTURED_GUIDED_JSON, STRUCTURED_NONE)
SCHEMA_NAME = "step_verdicts"
DECODE_BUDGET = 4  # characters handed to the JSON decoders, per character of the answer

KIND_NO_VERDICTS = "no_verdicts"
KIND_INCOMPLETE = "incomplete"
KIND_WRONG_STEPS = "wrong_steps"
KIND_BAD_CODE = "bad_code"
KIND_CONFLICT = "conflict"

_LIST_KEYS = ("steps", "verdicts", "labels", "grades", "judgements", "judgments", "results", "evaluations", "ratings")
_STEP_KEYS = ("step", "step_number", "step_index", "index", "number", "id")
_CODE_KEYS = ("label", "verdict", "code", "grade", "score", "rating", "judgement", "judgment", "value")
_EXPLANATION_KEYS = ("explanation", "reason", "reasoning", "rationale", "justification", "comment", "critique", "why")
_EXPLANATION_LIST_KEYS = ("explanations", "reasons", "rationales", "justifications", "comments")
_STEP_NAME = re.compile(r"^\s*(?:step\s*#?\s*)?(\d+)\s*$", re.IGNORECASE)
_THINKING = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.IGNORECASE | re.DOTALL)
_UNCLOSED_THINKING = re.compile(r"^.*?</(?:think|thinking|reasoning)>", re.IGNORECASE | re.DOTALL)
_STEP_LINE = re.compile(
    r"^step\s*#?\s*(\d+)\s*"  # "Step 3"
    r"(?:[:.)(\]\[=|,\-\u2013\u2014]\s*)*"  # separators: ": ", " - ", " (", " — ", …
    r"(?:(?:label|verdict|code|grade|score|rating)\s*(?:[:=]\s*)?)?"  # an optional "label: "
    r"([-+]?\d+(?:\.0+)?)(?![\d.]*\d)"  # the code
    r"(.*)$",
    re.IGNORECASE,
)
_STEP_HEADING = re.compile(r"^step\s*#?\s*\d+", re.IGNORECASE)
_LINE_MARKUP = re.compile(r"[*_`]+")
_LINE_LEAD = re.compile(r"^\s*(?:[-+•>#]+\s*|\d+[.)]\s+)*")
_LEAD_SEPARATORS = r"[\s:;,.)\]|=\-\u2013\u2014]*"  # also en and em dashes
_LABEL_NAME = r"\((?:not preferred|preferred|neutral|correct|incorrect|wrong|good|bad)\)"  # "(preferred)"
_EXPLANATION_LEAD = re.compile(rf"^{_LEAD_SEPARATORS}(?:{_LABEL_NAME})?{_LEAD_SEPARATORS}", re.IGNORECASE)


class VerdictError(ValueError):
    """The answer cannot be used: ``kind`` is one of the ``KIND_*`` constants, the message says why in one line."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Verdicts:
    """One code (0, 1 or 2) and one explanation per step, in step order."""

    codes: tuple[int, ...]
    explanations: tuple[str, ...]
    source: str  # "json" or "lines": which reading found them


@dataclass(frozen=True)
class _Entry:
    step: int | None  # 1-based, as the judge numbered it; None: by position
    code: Any
    explanation: str


class _NotVerdicts(Exception):
    """A JSON value that is not a verdict answer (an example in prose, a fragment)."""


# --- structured output ------------------------------------------------------------------------------------------------


def verdict_schema(num_steps: int) -> dict[str, Any]:
    """The JSON schema of an answer for ``num_steps`` steps: ``{"steps": [{"step", "explanation", "label"}, …]}``.

    Explanation before label: a model decoding under the schema writes its reason before its verdict. Only keywords
    that OpenAI's strict mode, vLLM (xgrammar, guidance) and llama.cpp all accept are used."""
    item = {
        "type": "object",
        "properties": {
            "step": {"type": "integer", "minimum": 1, "maximum": num_steps},
            "explanation": {"type": "string"},
            "label": {"type": "integer", "enum": sorted(VALID_CODES)},
        },
        "required": ["step", "explanation", "label"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": item, "minItems": num_steps, "maxItems": num_steps}},
        "required": ["steps"],
        "additionalProperties": False,
    }


def structured_output_body(mode: str, num_steps: int) -> dict[str, Any]:
    """What a request adds to its JSON body to ask for :func:`verdict_schema` in ``mode`` (``{}`` for ``none``)."""
    if mode == STRUCTURED_NONE:
        return {}
    schema = verdict_schema(num_steps)
    if mode == STRUCTURED_JSON_SCHEMA:
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
            }
        }
    if mode == STRUCTURED_VLLM:
        return {"structured_outputs": {"json": schema}}
    if mode == STRUCTURED_GUIDED_JSON:
        return {"guided_json": schema}
    raise ValueError(f"structured output must be one of {', '.join(STRUCTURED_OUTPUTS)}, not {mode!r}")


# --- parsing ----------------------------------------------------------------------------------------------------------


def parse_verdicts(text: str, num_steps: int) -> Verdicts:
    """Every step's verdict in ``text`` (the module docstring says what is read), or :class:`VerdictError`."""
    if num_steps < 1:
        raise ValueError("a rollout has at least one step")
    cleaned = strip_thinking(text or "")
    problems: list[VerdictError] = []
    for value in reversed(list(json_values(cleaned))):
        try:
            entries = _entries_from_json(value, num_steps)
        except _NotVerdicts:
            continue
        try:
            return _complete(entries, num_steps, source="json", strict_duplicates=True)
        except VerdictError as exc:
            problems.append(exc)
    entries = _entries_from_lines(cleaned)
    if entries:
        try:
            return _complete(entries, num_steps, source="lines", strict_duplicates=False)
        except VerdictError as exc:
            problems.append(exc)
    if problems:
        raise problems[0]
    raise VerdictError(
        "the answer holds no readable verdicts (neither JSON nor 'Step N: code' lines)", KIND_NO_VERDICTS
    )


def strip_thinking(text: str) -> str:
    """``text`` without reasoning blocks (``<think>…</think>``, also one whose opening tag the server dropped)."""
    text = _THINKING.sub("", text)
    return _UNCLOSED_THINKING.sub("", text, count=1)


def json_values(text: str) -> Iterator[Any]:
    """Every top-level JSON object or array in ``text``, in order, forgiving trailing commas, comments and
    Python-style literals.

    One pass finds the balanced bracketed spans (brackets inside strings do not count); each span is decoded at most
    once, outermost first, and the spans inside one that decoded are not tried again. The characters handed to the
    decoders are capped at ``DECODE_BUDGET`` times the text's length, so an answer full of brackets that decode to
    nothing costs linear time, never quadratic."""
    budget = DECODE_BUDGET * len(text) + 10_000
    taken_until = 0
    for start, end in _bracket_spans(text):
        if start < taken_until:
            continue  # inside a value already read
        if end - start > budget:
            return
        budget -= end - start
        value = _loads(text[start:end])
        if value is not None:
            taken_until = end
            yield value


def _bracket_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every balanced ``{…}`` / ``[…]`` span of ``text``, by start. Inside brackets, a double quote
    opens a string, and so does a single quote where a Python literal may begin (after ``[{,:`` and spaces, not in
    a word such as "it's"); a string ends at its closing quote or at the end of its line. A closing bracket that
    matches nothing forgets the brackets open so far."""
    closing = {"{": "}", "[": "]"}
    stack: list[tuple[str, int]] = []
    spans: list[tuple[int, int]] = []
    quote = ""
    escaped = False
    previous = ""  # the last character outside strings that is not a space
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote or char == "\n":
                quote = ""
                previous = char
            continue
        if stack and (char == '"' or (char == "'" and previous != "" and previous in "[{,:")):
            quote = char
        elif char in closing:
            stack.append((closing[char], index))
        elif char in "}]":
            if stack and stack[-1][0] == char:
                spans.append((stack.pop()[1], index + 1))
            else:
                stack.clear()
        if not char.isspace():
            previous = char
    spans.sort()
    return spans


def _loads(fragment: str) -> Any:
    """A JSON object or array (or a Python literal of one) from ``fragment``; None when it is not one."""
    try:
        value = json.loads(fragment)
    except (ValueError, RecursionError):
        value = _lenient_loads(fragment)
    return value if isinstance(value, dict | list) else None


def _lenient_loads(fragment: str) -> Any:
    repaired = re.sub(r"^\s*//.*$", "", fragment, flags=re.MULTILINE)
    repaired = re.sub(r",\s*([}\]])", r"\1", repaired)
    try:
        return json.loads(repaired)
    except (ValueError, RecursionError):
        pass
    try:
        value = ast.literal_eval(repaired)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    return value


def _entries_from_json(value: Any, num_steps: int) -> list[_Entry]:
    if isinstance(value, list):
        return _entries_from_list(value)
    if not isinstance(value, dict):
        raise _NotVerdicts
    lowered = {str(k).strip().lower(): v for k, v in value.items()}
    for key in _LIST_KEYS:
        listed = lowered.get(key)
        if isinstance(listed, list) and listed:
            explanations = next((lowered[k] for k in _EXPLANATION_LIST_KEYS if isinstance(lowered.get(k), list)), None)
            entries = _entries_from_list(listed)
            if explanations is not None and len(explanations) == len(entries):
                entries = [
                    _Entry(e.step, e.code, e.explanation or _text(x))
                    for e, x in zip(entries, explanations, strict=True)
                ]
            return entries
    if any(k in lowered for k in _CODE_KEYS) and (num_steps == 1 or any(k in lowered for k in _STEP_KEYS)):
        return [_entry_from_object(lowered)]  # a single verdict
    numbered = {}
    for key, item in value.items():
        match = _STEP_NAME.match(str(key))
        if match is None:
            raise _NotVerdicts
        numbered[int(match.group(1))] = item
    if not numbered:
        raise _NotVerdicts
    entries = []
    for step, item in numbered.items():
        if isinstance(item, dict):
            entry = _entry_from_object({str(k).strip().lower(): v for k, v in item.items()})
            entries.append(_Entry(step, entry.code, entry.explanation))
        else:
            entries.append(_Entry(step, item, ""))
    return entries


def _entries_from_list(items: Sequence[Any]) -> list[_Entry]:
    if not items:
        raise _NotVerdicts
    entries = []
    for item in items:
        if isinstance(item, dict):
            entries.append(_entry_from_object({str(k).strip().lower(): v for k, v in item.items()}))
        elif isinstance(item, int | float | str) and not isinstance(item, bool):
            entries.append(_Entry(None, item, ""))
        else:
            raise _NotVerdicts
    return entries


def _entry_from_object(item: dict[str, Any]) -> _Entry:
    code_key = next((k for k in _CODE_KEYS if k in item), None)
    if code_key is None:
        raise _NotVerdicts
    step_value = next((item[k] for k in _STEP_KEYS if k in item), None)
    step = None
    if step_value is not None:
        match = _STEP_NAME.match(str(step_value)) if not isinstance(step_value, bool) else None
        if match is None:
            raise _NotVerdicts
        step = int(match.group(1))
    explanation = next((_text(item[k]) for k in _EXPLANATION_KEYS if k in item), "")
    return _Entry(step, item[code_key], explanation)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _entries_from_lines(text: str) -> list[_Entry]:
    entries: list[_Entry] = []
    explanation: list[str] = []
    current: tuple[int, str] | None = None

    def close() -> None:
        if current is not None:
            step, code = current
            entries.append(_Entry(step, code, " ".join(part for part in explanation if part).strip()))

    for raw in text.splitlines():
        line = _LINE_LEAD.sub("", _LINE_MARKUP.sub("", raw)).strip()
        match = _STEP_LINE.match(line)
        if match is not None:
            close()
            current = (int(match.group(1)), match.group(2))
            explanation = [_EXPLANATION_LEAD.sub("", match.group(3)).strip()]
        elif _STEP_HEADING.match(line):  # a step named without a code (a restated step): not an explanation
            close()
            current = None
        elif current is not None:
            if not line:
                close()
                current = None
            else:
                explanation.append(line)
    close()
    return entries


def _code(value: Any, step: int) -> int:
    """A label code from what the judge wrote; ``VerdictError`` (bad_code) for anything but 0, 1 or 2."""
    code: int | None = None
    if isinstance(value, bool):
        code = None
    elif isinstance(value, int):
        code = value
    elif isinstance(value, float) and value.is_integer():
        code = int(value)
    elif isinstance(value, str):
        stripped = value.strip().lower()
        if stripped in CODE_OF_NAME:
            return CODE_OF_NAME[stripped]
        match = re.fullmatch(r"([-+]?\d+)(?:\.0+)?", stripped)
        code = int(match.group(1)) if match else None
    if code is None or code not in VALID_CODES:
        raise VerdictError(
            f"step {step} has the code {value!r}; codes are 0 (not preferred), 1 (preferred), 2 (neutral)",
            KIND_BAD_CODE,
        )
    return code


def _complete(entries: list[_Entry], num_steps: int, *, source: str, strict_duplicates: bool) -> Verdicts:
    """Every step's verdict from ``entries``, numbered or by position; ``VerdictError`` unless all are there."""
    if any(e.step is None for e in entries):
        if len(entries) != num_steps:
            kind = KIND_INCOMPLETE if len(entries) < num_steps else KIND_WRONG_STEPS
            raise VerdictError(f"the answer has {len(entries)} verdicts for {num_steps} steps", kind)
        ordered = list(entries)
    else:
        by_step: dict[int, _Entry] = {}
        for entry in entries:
            assert entry.step is not None
            if not 1 <= entry.step <= num_steps:
                raise VerdictError(
                    f"the answer grades step {entry.step}, but the rollout has steps 1 to {num_steps}",
                    KIND_WRONG_STEPS,
                )
            earlier = by_step.get(entry.step)
            if strict_duplicates and earlier is not None and earlier.code != entry.code:
                raise VerdictError(
                    f"the answer grades step {entry.step} twice, {earlier.code!r} and {entry.code!r}", KIND_CONFLICT
                )
            by_step[entry.step] = entry
        missing = [step for step in range(1, num_steps + 1) if step not in by_step]
        if missing:
            listed = ", ".join(str(s) for s in missing[:10]) + (", …" if len(missing) > 10 else "")
            raise VerdictError(f"no verdict for step(s) {listed} of {num_steps}", KIND_INCOMPLETE)
        ordered = [by_step[step] for step in range(1, num_steps + 1)]
    codes = tuple(_code(e.code, index) for index, e in enumerate(ordered, start=1))
    return Verdicts(codes=codes, explanations=tuple(e.explanation for e in ordered), source=source)
