"""The public step-labelled datasets, read into one record shape: PRM800K, ProcessBench, Math-Shepherd and our own
``stepwise`` export (TRL's stepwise supervision). Pure: no Django. ``import_dataset`` stores what this answers.

A file is read one record at a time, whatever its size: JSON lines (``.jsonl``, or any file whose first character is
not ``[``), a JSON array (``[`` first: ProcessBench's published ``gsm8k.json`` etc., read whole, up to
``MAX_ARRAY_FILE_BYTES``) or Parquet (``.parquet``, read by pyarrow a few rows at a time). Every record becomes a
``StepRecord``: the problem, its reference answer when the dataset has one, the subset it belongs to, the original
item without its steps, and its step-labelled paths (``StepPath``): the steps, one label per step in the webserver
specification's codes (``prmsite.core.domain``: 0 not preferred, 1 preferred, 2 neutral), the path's final answer
when it states one, and its correctness when the dataset states it.

A bad record (not JSON, a missing key, a value of the wrong type, a line longer than ``MAX_RECORD_BYTES``) raises
``ApplicationError`` naming its line (row, for Parquet; item, for a JSON array).

The rules of each format (the manual's page ``docs/import.md`` says the same for users):

- ``prm800k`` (OpenAI's phase files): the path is the chosen completion of each step (the labeller's own
  ``human_completion`` where none was chosen), up to the first step where the labeller chose nothing; each completion
  of that step ends a path of its own (phase 2's error step, or the alternatives the labeller rated last). The
  completions not chosen at an earlier step become sibling branches one step deep: the chosen prefix, then that
  completion (with ``alternatives=False`` they are left out). Ratings -1 / 0 / +1 read 0 / 2 / 1; a completion
  without a rating reads neutral, a human completion without one preferred (the labellers wrote +1 steps). The answer
  is what follows ``# Answer`` in the path's last step; the path is correct when it is the whole chosen trajectory of
  a solution the labeller finished with ``finish_reason`` "solution", not correct when its last step states an answer
  and is rated -1; otherwise the grader decides (``correct`` is None).
- ``processbench``: ``label`` is the index of the first wrong step or -1; the steps before it are preferred (1), the
  step at it not preferred (0), the steps after it neutral (2): ProcessBench does not label them, and a label needs
  one value per step; ``final_answer_correct`` is the path's correctness, the last ``\\boxed{}`` its answer.
- ``math_shepherd``: ``input`` holds the problem, then the steps, each followed by the tag ``ки``; ``label`` is the
  same text with ``+`` or ``-`` in each tag's place. The problem is the text before the first ``Step 1:`` (or the
  record's ``problem`` / ``prompt`` column when it has one); the path's correctness is its last step's mark (Math-
  Shepherd marks the last step by the final answer); the answer follows "The answer is" in the last step.
- ``stepwise``: ``prompt``, ``completions`` (the steps), ``labels`` (booleans, or numbers in [0, 1]: above 0.5 reads
  1, below 0.5 reads 0, 0.5 itself neutral); our export's ``prediction``, ``ground_truth`` and ``correct`` columns are
  the answer, the reference answer and the correctness.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prmsite.core.domain import LABEL_NEUTRAL, LABEL_NOT_PREFERRED, LABEL_PREFERRED
from prmsite.core.errors import ApplicationError
from prmsite.core.grading import last_boxed

PRM800K = "prm800k"
PROCESSBENCH = "processbench"
MATH_SHEPHERD = "math_shepherd"
STEPWISE = "stepwise"
FORMATS = (PRM800K, PROCESSBENCH, MATH_SHEPHERD, STEPWISE)

# A record longer than this is refused (the published ones are well under 1 MB): memory stays bounded by it.
MAX_RECORD_BYTES = 4 * 1024 * 1024
# A JSON array is read whole: files up to this size (ProcessBench's largest subset is a few MB).
MAX_ARRAY_FILE_BYTES = 512 * 1024 * 1024
PARQUET_BATCH_ROWS = 256

STEP_TAG = "ки"  # Math-Shepherd's step tag (as our math_shepherd export writes it)
GOOD_MARK, BAD_MARK = "+", "-"
FIRST_STEP = "Step 1:"
# PRM800K ratings as label codes: -1 not preferred, 0 neutral, +1 preferred.
PRM800K_RATINGS = {-1: LABEL_NOT_PREFERRED, 0: LABEL_NEUTRAL, 1: LABEL_PREFERRED}
PRM800K_SOLUTION = "solution"
PRM800K_ANSWER = re.compile(r"#\s*Answer\s*\n(.*)\Z", re.DOTALL)
SHEPHERD_ANSWER = re.compile(r"The answer is\s*:?\s*(.*)\Z", re.DOTALL | re.IGNORECASE)
# Columns that may hold a record's reference answer, first found wins; and its subset.
REFERENCE_KEYS = ("reference_answer", "ground_truth_answer", "ground_truth")
SUBSET_KEYS = ("subset", "source")

# Messages (tests import them).
AT = "{where} {number}: {problem}"
UNKNOWN_FORMAT = "unknown format {format!r}: one of {formats}"
NOT_JSON = "not JSON ({error})"
NOT_AN_OBJECT = "not a JSON object"
NOT_UTF8 = "not UTF-8 text (an invalid byte at offset {offset})"
TOO_LONG = "longer than {limit} bytes (the largest record import_dataset reads)"
NOT_A_JSON_NUMBER = "{value} is not a JSON number (NaN and Infinity are not, nor numbers beyond float range)"
MISSING = "missing key {key!r}"
WRONG_TYPE = "{key!r} must be {expected}, not {actual}"
NO_STEPS = "{key!r} holds no step"
LABEL_OUT_OF_RANGE = "'label' {label} is not -1 or the index of one of the {steps} steps"
LABELS_LENGTH = "'labels' has {labels} values but 'completions' has {steps} steps"
SOFT_LABEL_RANGE = "'labels' must hold booleans or numbers in [0, 1], not {value!r}"
RATING_UNKNOWN = "step {step}, completion {completion}: rating {rating!r} is not -1, 0, +1 or null"
CHOSEN_OUT_OF_RANGE = "step {step}: chosen_completion {chosen} is not the index of one of its {count} completions"
STEPS_AFTER_STOP = "step {step} has no chosen completion, yet steps follow it"
NO_PROBLEM_MARK = f"no {FIRST_STEP!r} before the first step tag, nor a 'problem' or 'prompt' column: cannot tell the "
NO_PROBLEM_MARK += "problem from the first step"
PROBLEM_NOT_PREFIX = "the {key!r} column is not the start of 'input'"
NO_TAG = f"'input' holds no step tag {STEP_TAG!r}"
LABEL_MISMATCH = "'label' is not 'input' with '+' or '-' in place of each step tag (they differ at step {step})"
TEXT_AFTER_LAST_TAG = "'input' has text after its last step tag"
ARRAY_TOO_LARGE = "a JSON array of {size} bytes: larger than {limit} bytes (write it as JSON lines)"
ARRAY_NOT_ARRAY = "the file starts with '[' but is not one JSON array ({error})"
PARQUET_UNREADABLE = "cannot be read as Parquet ({error})"


@dataclass(frozen=True)
class StepPath:
    """One root-to-leaf path: its steps, a label code per step, its answer and correctness when known."""

    steps: list[str]
    labels: list[int]
    answer: str | None = None
    correct: bool | None = None
    model: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)  # kept on the rollout (soft labels, alternative, …)


@dataclass(frozen=True)
class StepRecord:
    """One record of a dataset: a problem and its labelled paths (``number``: its line, row or item, from 1)."""

    number: int
    problem: str
    paths: list[StepPath]
    reference: str | None = None
    subset: str | None = None
    item: dict[str, Any] = field(default_factory=dict)  # the original record without its steps (JSON values)


class RecordError(ValueError):
    """What is wrong with one record; the reader adds where it is."""


# --- reading records ---------------------------------------------------------------------------------------------


class _NotJSONNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJSONNumber(NOT_A_JSON_NUMBER.format(value=name))


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSONNumber(NOT_A_JSON_NUMBER.format(value=text[:40]))
    return value


def _json_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotJSONNumber as exc:
        raise RecordError(str(exc)) from exc
    except (ValueError, RecursionError) as exc:
        raise RecordError(NOT_JSON.format(error=exc)) from exc


def _error(where: str, number: int, problem: str) -> ApplicationError:
    return ApplicationError(AT.format(where=where, number=number, problem=problem))


def _first_character(path: Path) -> bytes:
    with path.open("rb") as source:
        while chunk := source.read(4096):
            stripped = chunk.lstrip().lstrip(b"\xef\xbb\xbf").lstrip()
            if stripped:
                return stripped[:1]
    return b""


def raw_items(
    path: Path, *, max_record_bytes: int = MAX_RECORD_BYTES, on_bytes: Callable[[int], None] | None = None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(where, number, item)`` for each record of ``path`` ("line", "row" or "item" and its number from 1), read
    one record at a time; ``ApplicationError`` naming the first record that cannot be read."""
    if path.suffix.lower() == ".parquet":
        yield from _parquet_items(path, max_record_bytes=max_record_bytes, on_bytes=on_bytes)
    elif _first_character(path) == b"[":
        yield from _array_items(path, max_record_bytes=max_record_bytes, on_bytes=on_bytes)
    else:
        yield from _line_items(path, max_record_bytes=max_record_bytes, on_bytes=on_bytes)


def _line_items(
    path: Path, *, max_record_bytes: int, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    done = 0
    with path.open("rb") as source:
        for number in itertools.count(1):
            raw = source.readline(max_record_bytes + 1)
            if not raw:
                return
            done += len(raw)
            if on_bytes is not None:
                on_bytes(done)
            if len(raw) > max_record_bytes and not raw.endswith(b"\n"):
                raise _error("line", number, TOO_LONG.format(limit=max_record_bytes))
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise _error("line", number, NOT_UTF8.format(offset=exc.start)) from exc
            if not text.strip():
                continue
            try:
                item = _json_loads(text)
            except RecordError as exc:
                raise _error("line", number, str(exc)) from exc
            if not isinstance(item, dict):
                raise _error("line", number, NOT_AN_OBJECT)
            yield "line", number, item


def _array_items(
    path: Path, *, max_record_bytes: int, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    size = path.stat().st_size
    if size > MAX_ARRAY_FILE_BYTES:
        raise ApplicationError(ARRAY_TOO_LARGE.format(size=size, limit=MAX_ARRAY_FILE_BYTES))
    data = path.read_bytes()
    try:
        items = _json_loads(data.decode("utf-8-sig"))
    except (RecordError, UnicodeDecodeError) as exc:
        raise ApplicationError(ARRAY_NOT_ARRAY.format(error=exc)) from exc
    if not isinstance(items, list):
        raise ApplicationError(ARRAY_NOT_ARRAY.format(error="not an array"))
    if on_bytes is not None:
        on_bytes(size)
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise _error("item", number, NOT_AN_OBJECT)
        if _size_of(item, max_record_bytes) > max_record_bytes:
            raise _error("item", number, TOO_LONG.format(limit=max_record_bytes))
        yield "item", number, item


def _parquet_items(
    path: Path, *, max_record_bytes: int, on_bytes: Callable[[int], None] | None
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    import pyarrow.parquet as pq  # noqa: PLC0415 (pyarrow is heavy: only a Parquet import loads it)

    try:
        source = pq.ParquetFile(path)
        batches = source.iter_batches(batch_size=PARQUET_BATCH_ROWS)
        total = source.metadata.num_rows
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise ApplicationError(PARQUET_UNREADABLE.format(error=exc)) from exc
    number = 0
    size = path.stat().st_size
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            raise _error("row", number + 1, PARQUET_UNREADABLE.format(error=exc)) from exc
        try:
            rows = batch.to_pylist()
        except Exception:  # an invalid string somewhere in the batch: find its row
            rows = None
        for offset in range(batch.num_rows):
            number += 1
            if rows is None:
                try:
                    row = batch.slice(offset, 1).to_pylist()[0]
                except Exception as exc:
                    raise _error("row", number, PARQUET_UNREADABLE.format(error=exc)) from exc
            else:
                row = rows[offset]
            if _size_of(row, max_record_bytes) > max_record_bytes:
                raise _error("row", number, TOO_LONG.format(limit=max_record_bytes))
            yield "row", number, _json_value(row)
        if on_bytes is not None and total:
            on_bytes(int(size * number / total))


def _size_of(value: Any, limit: int) -> int:
    """About how many bytes ``value`` takes as JSON (stops counting past ``limit``)."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
            stack.extend(item.keys())
            total += 2
        elif isinstance(item, list | tuple):
            stack.extend(item)
            total += 2
        else:
            total += 8
    return total


def _json_value(value: Any) -> Any:
    """``value`` as JSON values: Parquet's dates, decimals and bytes become strings, NaN and infinities null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def records_read(
    path: Path,
    fmt: str,
    *,
    default_subset: str | None = None,
    alternatives: bool = True,
    max_record_bytes: int = MAX_RECORD_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[StepRecord]:
    """Each record of ``path`` read as format ``fmt`` (``FORMATS``); ``ApplicationError`` naming the first bad one.
    ``default_subset``: the subset of records that name none; ``alternatives``: PRM800K's unchosen completions."""
    if fmt not in FORMATS:
        raise ApplicationError(UNKNOWN_FORMAT.format(format=fmt, formats=", ".join(FORMATS)))
    parse = _PARSERS[fmt]
    for where, number, item in raw_items(path, max_record_bytes=max_record_bytes, on_bytes=on_bytes):
        try:
            record = parse(item, number, alternatives)
        except RecordError as exc:
            raise _error(where, number, str(exc)) from exc
        if record.subset is None and default_subset is not None:
            record = StepRecord(
                number=record.number,
                problem=record.problem,
                paths=record.paths,
                reference=record.reference,
                subset=default_subset,
                item=record.item,
            )
        yield record


# --- field checks ------------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _get(item: Mapping[str, Any], key: str) -> Any:
    if key not in item:
        raise RecordError(MISSING.format(key=key))
    return item[key]


def _text(item: Mapping[str, Any], key: str) -> str:
    value = _get(item, key)
    if not isinstance(value, str):
        raise RecordError(WRONG_TYPE.format(key=key, expected="a string", actual=_type_name(value)))
    return value


def _texts(item: Mapping[str, Any], key: str) -> list[str]:
    value = _get(item, key)
    if not isinstance(value, list) or not all(isinstance(step, str) for step in value):
        raise RecordError(WRONG_TYPE.format(key=key, expected="a list of strings", actual=_type_name(value)))
    if not value:
        raise RecordError(NO_STEPS.format(key=key))
    return value


def _object(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = _get(item, key)
    if not isinstance(value, dict):
        raise RecordError(WRONG_TYPE.format(key=key, expected="an object", actual=_type_name(value)))
    return value


def _optional_bool(item: Mapping[str, Any], key: str) -> bool | None:
    value = item.get(key)
    if value is not None and not isinstance(value, bool):
        raise RecordError(WRONG_TYPE.format(key=key, expected="a boolean", actual=_type_name(value)))
    return value


def _answer_text(value: Any) -> str | None:
    """An answer or reference column as text (numbers as written, booleans and containers not)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _reference(item: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys or REFERENCE_KEYS:
        if (text := _answer_text(item.get(key))) is not None:
            return text
    return None


def _subset(item: Mapping[str, Any], *extra: str) -> str | None:
    for key in (*SUBSET_KEYS, *extra):
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _without(item: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in keys}


# --- the formats -------------------------------------------------------------------------------------------------


def processbench_labels(first_wrong: int, steps: int) -> list[int]:
    """Label codes of a ProcessBench path: preferred before the first wrong step, not preferred at it, neutral after
    it (ProcessBench labels no step after the first error); all preferred when ``first_wrong`` is -1."""
    if first_wrong < 0:
        return [LABEL_PREFERRED] * steps
    return [LABEL_PREFERRED] * first_wrong + [LABEL_NOT_PREFERRED] + [LABEL_NEUTRAL] * (steps - first_wrong - 1)


def _processbench(item: dict[str, Any], number: int, alternatives: bool) -> StepRecord:
    problem = _text(item, "problem")
    steps = _texts(item, "steps")
    label = _get(item, "label")
    if isinstance(label, bool) or not isinstance(label, int):
        raise RecordError(WRONG_TYPE.format(key="label", expected="an integer", actual=_type_name(label)))
    if label < -1 or label >= len(steps):
        raise RecordError(LABEL_OUT_OF_RANGE.format(label=label, steps=len(steps)))
    correct = _optional_bool(item, "final_answer_correct")
    generator = item.get("generator")
    path = StepPath(
        steps=steps,
        labels=processbench_labels(label, len(steps)),
        answer=last_boxed("\n".join(steps)),
        correct=correct,
        model=generator if isinstance(generator, str) and generator else PROCESSBENCH,
        attributes={"record_id": item["id"]} if isinstance(item.get("id"), str | int) else {},
    )
    return StepRecord(
        number=number,
        problem=problem,
        paths=[path],
        reference=_reference(item),
        subset=_subset(item),
        item=_without(item, "steps"),
    )


def _split_tagged(text: str, key: str) -> list[str]:
    parts = text.split(STEP_TAG)
    if len(parts) < 2:
        raise RecordError(NO_TAG if key == "input" else LABEL_MISMATCH.format(step=1))
    if parts[-1].strip():
        raise RecordError(TEXT_AFTER_LAST_TAG)
    return parts[:-1]


def _math_shepherd(item: dict[str, Any], number: int, alternatives: bool) -> StepRecord:
    text = _text(item, "input")
    marked = _text(item, "label")
    segments = _split_tagged(text, "input")
    # The label is the input with a one-character mark in place of each two-character tag.
    marks: list[str] = []
    at = 0
    for index, segment in enumerate(segments, start=1):
        if marked[at : at + len(segment)] != segment or at + len(segment) >= len(marked):
            raise RecordError(LABEL_MISMATCH.format(step=index))
        mark = marked[at + len(segment)]
        if mark not in (GOOD_MARK, BAD_MARK):
            raise RecordError(LABEL_MISMATCH.format(step=index))
        marks.append(mark)
        at += len(segment) + 1
    if marked[at:] != text[at + len(segments) :]:
        raise RecordError(LABEL_MISMATCH.format(step=len(segments)))
    head = segments[0]
    problem = None
    for key in ("problem", "prompt"):
        column = item.get(key)
        if isinstance(column, str) and column.strip():
            if not text.lstrip().startswith(column.strip()):
                raise RecordError(PROBLEM_NOT_PREFIX.format(key=key))
            problem = column.strip()
            head = head.lstrip()[len(problem) :]
            break
    if problem is None:
        start = head.find(FIRST_STEP)
        if start < 0:
            raise RecordError(NO_PROBLEM_MARK)
        problem, head = head[:start].strip(), head[start:]
    steps = [head.strip(), *(segment.strip() for segment in segments[1:])]
    found = SHEPHERD_ANSWER.search(steps[-1])
    path = StepPath(
        steps=steps,
        labels=[LABEL_PREFERRED if mark == GOOD_MARK else LABEL_NOT_PREFERRED for mark in marks],
        answer=(found.group(1).strip() or None) if found else None,
        correct=marks[-1] == GOOD_MARK,
        model=MATH_SHEPHERD,
    )
    return StepRecord(
        number=number,
        problem=problem,
        paths=[path],
        reference=_reference(item),
        subset=_subset(item, "task"),
        item=_without(item, "input", "label"),
    )


SOFT_NEUTRAL = 0.5  # a stepwise soft label of exactly this reads neutral


def soft_label_code(value: float) -> int:
    """A stepwise label in [0, 1] as a code: above 0.5 preferred, below not preferred, 0.5 neutral."""
    if value > SOFT_NEUTRAL:
        return LABEL_PREFERRED
    if value < SOFT_NEUTRAL:
        return LABEL_NOT_PREFERRED
    return LABEL_NEUTRAL


def _stepwise(item: dict[str, Any], number: int, alternatives: bool) -> StepRecord:
    problem = _text(item, "prompt")
    steps = _texts(item, "completions")
    labels = _get(item, "labels")
    if not isinstance(labels, list):
        raise RecordError(WRONG_TYPE.format(key="labels", expected="a list", actual=_type_name(labels)))
    if len(labels) != len(steps):
        raise RecordError(LABELS_LENGTH.format(labels=len(labels), steps=len(steps)))
    codes: list[int] = []
    soft = False
    for value in labels:
        if isinstance(value, bool):
            codes.append(LABEL_PREFERRED if value else LABEL_NOT_PREFERRED)
        elif isinstance(value, int | float) and 0 <= value <= 1:
            codes.append(soft_label_code(float(value)))
            soft = True
        else:
            raise RecordError(SOFT_LABEL_RANGE.format(value=value))
    answer = _answer_text(item.get("answer"))
    if answer is None and isinstance(item.get("prediction"), int) and not isinstance(item.get("prediction"), bool):
        answer = str(item["prediction"])
    model = next((item[k] for k in ("model", "generator") if isinstance(item.get(k), str) and item[k]), STEPWISE)
    path = StepPath(
        steps=steps,
        labels=codes,
        answer=answer,
        correct=_optional_bool(item, "correct"),
        model=model,
        attributes={"soft_labels": [float(v) for v in labels]} if soft else {},
    )
    return StepRecord(
        number=number,
        problem=problem,
        paths=[path],
        reference=_reference(item),
        subset=_subset(item),
        item=_without(item, "completions", "labels"),
    )


def _prm800k_rating(value: Any, *, step: int, completion: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or value not in PRM800K_RATINGS:
        raise RecordError(RATING_UNKNOWN.format(step=step, completion=completion, rating=value))
    return PRM800K_RATINGS[value]


def _prm800k_completions(step: Mapping[str, Any], index: int) -> list[tuple[str, int, bool]]:
    completions = _get(step, "completions")
    if not isinstance(completions, list):
        raise RecordError(
            WRONG_TYPE.format(key=f"step {index} completions", expected="a list", actual=_type_name(completions))
        )
    found = []
    for position, completion in enumerate(completions):
        if not isinstance(completion, dict):
            raise RecordError(
                WRONG_TYPE.format(
                    key=f"step {index} completion {position}", expected="an object", actual=_type_name(completion)
                )
            )
        text = _text(completion, "text")
        code = _prm800k_rating(completion.get("rating"), step=index, completion=position, default=LABEL_NEUTRAL)
        found.append((text, code, bool(completion.get("flagged"))))
    return found


def _prm800k_human(step: Mapping[str, Any], index: int) -> tuple[str, int] | None:
    human = step.get("human_completion")
    if human is None:
        return None
    if isinstance(human, str):
        return human, LABEL_PREFERRED
    if isinstance(human, dict):
        text = _text(human, "text")
        rating = _prm800k_rating(human.get("rating"), step=index, completion=-1, default=LABEL_PREFERRED)
        return text, rating
    raise RecordError(
        WRONG_TYPE.format(
            key=f"step {index} human_completion", expected="a string, an object or null", actual=_type_name(human)
        )
    )


def _prm800k_answer(step: str) -> str | None:
    found = PRM800K_ANSWER.search(step)
    return (found.group(1).strip() or None) if found else None


def _prm800k(item: dict[str, Any], number: int, alternatives: bool) -> StepRecord:
    question = _object(item, "question")
    problem = _text(question, "problem")
    label = _object(item, "label")
    steps = _get(label, "steps")
    if not isinstance(steps, list):
        raise RecordError(WRONG_TYPE.format(key="label.steps", expected="a list", actual=_type_name(steps)))
    finish = label.get("finish_reason")
    finished = finish == PRM800K_SOLUTION
    meta = {k: item[k] for k in ("labeler", "timestamp", "generation") if k in item}
    meta["finish_reason"] = finish

    def path(texts: list[str], codes: list[int], *, alternative: bool, whole: bool) -> StepPath:
        answer = _prm800k_answer(texts[-1])
        correct = None
        if answer is not None and codes[-1] == LABEL_NOT_PREFERRED:
            correct = False
        elif whole and finished:
            correct = True
        return StepPath(
            steps=list(texts),
            labels=list(codes),
            answer=answer,
            correct=correct,
            model=PRM800K,
            attributes={**meta, "alternative": alternative},
        )

    paths: list[StepPath] = []
    texts: list[str] = []
    codes: list[int] = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise RecordError(WRONG_TYPE.format(key=f"step {index}", expected="an object", actual=_type_name(step)))
        completions = _prm800k_completions(step, index)
        chosen = step.get("chosen_completion")
        pick: tuple[str, int] | None = None
        if chosen is not None:
            if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(completions):
                raise RecordError(CHOSEN_OUT_OF_RANGE.format(step=index, chosen=chosen, count=len(completions)))
            pick = completions[chosen][:2]
        else:
            pick = _prm800k_human(step, index)
        if pick is None:  # the labeller stopped here: each completion ends a path
            if index != len(steps) - 1:
                raise RecordError(STEPS_AFTER_STOP.format(step=index))
            for text, code, _ in completions:
                paths.append(path([*texts, text], [*codes, code], alternative=len(completions) > 1, whole=False))
            break
        if alternatives:
            for position, (text, code, _) in enumerate(completions):
                if position != chosen:
                    paths.append(path([*texts, text], [*codes, code], alternative=True, whole=False))
        texts.append(pick[0])
        codes.append(pick[1])
    else:
        if texts:
            paths.append(path(texts, codes, alternative=False, whole=True))
    return StepRecord(
        number=number,
        problem=problem,
        paths=paths,
        reference=_reference(question),
        subset=_subset(item) or _subset(question),
        item={
            **_without(item, "label", "question"),
            "question": _without(question, "pre_generated_steps"),
            "label": _without(label, "steps"),
        },
    )


_PARSERS: dict[str, Callable[[dict[str, Any], int, bool], StepRecord]] = {
    PRM800K: _prm800k,
    PROCESSBENCH: _processbench,
    MATH_SHEPHERD: _math_shepherd,
    STEPWISE: _stepwise,
}
