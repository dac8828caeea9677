"""``adapter_config.json``: a LoRA config that peft loads, whose fields have the types peft expects, and whose
regular expressions (the values peft compiles and matches with ``re``) are safe to match (``adapters.peft_patterns``).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.peft_patterns import PatternRefused, pattern_compile
from adapters.validation.folder import CONFIG_NAME
from adapters.validation.json_values import is_int, is_number, is_str_list, shorten
from prmsite.core.errors import ApplicationError

# Characters of regular expressions a config may hold beyond plain module names (compiling one costs microseconds per
# character; a rank_pattern of a few hundred layer-wise keys with anchors is a few thousand).
PATTERNS_MAX_CHARS = 65536
LORA_BIAS = frozenset({"none", "all", "lora_only"})
# A config value made of word characters, dots and dashes only: a regular expression of literals (and "." wildcards).
_PLAIN_NAME = re.compile(r"[\w.-]*")

CONFIG_NOT_JSON = f"{CONFIG_NAME} is not a JSON object: {{reason}}"
CONFIG_REJECTED = f"peft cannot load {CONFIG_NAME}: {{reason}}"
CONFIG_BAD_FIELD = f"{CONFIG_NAME}: {{field}} must be {{expected}}, got {{value!r}}."
NOT_LORA = f"{CONFIG_NAME} describes a {{peft_type}} adapter; a PRM adapter is a LoRA adapter (peft_type LORA)."
PATTERN_REFUSED = (
    f"{CONFIG_NAME}: peft reads {{field}} as a regular expression, and {{pattern!r}} is refused: {{reason}}. "
    r"Give a list of module names, or a simple pattern such as .*\.(q_proj|v_proj)."
)
PATTERNS_TOO_LONG = (
    f"{CONFIG_NAME}: its regular expressions (target_modules, modules_to_save, rank_pattern keys, …) add up to more "
    f"than {PATTERNS_MAX_CHARS} characters."
)


def pattern_refused(field: str, pattern: str, exc: PatternRefused) -> ApplicationError:
    """The refusal of a regular expression of the config that ``adapters.peft_patterns`` will not match."""
    return ApplicationError(PATTERN_REFUSED.format(field=field, pattern=shorten(pattern), reason=exc))


def _field_check(config: dict[str, Any], field: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ApplicationError(CONFIG_BAD_FIELD.format(field=field, expected=expected, value=config.get(field)))


def config_check(raw: bytes) -> dict[str, Any]:
    """The config in ``raw``, checked: peft loads it, it is a LoRA config with fields of the types peft expects,
    and every regular expression in it is one ``adapters.peft_patterns`` matches safely."""
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApplicationError(CONFIG_NOT_JSON.format(reason=exc)) from exc
    except RecursionError as exc:
        raise ApplicationError(CONFIG_NOT_JSON.format(reason="nested too deeply")) from exc
    if not isinstance(config, dict):
        raise ApplicationError(CONFIG_NOT_JSON.format(reason="not an object"))
    if not isinstance(config.get("peft_type"), str):
        raise ApplicationError(CONFIG_REJECTED.format(reason="no peft_type"))
    from peft import PeftConfig  # noqa: PLC0415 (deferred: peft is heavy (it imports torch and transformers))

    with tempfile.TemporaryDirectory(prefix="prm-adapter-") as folder:
        (Path(folder) / CONFIG_NAME).write_bytes(raw)
        try:
            # A local folder holding the file: peft reads it from disk and never goes to the hub.
            PeftConfig.from_pretrained(folder)
        except Exception as exc:  # peft raises ValueError, TypeError, KeyError… for a bad config
            raise ApplicationError(CONFIG_REJECTED.format(reason=f"{type(exc).__name__}: {exc}")) from exc
    if config["peft_type"] != "LORA":
        raise ApplicationError(NOT_LORA.format(peft_type=config["peft_type"]))
    targets = config.get("target_modules")
    _field_check(config, "r", is_int(config.get("r")) and config["r"] >= 1, "a positive integer")
    _field_check(config, "lora_alpha", is_number(config.get("lora_alpha", 8)), "a number")
    _field_check(
        config,
        "lora_dropout",
        is_number(config.get("lora_dropout", 0.0)) and 0 <= config.get("lora_dropout", 0.0) < 1,
        "a number in [0, 1)",
    )
    _field_check(config, "bias", config.get("bias", "none") in LORA_BIAS, f"one of {sorted(LORA_BIAS)}")
    _field_check(
        config,
        "target_modules",
        targets is None or isinstance(targets, str) or is_str_list(targets),
        "a list of module names or a regular expression",
    )
    saved = config.get("modules_to_save")
    _field_check(
        config,
        "modules_to_save",
        saved is None or is_str_list(saved),
        "a list of module names or null",
    )
    for field in ("exclude_modules", "layers_pattern"):
        value = config.get(field)
        _field_check(
            config,
            field,
            value is None or isinstance(value, str) or is_str_list(value),
            "a list of names, a regular expression or null",
        )
    for field in ("rank_pattern", "alpha_pattern"):
        _field_check(config, field, config.get(field) is None or isinstance(config[field], dict), "an object")
    _field_check(
        config,
        "base_model_name_or_path",
        config.get("base_model_name_or_path") is None or isinstance(config["base_model_name_or_path"], str),
        "a string or null",
    )
    compiled = 0
    for field, pattern in config_patterns(config):
        if _PLAIN_NAME.fullmatch(pattern):
            continue  # a module name, dots and all: nothing in it can repeat or nest
        compiled += len(pattern)
        if compiled > PATTERNS_MAX_CHARS:
            raise ApplicationError(PATTERNS_TOO_LONG)
        try:
            pattern_compile(pattern)
        except PatternRefused as exc:
            raise pattern_refused(field, pattern, exc) from exc
    return config


def config_patterns(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Every (field, value) of the config that peft compiles as a regular expression and matches with ``re``, so
    that none makes peft backtrack for hours wherever the adapter is loaded (each is also a prefix of a pattern peft
    builds, which a repeated group would spoil as well)."""
    for field in ("target_modules", "exclude_modules"):  # a string is a pattern; a list holds plain names
        if isinstance(config.get(field), str):
            yield field, config[field]
    layers = config.get("layers_pattern")
    for pattern in [layers] if isinstance(layers, str) else layers or []:
        yield "layers_pattern", pattern
    for pattern in config.get("modules_to_save") or []:
        yield "modules_to_save", pattern
    for field in ("rank_pattern", "alpha_pattern"):
        for pattern in config.get(field) or {}:
            yield f"a key of {field}", pattern
