"""Checking an experiment config on the first items of a split, as ``verify_rollout_config`` shows it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from prmsite.core.answers import parse_prediction
from prmsite.core.configs.interfaces import (
    RolloutConfig,
    check_generation_settings,
    check_label,
    check_reference_answer,
    check_serialized,
    template_fields,
)
from prmsite.core.errors import ConfigError
from prmsite.core.grading import AnswerSpec, Verdict, extract_answer, grade
from prmsite.core.steps import split_steps

ERROR_NO_ITEMS = "split {split!r} has no items"


@dataclass(frozen=True)
class VerifiedExample:
    index: int
    serialized_item: dict[str, Any]
    root_prompt: str
    reference_answer: str
    label: int | None = None  # label kind only


@dataclass(frozen=True)
class VerifyReport:
    config_name: str
    rollout_config: dict[str, Any]
    examples: list[VerifiedExample]
    sample_response: str
    answer_spec: AnswerSpec = field(default_factory=AnswerSpec)
    steps: list[str] = field(default_factory=list)
    prediction: int | None = None  # label kind: the integer the prediction pattern reads
    answer: str | None = None  # the final answer extracted from the sample response, as the worker posts it
    verdict: Verdict = field(default_factory=lambda: Verdict(False, "no answer"))  # against item #0's reference

    def lossless(self) -> bool:
        return "".join(self.steps) == self.sample_response


def config_verify(
    *, config: RolloutConfig, dataset_split: str, num_examples: int = 1, sample_response: str | None = None
) -> VerifyReport:
    """Run every method of ``config`` on the first ``num_examples`` items and its patterns on a sample response.

    The sample response's final answer is extracted as a worker does (``extract_answer``: the prediction pattern, or
    the last ``\\boxed{…}`` for ``math``) and graded against the first item's reference answer.

    Raises :class:`ConfigError` with one clear line at the first problem: patterns that do not compile, a bad answer
    kind, a template naming a field the item lacks, a label that is not an ``int``, a reference answer that is not
    usable text, an item that JSON cannot hold, a method that fails.
    """
    check_generation_settings(config)
    try:
        items = config.get_dataset_iterator(dataset_split)
        first = list(itertools.islice(iter(items), max(1, num_examples)))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"get_dataset_iterator raised {type(exc).__name__}: {exc}") from exc
    if not first:
        raise ConfigError(ERROR_NO_ITEMS.format(split=dataset_split))
    examples = [_verify_item(config, item, index) for index, item in enumerate(first)]
    response = config.sample_response if sample_response is None else sample_response
    spec = config.answer_spec()
    pattern = config.prediction_pattern or None
    answer = extract_answer(response, spec, pattern)
    return VerifyReport(
        config_name=config.config_name,
        rollout_config=config.get_rollout_config(),
        examples=examples,
        sample_response=response,
        answer_spec=spec,
        steps=split_steps(response, config.reasoning_delimiter_pattern),
        prediction=parse_prediction(response, config.prediction_pattern) if spec.kind == "label" else None,
        answer=answer,
        verdict=grade(answer, examples[0].reference_answer, spec),
    )


def _verify_item(config: RolloutConfig, item: Any, index: int) -> VerifiedExample:
    def call(method_name: str) -> Any:
        try:
            return getattr(config, method_name)(item)
        except ConfigError as exc:
            raise ConfigError(f"item #{index}: {method_name}: {exc.message}") from exc
        except KeyError as exc:
            missing = _missing_template_fields(config, item) if method_name == "get_root_prompt" else []
            if missing:
                raise ConfigError(
                    f"item #{index}: {method_name}: template names field(s) {', '.join(map(repr, missing))} that the "
                    f"item lacks (item fields: {', '.join(sorted(map(str, item)))})"
                ) from exc
            raise ConfigError(f"item #{index}: {method_name} raised KeyError: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"item #{index}: {method_name} raised {type(exc).__name__}: {exc}") from exc

    serialized = call("serialize_dataset_item")
    try:
        check_serialized(serialized)
        prompt = call("get_root_prompt")
        if not isinstance(prompt, str):
            raise ConfigError(f"get_root_prompt must return a str, got {type(prompt).__name__}")
        if config.answer_spec().kind == "label":
            label: int | None = check_label(call("get_label"))
            reference = str(label)
        else:
            label = None
            reference = check_reference_answer(call("get_reference_answer"))
    except ConfigError as exc:
        raise ConfigError(exc.message if exc.message.startswith("item #") else f"item #{index}: {exc.message}") from exc
    return VerifiedExample(
        index=index, serialized_item=serialized, root_prompt=prompt, reference_answer=reference, label=label
    )


def _missing_template_fields(config: RolloutConfig, item: Any) -> list[str]:
    try:
        return [field for field in template_fields(config.template) if field not in item]
    except (ConfigError, TypeError):
        return []
