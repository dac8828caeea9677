"""The interface every experiment config implements, and a base for configs that read a ``datasets`` dataset.

A config answers four questions about a dataset (which items, the prompt of an item, its reference answer, a
JSON-safe copy of it for the forest pages) and carries the generation settings of the rollout-generator template JSON
(``template``, ``reasoning_delimiter_pattern``, ``prediction_pattern``, ``rollout_config_version``) and its answer
kind (``answer_kind``, ``answer_tolerance``: see :mod:`prmsite.core.grading`), which seeding stores on the forest so a
worker can run from the forest's name alone.

The reference answer depends on the kind. ``label`` (the default, integer class labels): the config implements
``get_label(item) -> int``; the reference answer is ``str(get_label(item))`` and the root keeps the integer as its
``ground_truth``. Any other kind (``number``, ``math``, ``text``): the config implements
``get_reference_answer(item) -> str`` and ``get_label`` is not used.
"""

from __future__ import annotations

import abc
import datetime as dt
import decimal
import json
import os
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from prmsite.core.configs.data import load_split
from prmsite.core.errors import ConfigError
from prmsite.core.grading import ANSWER_MAX_CHARS, DEFAULT_ANSWER_KIND, AnswerSpec

# Abstract methods every config implements; the method giving the reference answer depends on the answer kind
# (see :func:`missing_methods`).
REQUIRED_METHODS = ("get_dataset_iterator", "get_root_prompt")
LABEL_METHOD = "get_label"
REFERENCE_METHOD = "get_reference_answer"
GENERATION_SETTINGS = ("rollout_config_version", "template", "reasoning_delimiter_pattern", "prediction_pattern")

# A response used to show what the patterns do when a config gives none of its own.
DEFAULT_SAMPLE_RESPONSE = (
    "<u>Step 1: Understanding the statement</u>\nThe statement makes one claim.\n"
    "<u>Step 2: Checking the claim</u>\nThe claim does not hold.\n"
    "<u>Verdict: False (code: 0)</u>"
)


class RolloutConfig(abc.ABC):
    """Base class of every experiment config (a module's class ``Config``).

    Subclasses implement the two abstract methods and, for the ``label`` answer kind, ``get_label``; for another
    kind, ``get_reference_answer``. ``serialize_dataset_item`` has a default that keeps the item's JSON-safe fields.
    The class attributes are the generation settings of the rollout-generator template JSON and the answer kind.
    """

    rollout_config_version: ClassVar[str] = ""
    template: ClassVar[str] = ""
    reasoning_delimiter_pattern: ClassVar[str] = ""
    prediction_pattern: ClassVar[str] = ""
    # A response to run the patterns on in ``verify_rollout_config`` (a config may give one typical of its task).
    sample_response: ClassVar[str] = DEFAULT_SAMPLE_RESPONSE
    # How answers are compared with the reference (prmsite.core.grading.ANSWER_KINDS) and, for numbers, how closely.
    answer_kind: ClassVar[str] = DEFAULT_ANSWER_KIND
    answer_tolerance: ClassVar[float | None] = None  # None: the grader's default

    # Set by the loader: the name the config was loaded by, and the file it came from.
    config_name: str = ""
    source_path: str = ""

    @abc.abstractmethod
    def get_dataset_iterator(self, split: str) -> Iterable[Mapping[str, Any]]:
        """The items of ``split``, in a stable order. A sized iterable (``len()``) gets a progress bar with a total."""

    @abc.abstractmethod
    def get_root_prompt(self, item: Mapping[str, Any]) -> str:
        """The prompt of the tree grown for ``item``: the text of its root."""

    def get_label(self, item: Mapping[str, Any]) -> int:
        """The ground-truth class label of ``item``, an ``int`` comparable with parsed predictions (``label`` kind
        only: a config of that kind must implement it)."""
        raise ConfigError(f"config {self.config_name!r} (answer_kind {self.answer_kind!r}) has no get_label")

    def get_reference_answer(self, item: Mapping[str, Any]) -> str:
        """The reference answer of ``item`` as text, which the grader compares answers with. For the ``label`` kind,
        ``str(get_label(item))``; a config of any other kind must implement it."""
        if self.answer_kind == "label":
            return str(check_label(self.get_label(item)))
        raise ConfigError(
            f"config {self.config_name!r} (answer_kind {self.answer_kind!r}) does not implement get_reference_answer"
        )

    def answer_spec(self) -> AnswerSpec:
        """The answer kind and tolerance as the grader takes them; :class:`ConfigError` naming the key if bad."""
        return answer_spec_of(self.answer_kind, self.answer_tolerance)

    def serialize_dataset_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A JSON-safe copy of ``item``, stored on the root and shown on the forest pages."""
        return {str(key): json_safe(value) for key, value in item.items()}

    def get_rollout_config(self) -> dict[str, Any]:
        """The generation settings a worker needs, as stored on ``Forest.rollout_config``."""
        settings = {key: getattr(self, key) for key in GENERATION_SETTINGS}
        settings.update(self.answer_spec().as_settings())
        settings["config_name"] = self.config_name
        return settings

    def format_template(self, item: Mapping[str, Any]) -> str:
        """``template`` with ``{field}`` placeholders filled from ``item`` (``str.format`` syntax, as the workers use).

        Raises :class:`ConfigError` naming the field when the template names a field the item lacks.
        """
        missing = [field for field in template_fields(self.template) if field not in item]
        if missing:
            raise ConfigError(
                f"template names field(s) {', '.join(repr(f) for f in missing)} that the item lacks "
                f"(item fields: {', '.join(sorted(map(str, item))) or 'none'})"
            )
        try:
            return self.template.format_map(item)
        except (IndexError, KeyError, ValueError, AttributeError) as exc:
            raise ConfigError(f"template cannot be filled from the item: {exc!r}") from exc


class DatasetConfig(RolloutConfig):
    """A config whose items come from ``datasets``: a hub name or a local path (see :func:`load_split`).

    ``dataset_name`` is the default location; the environment variable named by ``dataset_env_var`` overrides it,
    and so does the ``dataset_name`` argument (``--dataset_name`` on the commands). The root prompt is ``template``
    filled with the item's fields.
    """

    dataset_name: ClassVar[str] = ""
    dataset_subset: ClassVar[str | None] = None
    dataset_env_var: ClassVar[str] = ""

    def __init__(self, *, dataset_name: str | None = None) -> None:
        self._dataset_name_override = dataset_name or None

    @property
    def dataset_location(self) -> str:
        from_env = os.environ.get(self.dataset_env_var, "").strip() if self.dataset_env_var else ""
        location = self._dataset_name_override or from_env or self.dataset_name
        if not location:
            raise ConfigError(f"config {self.config_name!r} names no dataset: pass --dataset_name")
        return location

    def get_dataset_iterator(self, split: str) -> Iterable[Mapping[str, Any]]:
        return load_split(self.dataset_location, split, subset=self.dataset_subset, base_dir=self.source_dir)

    def get_root_prompt(self, item: Mapping[str, Any]) -> str:
        return self.format_template(item)

    def get_rollout_config(self) -> dict[str, Any]:
        settings = super().get_rollout_config()
        settings["dataset_name"] = self.dataset_location
        return settings

    @property
    def source_dir(self) -> str | None:
        return os.path.dirname(self.source_path) if self.source_path else None


def template_fields(template: str) -> list[str]:
    """The top-level field names a ``str.format`` template refers to (``{a.b}`` and ``{a[0]}`` count as ``a``)."""
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"template is not a valid str.format template: {exc}") from exc
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise ConfigError("template uses positional placeholders ({} or {0}); name the item field instead")
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if name not in fields:
            fields.append(name)
    return fields


def compile_pattern(name: str, pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a :class:`ConfigError` that names the setting and the regex error."""
    if not isinstance(pattern, str) or pattern == "":
        raise ConfigError(f"{name} must be a non-empty regular expression")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} does not compile: {exc}") from exc


def answer_spec_of(kind: object, tolerance: object = None) -> AnswerSpec:
    """The :class:`AnswerSpec` of a config's ``answer_kind`` and ``answer_tolerance`` (``None``: the default)."""
    settings: dict[str, Any] = {"answer_kind": kind}
    if tolerance is not None:
        settings["answer_tolerance"] = tolerance
    return AnswerSpec.from_settings(settings)


def prediction_pattern_optional(kind: str) -> bool:
    """Whether a config of this answer kind may leave ``prediction_pattern`` empty: ``math`` answers are then read
    from the response's last ``\\boxed{…}`` (balanced braces, which no regular expression matches)."""
    return kind == "math"


def missing_methods(cls: type) -> list[str]:
    """The methods a config class must implement and does not: the abstract ones, and the one giving the reference
    answer of its answer kind (``get_label`` for ``label``, ``get_reference_answer`` otherwise)."""
    abstract = getattr(cls, "__abstractmethods__", ())
    missing = [method for method in REQUIRED_METHODS if method in abstract]
    kind = getattr(cls, "answer_kind", DEFAULT_ANSWER_KIND)
    needed = LABEL_METHOD if kind == "label" else REFERENCE_METHOD
    if getattr(cls, needed, None) is getattr(RolloutConfig, needed):
        missing.append(needed)
    return missing


def check_generation_settings(config: RolloutConfig) -> None:
    """Raise :class:`ConfigError` unless the config's template, both patterns and its answer kind are usable (the
    prediction pattern may be empty for the ``math`` kind)."""
    spec = config.answer_spec()
    if not isinstance(config.template, str) or not config.template.strip():
        raise ConfigError("template must be a non-empty string")
    template_fields(config.template)
    compile_pattern("reasoning_delimiter_pattern", config.reasoning_delimiter_pattern)
    if prediction_pattern_optional(spec.kind) and config.prediction_pattern == "":
        return
    prediction = compile_pattern("prediction_pattern", config.prediction_pattern)
    if prediction.groups > 1:
        raise ConfigError(
            f"prediction_pattern {config.prediction_pattern!r} has {prediction.groups} groups; "
            "use one group around the answer (or none: the whole match is the answer)"
        )


def check_label(label: object) -> int:
    """``label`` as an ``int``, or a :class:`ConfigError` (booleans and floats are refused: labels are classes)."""
    if isinstance(label, bool) or not isinstance(label, int):
        if isinstance(label, np.integer):
            return int(label)
        raise ConfigError(f"get_label must return an int, got {type(label).__name__} {label!r}")
    return int(label)


def check_reference_answer(answer: object) -> str:
    """``answer`` if it is a usable reference answer (a non-empty ``str`` the grader will read), else a
    :class:`ConfigError` saying what is wrong with it."""
    if not isinstance(answer, str):
        raise ConfigError(f"get_reference_answer must return a str, got {type(answer).__name__} {answer!r}")
    if not answer.strip():
        raise ConfigError("the reference answer is empty")
    if len(answer) > ANSWER_MAX_CHARS:
        raise ConfigError(
            f"the reference answer is longer than {ANSWER_MAX_CHARS} characters ({len(answer)}): the grader would "
            "never grade against it"
        )
    return answer


def json_safe(value: Any) -> Any:
    """``value`` in a form ``json.dumps`` accepts (dates as ISO strings, bytes as a length, unknowns as ``str``)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)  # numpy arrays
    if callable(tolist):
        return json_safe(tolist())
    return str(value)


def check_serialized(serialized: object) -> dict[str, Any]:
    """Raise :class:`ConfigError` unless ``serialize_dataset_item`` returned a JSON-serialisable dict."""
    if not isinstance(serialized, dict):
        raise ConfigError(f"serialize_dataset_item must return a dict, got {type(serialized).__name__}")
    try:
        json.dumps(serialized)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"serialize_dataset_item returned something JSON cannot hold: {exc}") from exc
    return serialized
