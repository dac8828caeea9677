"""The tensor names of the weights against the config: every tensor is a LoRA weight of a module the config targets
(or of a module peft saves whole), A and B come in pairs, and their shapes carry the module's rank. Matching the
names against the config's patterns has a budget of steps (``TENSOR_CHECK_MAX_STEPS``)."""

from __future__ import annotations

import re
from typing import Any

from adapters.peft_patterns import PatternRefused, PatternTooCostly, pattern_compile
from adapters.validation.config import pattern_refused
from adapters.validation.folder import CONFIG_NAME, WEIGHTS_NAME
from adapters.validation.json_values import shorten
from prmsite.core.errors import ApplicationError

# Longest tensor name accepted (peft's are about 100 characters): it bounds the work each name costs.
TENSOR_NAME_MAX_CHARS = 1000
# What a tensor name may hold: printable ASCII, as module paths are (and what adapters.peft_patterns matches).
_TENSOR_NAME = re.compile(r"[\x20-\x7e]+")
# Work allowed for checking the tensor names against the config: a step is one character through a target_modules
# pattern, one name looked up in a target_modules list, or one modules_to_save entry searched for in a name. A LoRA of
# all 47,000 expert modules of a 61-layer MoE takes about 520,000 with a pattern; a hostile config stops here, after
# well under a second of CPU (about a million steps a second on a busy core).
TENSOR_CHECK_MAX_STEPS = 1_000_000
# The LoRA tensors peft saves for a targeted module (A/B pairs, embedding pairs, DoRA's magnitude, lora_bias).
_LORA_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
    r"lora_magnitude_vector)(?:\.(?P<adapter>[A-Za-z0-9_-]+))?(?:\.(?P<kind>weight|bias))?$"
)

TENSOR_NOT_LORA = (
    f"{WEIGHTS_NAME}: tensor {{name!r}} is not a LoRA weight of a module {CONFIG_NAME} targets ({{targets}})."
)
TENSOR_RANK = f"{WEIGHTS_NAME}: {{name!r}} has shape {{shape}}, which does not fit rank {{rank}} of its module."
LORA_UNPAIRED = f"{WEIGHTS_NAME}: module {{module!r}} has lora_A without lora_B or the other way round."
TENSOR_NAME_NOT_ASCII = (
    f"{WEIGHTS_NAME}: the tensor name {{name!r}} is not a module path; names are printable ASCII (torch's module "
    "names are Python identifiers joined by dots)."
)
TENSOR_NAME_TOO_LONG = (
    f"{WEIGHTS_NAME}: a tensor name of {{length}} characters; names longer than {TENSOR_NAME_MAX_CHARS} are refused."
)
TENSOR_CHECK_TOO_COSTLY = (
    f"Checking the tensor names of {WEIGHTS_NAME} against {CONFIG_NAME} takes more than {{limit}} "
    "steps; give target_modules as a list of module names or a simpler pattern, and fewer modules_to_save."
)


class StepBudget:
    """The steps left for checking tensor names (``TENSOR_CHECK_MAX_STEPS``); spending past them is refused."""

    def __init__(self, steps: int) -> None:
        self.limit = steps
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise ApplicationError(TENSOR_CHECK_TOO_COSTLY.format(limit=self.limit))


def targeted_modules(modules: set[str], targets: Any, budget: StepBudget) -> set[str]:
    """The modules among ``modules`` that peft would adapt for ``target_modules``: all of them for none or
    "all-linear", those a string matches whole (``re.fullmatch``, here run by ``adapters.peft_patterns``), or those
    equal to a listed name or ending in "." and one."""
    if targets is None or targets == "all-linear" or (isinstance(targets, list) and "all-linear" in targets):
        return set(modules)
    if isinstance(targets, str):
        try:
            pattern = pattern_compile(targets)  # refused here only when long: config_check passes plain names
        except PatternRefused as exc:
            raise pattern_refused("target_modules", targets, exc) from exc
        try:
            answers = pattern.fullmatch_all(modules, max_steps=max(budget.left, 0))
        except PatternTooCostly as exc:
            raise ApplicationError(TENSOR_CHECK_TOO_COSTLY.format(limit=budget.limit)) from exc
        budget.spend(pattern.steps)
        return {module for module, matched in answers.items() if matched}
    listed = set(targets)
    found = set()
    for module in modules:
        # module == t or module.endswith("." + t) for some listed t: the module, or what follows one of its dots
        budget.spend(1 + module.count("."))
        dot = -1
        while True:
            if module[dot + 1 :] in listed:
                found.add(module)
                break
            dot = module.find(".", dot + 1)
            if dot < 0:
                break
    return found


def lora_tensors_check(tensors: dict[str, dict[str, Any]], config: dict[str, Any]) -> tuple[str, ...]:
    """Every tensor is a LoRA weight of a targeted module (or of a module peft saves whole), A and B come in pairs,
    and their shapes carry the module's rank. At most ``TENSOR_CHECK_MAX_STEPS`` steps, whatever the config and the
    names."""
    targets = config.get("target_modules")
    saved = config.get("modules_to_save") or []
    rank_pattern = config.get("rank_pattern") or {}
    for name in tensors:
        if len(name) > TENSOR_NAME_MAX_CHARS:
            raise ApplicationError(TENSOR_NAME_TOO_LONG.format(length=len(name)))
        if not _TENSOR_NAME.fullmatch(name):
            raise ApplicationError(TENSOR_NAME_NOT_ASCII.format(name=shorten(name)))
    matches = {name: _LORA_TENSOR.match(name) for name in tensors}
    budget = StepBudget(TENSOR_CHECK_MAX_STEPS)
    targeted = targeted_modules({m["module"] for m in matches.values() if m is not None}, targets, budget)
    ranks: dict[str, dict[str, int]] = {}
    for name, entry in tensors.items():
        match = matches[name]
        if match is None or match["module"] not in targeted:
            budget.spend(len(saved))
            if any(f".{module}." in f".{name}" for module in saved):
                continue  # a module trained whole (modules_to_save): any tensor of it
            described = targets if isinstance(targets, str) else ", ".join(targets or [])
            raise ApplicationError(TENSOR_NOT_LORA.format(name=name, targets=shorten(described)))
        module, part, shape = match["module"], match["part"], entry["shape"]
        if match["kind"] == "bias" or part == "lora_magnitude_vector":
            continue
        rank_axis = {"lora_A": 0, "lora_B": 1, "lora_embedding_A": 0, "lora_embedding_B": 1}[part]
        if len(shape) < 2:
            raise ApplicationError(TENSOR_RANK.format(name=name, shape=shape, rank=config["r"]))
        ranks.setdefault(module, {})[part.replace("embedding_", "")] = shape[rank_axis]
    for module, parts in ranks.items():
        if set(parts) != {"lora_A", "lora_B"}:
            raise ApplicationError(LORA_UNPAIRED.format(module=module))
        expected = None if rank_pattern else config["r"]  # a rank pattern may give modules other ranks
        if parts["lora_A"] != parts["lora_B"] or (expected is not None and parts["lora_A"] != expected):
            raise ApplicationError(
                TENSOR_RANK.format(name=f"{module}.lora_A/B", shape=list(parts.values()), rank=expected or "?")
            )
    return tuple(tensors)
