"""Finding and loading experiment configs by name.

A name is either

- a module name matching ``[a-z_]+``: the module ``<name>.py`` (class ``Config``) or the template JSON
  ``<name>.json``, looked up in the built-in package ``prmsite/core/configs/rollout/`` and in every folder of
  ``EXPERIMENT_CONFIG_DIRS``. A name found in more than one place is an error (rename one): a team's
  folder never silently shadows a built-in config, nor the other way round.
- a path to a template JSON file of the rollout-generator format (``path/to/template.json``).

Modules outside the project are loaded from their file with ``importlib`` (``sys.path`` is left alone), so they
may import installed packages and ``prmsite.core.configs`` but not their sibling files.

A template JSON holds the four generation settings and says where its dataset is::

    {"rollout_config_version": "…", "template": "… {statement} …",
     "reasoning_delimiter_pattern": "…", "prediction_pattern": "code: ([-0-1]+)",
     "dataset_name": "data/liar_{split}.jsonl",   # or --dataset_name
     "dataset_subset": null,                      # optional: the hub subset
     "answer_kind": "label",                      # optional: label (default), number, math or text
     "answer_tolerance": 1e-6,                    # optional: relative tolerance of number (and numeric math) answers
     "label_field": "label",                      # optional, default "label": the item's field holding the reference
     "label_map": {"true": 1, "false": 0}}        # optional, label kind only: label value (as a string) -> int

For the ``label`` kind the reference is the item's ``label_field`` as an ``int`` (through ``label_map`` when given);
for the other kinds it is that field's value as text (``"3/4"``, ``7`` read as ``"7"``). ``prediction_pattern`` may be
empty (or left out) for the ``math`` kind: the answer is then the response's last ``\\boxed{…}``. A bad value of
any key is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prmsite.core.configs.interfaces import (
    GENERATION_SETTINGS,
    DatasetConfig,
    RolloutConfig,
    answer_spec_of,
    check_label,
    missing_methods,
    prediction_pattern_optional,
)
from prmsite.core.errors import ConfigError

CONFIG_NAME = re.compile(r"^[a-z_]+$")
BUILTIN_PACKAGE = "prmsite.core.configs.rollout"
BUILTIN_DIR = Path(__file__).resolve().parent / "rollout"

ERROR_BAD_NAME = "config name {name!r} must match [a-z_]+ (a module name) or be a path to a template .json file"
ERROR_NOT_FOUND = "no experiment config named {name!r} (looked in: {places})"
ERROR_AMBIGUOUS = "experiment config {name!r} is defined in more than one place: {paths}; rename one"
ERROR_NO_CLASS = "{path} defines no class named Config"
ERROR_NOT_SUBCLASS = "{path}: Config must subclass prmsite.core.configs.interfaces.RolloutConfig"
ERROR_MISSING_METHODS = "{path}: Config does not implement {methods}"


@dataclass(frozen=True)
class ConfigLocation:
    """Where a config lives: its name, its file, and whether it is a module or a template JSON."""

    name: str
    path: Path
    kind: str  # "module" or "template_json"
    builtin: bool


class TemplateJsonConfig(DatasetConfig):
    """A config made of a rollout-generator template JSON file (see the module docstring for its keys)."""

    def __init__(self, *, path: Path, data: Mapping[str, Any], dataset_name: str | None = None) -> None:
        super().__init__(dataset_name=dataset_name)
        try:
            spec = answer_spec_of(data.get("answer_kind", "label"), data.get("answer_tolerance"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}") from exc
        self.answer_kind = spec.kind
        self.answer_tolerance = spec.tolerance if data.get("answer_tolerance") is not None else None
        optional = {"prediction_pattern"} if prediction_pattern_optional(spec.kind) else set()
        missing = [key for key in GENERATION_SETTINGS if key not in data and key not in optional]
        if missing:
            raise ConfigError(f"{path}: template JSON lacks {', '.join(missing)}")
        for key in GENERATION_SETTINGS:
            if not isinstance(data.get(key, ""), str):
                raise ConfigError(f"{path}: {key} must be a string")
        self.rollout_config_version = data["rollout_config_version"]
        self.template = data["template"]
        self.reasoning_delimiter_pattern = data["reasoning_delimiter_pattern"]
        self.prediction_pattern = data.get("prediction_pattern", "")
        self.dataset_name = str(data.get("dataset_name") or "")
        self.dataset_subset = data.get("dataset_subset") or None
        label_field = data.get("label_field", "label")
        if not isinstance(label_field, str) or not label_field:
            raise ConfigError(f"{path}: label_field must be the name of an item field (a non-empty string)")
        self.label_field = label_field
        label_map = data.get("label_map") or {}
        if not isinstance(label_map, dict):
            raise ConfigError(f"{path}: label_map must be an object mapping label values to ints")
        if label_map and spec.kind != "label":
            raise ConfigError(f"{path}: label_map applies to answer_kind 'label' only, not {spec.kind!r}")
        try:
            self.label_map = {str(k): check_label(v) for k, v in label_map.items()}
        except ConfigError as exc:
            raise ConfigError(f"{path}: label_map: {exc.message}") from exc
        if isinstance(data.get("sample_response"), str):
            self.sample_response = data["sample_response"]

    def _reference_value(self, item: Mapping[str, Any]) -> Any:
        if self.label_field not in item:
            raise ConfigError(
                f"item has no label field {self.label_field!r} (item fields: {', '.join(sorted(map(str, item)))})"
            )
        return item[self.label_field]

    def get_label(self, item: Mapping[str, Any]) -> int:
        if self.answer_kind != "label":
            return super().get_label(item)
        value = self._reference_value(item)
        if self.label_map:
            key = str(value)
            if key not in self.label_map:
                raise ConfigError(f"label {value!r} is not in label_map ({', '.join(self.label_map)})")
            return self.label_map[key]
        return check_label(value)

    def get_reference_answer(self, item: Mapping[str, Any]) -> str:
        if self.answer_kind == "label":
            return super().get_reference_answer(item)
        value = self._reference_value(item)
        if value is None or isinstance(value, bool | dict | list):
            raise ConfigError(f"field {self.label_field!r} holds {value!r}, not a reference answer (text or a number)")
        return str(value).strip()


CONFIG_DIRS_ENV = "EXPERIMENT_CONFIG_DIRS"


def config_dirs() -> list[Path]:
    """The extra config folders listed in the ``EXPERIMENT_CONFIG_DIRS`` environment variable (separated by ':' like
    PATH; the server's settings read the same variable), as given, missing ones included. Read at each call, so the
    server, the workers and the commands see the same folders without Django."""
    raw = os.environ.get(CONFIG_DIRS_ENV, "").strip()
    return [Path(d.strip()).expanduser() for d in raw.split(os.pathsep) if d.strip()]


def config_discover() -> list[ConfigLocation]:
    """Every config that can be loaded by name, built-ins first, sorted by name within each folder."""
    found: list[ConfigLocation] = []
    for folder, builtin in [(BUILTIN_DIR, True), *[(d, False) for d in config_dirs()]]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in {".py", ".json"} or not CONFIG_NAME.match(path.stem) or path.stem.startswith("_"):
                continue
            kind = "module" if path.suffix == ".py" else "template_json"
            found.append(ConfigLocation(name=path.stem, path=path, kind=kind, builtin=builtin))
    return found


def config_locate(name: str) -> ConfigLocation:
    """The one place config ``name`` lives (a name, or a path to a template JSON)."""
    if name.endswith(".json") or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        if path.suffix != ".json":
            raise ConfigError(ERROR_BAD_NAME.format(name=name))
        if not path.is_file():
            raise ConfigError(f"template JSON {name!r} does not exist")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)
        return ConfigLocation(name=stem, path=path.resolve(), kind="template_json", builtin=False)
    if not CONFIG_NAME.match(name) or name.startswith("_"):
        raise ConfigError(ERROR_BAD_NAME.format(name=name))
    matches = [location for location in config_discover() if location.name == name]
    if not matches:
        places = ", ".join(str(p) for p in [BUILTIN_DIR, *config_dirs()])
        raise ConfigError(ERROR_NOT_FOUND.format(name=name, places=places))
    if len(matches) > 1:
        raise ConfigError(ERROR_AMBIGUOUS.format(name=name, paths=", ".join(str(m.path) for m in matches)))
    return matches[0]


def config_load(name: str, *, dataset_name: str | None = None) -> RolloutConfig:
    """An instance of the config called ``name``, checked to implement the interface.

    ``dataset_name`` overrides where a dataset-reading config (built-ins, template JSON) reads its items from.
    Raises :class:`ConfigError` with one clear line when the config cannot be found or is incomplete.
    """
    location = config_locate(name)
    if location.kind == "template_json":
        try:
            data = json.loads(location.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{location.path}: not a readable JSON file: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{location.path}: a template JSON must hold an object")
        config: RolloutConfig = TemplateJsonConfig(path=location.path, data=data, dataset_name=dataset_name)
    else:
        config = _instantiate(_config_class(location), location, dataset_name=dataset_name)
    config.config_name = location.name
    config.source_path = str(location.path)
    return config


def _config_class(location: ConfigLocation) -> type:
    if location.builtin:
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{location.name}")
    else:
        digest = hashlib.sha256(str(location.path.parent).encode()).hexdigest()[:12]
        module_name = f"prmsite_experiment_configs_{digest}.{location.name}"
        spec = importlib.util.spec_from_file_location(module_name, location.path)
        if spec is None or spec.loader is None:  # pragma: no cover - only for non-.py paths
            raise ConfigError(f"{location.path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look a class's module up here
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"{location.path} fails to import: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, "Config", None)
    if not isinstance(cls, type):
        raise ConfigError(ERROR_NO_CLASS.format(path=location.path))
    if not issubclass(cls, RolloutConfig):
        raise ConfigError(ERROR_NOT_SUBCLASS.format(path=location.path))
    try:
        answer_spec_of(getattr(cls, "answer_kind", "label"), getattr(cls, "answer_tolerance", None))
    except ConfigError as exc:
        raise ConfigError(f"{location.path}: {exc.message}") from exc
    missing = missing_methods(cls)
    if missing:
        raise ConfigError(ERROR_MISSING_METHODS.format(path=location.path, methods=", ".join(missing)))
    return cls


def _instantiate(cls: type, location: ConfigLocation, *, dataset_name: str | None) -> RolloutConfig:
    try:
        if issubclass(cls, DatasetConfig):
            return cls(dataset_name=dataset_name)
        if dataset_name:
            raise ConfigError(f"{location.path}: Config reads its own dataset; --dataset_name does not apply")
        return cls()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{location.path}: Config() fails: {type(exc).__name__}: {exc}") from exc


def config_source(config: RolloutConfig) -> str:
    """The source text of the file the config came from (the module, or the template JSON)."""
    return Path(config.source_path).read_text(encoding="utf-8")
