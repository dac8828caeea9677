"""Checking an uploaded adapter zip without trusting it: no Django here, only the file on disk.

An adapter is the folder peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``,
maybe a README; ``train_prm`` adds ``prm_config.json``), zipped at its top level or inside one folder, and nothing
else: any other member is refused, whatever its name, so no pickle hides under another suffix, and every member
allowed is checked for what it must be (JSON, UTF-8 text, a safetensors file). Nothing is ever unpickled:
pickle-based weight files (``.bin``, ``.pt``, …) can run code when loaded and are named in their refusal. The zip
must be the whole body: bytes before its first member (a self-extracting archive) or after its end are refused.

Nothing is unpacked to disk but the config (at most 1 MiB, to a fixed name in a private folder, so member names never
become paths): the archive may unpack to no more than the upload limit itself, the weights are checked from the
safetensors header read out of the archive (every tensor's dtype, shape and byte range, which must tile the file
exactly), and the members' checksums are verified by streaming them. The config must be a LoRA config whose fields
have the types peft expects, and the tensors must be LoRA weights of the modules it targets, with matching ranks.
The regular expressions peft reads in a config are checked and matched by ``adapters.peft_patterns`` (with RE2,
never with ``re``, whose backtracking an uploaded pattern and uploaded tensor names could make exponential), and
checking the tensor names has a budget of steps.
"""

from __future__ import annotations

import json
import math
import re
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from adapters.peft_patterns import PatternRefused, PatternTooCostly, pattern_compile
from adapters.prm.format import PRM_CONFIG_NAME
from prmsite.core.errors import ApplicationError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
README_NAME = "README.md"
# The files an adapter folder may hold: what peft's save_pretrained writes, and the PRM format train_prm adds.
ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME, README_NAME, PRM_CONFIG_NAME)
LOCAL_HEADER_MAGIC = b"PK\x03\x04"
END_RECORD_MAGIC = b"PK\x05\x06"
_END_RECORD_SIZE = 22  # the end-of-central-directory record without its comment
# Suffixes of pickle-based formats (torch.save, pickle, joblib, Lightning checkpoints, numpy object arrays).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"})
# A small config file is all that adapter_config.json ever is.
CONFIG_MAX_BYTES = 1024 * 1024
# safetensors refuses headers larger than this itself.
HEADER_MAX_BYTES = 100 * 1024 * 1024
# Longest tensor name accepted (peft's are about 100 characters): it bounds the work each name costs.
TENSOR_NAME_MAX_CHARS = 1000
# What a tensor name may hold: printable ASCII, as module paths are (and what adapters.peft_patterns matches).
_TENSOR_NAME = re.compile(r"[\x20-\x7e]+")
# Work allowed for checking the tensor names against the config: a step is one character through a target_modules
# pattern, one name looked up in a target_modules list, or one modules_to_save entry searched for in a name. A LoRA of
# all 47,000 expert modules of a 61-layer MoE takes about 520,000 with a pattern; a hostile config stops here, after
# well under a second of CPU (about a million steps a second on a busy core).
TENSOR_CHECK_MAX_STEPS = 1_000_000
# Characters of regular expressions a config may hold beyond plain module names (compiling one costs microseconds per
# character; a rank_pattern of a few hundred layer-wise keys with anchors is a few thousand).
PATTERNS_MAX_CHARS = 65536
# Bytes per element of every safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
LORA_BIAS = frozenset({"none", "all", "lora_only"})
# The LoRA tensors peft saves for a targeted module (A/B pairs, embedding pairs, DoRA's magnitude, lora_bias).
_LORA_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B|"
    r"lora_magnitude_vector)(?:\.(?P<adapter>[A-Za-z0-9_-]+))?(?:\.(?P<kind>weight|bias))?$"
)

NOT_A_ZIP = "The body is not a zip archive; send the zip of the folder peft's save_pretrained writes."
BAD_ZIP = "The zip archive is damaged: {reason}"
UNSAFE_NAME = "Unsafe member name {name!r}: absolute paths, '..', backslashes and drive letters are refused."
SYMLINK_MEMBER = "Member {name!r} is a symbolic link; links are refused."
ENCRYPTED_MEMBER = "Member {name!r} is encrypted."
PICKLED_WEIGHTS = (
    "Member {name!r} is a pickle-based file, which can run code when loaded; "
    "save the adapter with safetensors (save_pretrained(..., safe_serialization=True), the default)."
)
NOT_AN_ADAPTER_FILE = (
    "Member {name!r} is not a file of an adapter folder: an adapter zip holds "
    + ", ".join(ADAPTER_FILES)
    + " (side by side, at the top or in one folder) and nothing else."
)
DUPLICATE_MEMBER = "Member {name!r} appears more than once in the archive."
PREFIXED_ZIP = (
    "The zip archive starts {count} bytes in (a self-extracting archive, or data prepended to a zip); "
    "send the zip file itself."
)
TRAILING_DATA = "The zip archive has data after its end record; send the zip file itself."
TEXT_MEMBER_BAD = "Member {name!r} must be {kind} of at most 1 MiB: {reason}."
TOO_BIG_UNCOMPRESSED = "The archive unpacks to {size} bytes, more than the {limit} allowed."
NO_CONFIG = f"No {CONFIG_NAME} in the archive."
SEVERAL_CONFIGS = f"Several {CONFIG_NAME} in the archive ({{names}}); zip one adapter folder."
NO_WEIGHTS = f"No {WEIGHTS_NAME} beside {{config}}."
CONFIG_NOT_JSON = f"{CONFIG_NAME} is not a JSON object: {{reason}}"
CONFIG_REJECTED = f"peft cannot load {CONFIG_NAME}: {{reason}}"
CONFIG_BAD_FIELD = f"{CONFIG_NAME}: {{field}} must be {{expected}}, got {{value!r}}."
NOT_LORA = f"{CONFIG_NAME} describes a {{peft_type}} adapter; a PRM adapter is a LoRA adapter (peft_type LORA)."
WEIGHTS_REJECTED = f"safetensors cannot read {WEIGHTS_NAME}: {{reason}}"
NO_TENSORS = f"{WEIGHTS_NAME} holds no tensors."
TENSOR_NOT_LORA = (
    f"{WEIGHTS_NAME}: tensor {{name!r}} is not a LoRA weight of a module {CONFIG_NAME} targets ({{targets}})."
)
TENSOR_RANK = f"{WEIGHTS_NAME}: {{name!r}} has shape {{shape}}, which does not fit rank {{rank}} of its module."
LORA_UNPAIRED = f"{WEIGHTS_NAME}: module {{module!r}} has lora_A without lora_B or the other way round."
PATTERN_REFUSED = (
    f"{CONFIG_NAME}: peft reads {{field}} as a regular expression, and {{pattern!r}} is refused: {{reason}}. "
    r"Give a list of module names, or a simple pattern such as .*\.(q_proj|v_proj)."
)
PATTERNS_TOO_LONG = (
    f"{CONFIG_NAME}: its regular expressions (target_modules, modules_to_save, rank_pattern keys, …) add up to more "
    f"than {PATTERNS_MAX_CHARS} characters."
)
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
# A config value made of word characters, dots and dashes only: a regular expression of literals (and "." wildcards).
_PLAIN_NAME = re.compile(r"[\w.-]*")


@dataclass(frozen=True)
class AdapterArchive:
    """What a valid adapter zip holds."""

    peft_type: str
    base_model_name_or_path: str | None
    config: dict[str, Any]
    tensor_names: tuple[str, ...]


def _member_name_check(info: zipfile.ZipInfo) -> None:
    name = info.filename
    path = PurePosixPath(name)
    if name.startswith("/") or "\\" in name or ".." in path.parts or (len(name) > 1 and name[1] == ":"):
        raise ApplicationError(UNSAFE_NAME.format(name=name))
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ApplicationError(SYMLINK_MEMBER.format(name=name))
    if info.flag_bits & 0x1:
        raise ApplicationError(ENCRYPTED_MEMBER.format(name=name))
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ApplicationError(PICKLED_WEIGHTS.format(name=name))


def adapter_zip_validate(*, path: Path, max_uncompressed_bytes: int) -> AdapterArchive:
    """Check the zip at ``path`` is a loadable, pickle-free LoRA adapter and nothing more; raise ``ApplicationError``
    saying why not."""
    if not zipfile.is_zipfile(path):
        raise ApplicationError(NOT_A_ZIP)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                _member_name_check(info)
            total = sum(info.file_size for info in infos)
            if total > max_uncompressed_bytes:
                raise ApplicationError(TOO_BIG_UNCOMPRESSED.format(size=total, limit=max_uncompressed_bytes))
            _whole_file_check(path, archive)
            configs = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == CONFIG_NAME]
            if not configs:
                raise ApplicationError(NO_CONFIG)
            if len(configs) > 1:
                raise ApplicationError(SEVERAL_CONFIGS.format(names=", ".join(i.filename for i in configs)))
            config_info = configs[0]
            members = _members_check(infos, folder=PurePosixPath(config_info.filename).parent)
            weights_info = members.get(WEIGHTS_NAME)
            if weights_info is None:
                raise ApplicationError(NO_WEIGHTS.format(config=config_info.filename))
            if config_info.file_size > CONFIG_MAX_BYTES:
                raise ApplicationError(CONFIG_NOT_JSON.format(reason="larger than 1 MiB"))
            config = _config_check(archive.read(config_info))
            for name, json_object in ((README_NAME, False), (PRM_CONFIG_NAME, True)):
                if name in members:
                    _text_member_check(archive, members[name], json_object=json_object)
            tensors = _header_check(archive, weights_info)
            tensor_names = _lora_tensors_check(tensors, config)
            bad_member = archive.testzip()  # streams every member through its CRC; nothing is written
            if bad_member is not None:
                raise ApplicationError(BAD_ZIP.format(reason=f"bad CRC in {bad_member!r}"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, OSError) as exc:
        raise ApplicationError(BAD_ZIP.format(reason=exc)) from exc
    return AdapterArchive(
        peft_type=str(config.get("peft_type")),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        config=config,
        tensor_names=tensor_names,
    )


def _whole_file_check(path: Path, archive: zipfile.ZipFile) -> None:
    """The archive is the whole file: its first member at offset 0 and its end record last.

    Python's zipfile reads a zip behind any prefix (a shell script makes it a self-extracting archive, which a shell
    runs) and past any trailing data; it offsets every member by the prefix it finds, so a prefix shows as the first
    member's offset.
    """
    size = path.stat().st_size
    first = min((info.header_offset for info in archive.infolist()), default=0)
    with path.open("rb") as stream:
        head = stream.read(len(LOCAL_HEADER_MAGIC))
        # zipfile takes the last end record in the file and its comment as far as the comment's declared length.
        end = size - _END_RECORD_SIZE - len(archive.comment)
        stream.seek(max(end, 0))
        record = stream.read(_END_RECORD_SIZE)
    if first != 0:
        raise ApplicationError(PREFIXED_ZIP.format(count=first))
    if archive.infolist() and head != LOCAL_HEADER_MAGIC:
        raise ApplicationError(BAD_ZIP.format(reason="no member header at its start"))
    if end < 0 or record[:4] != END_RECORD_MAGIC or struct.unpack("<H", record[20:22])[0] != len(archive.comment):
        raise ApplicationError(TRAILING_DATA)


def _members_check(infos: list[zipfile.ZipInfo], *, folder: PurePosixPath) -> dict[str, zipfile.ZipInfo]:
    """The adapter's files by name: every member is one of ``ADAPTER_FILES`` in ``folder`` (the config's), once, or a
    folder entry on the way to it; anything else is refused, whatever its name or content."""
    allowed_folders = {f"{parent}/" for parent in (folder, *folder.parents) if str(parent) != "."}
    members: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if name in seen:
            raise ApplicationError(DUPLICATE_MEMBER.format(name=name))
        seen.add(name)
        path = PurePosixPath(name)
        if info.is_dir():
            if name not in allowed_folders:
                raise ApplicationError(NOT_AN_ADAPTER_FILE.format(name=name))
        elif path.parent != folder or path.name not in ADAPTER_FILES:
            raise ApplicationError(NOT_AN_ADAPTER_FILE.format(name=name))
        else:
            members[path.name] = info
    return members


def _text_member_check(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, json_object: bool) -> None:
    """A README or ``prm_config.json`` is what its name says (UTF-8 text without NUL, a JSON object), so that no
    pickle or archive rides along under a harmless name."""
    kind = "a JSON object" if json_object else "UTF-8 text"
    if info.file_size > CONFIG_MAX_BYTES:
        raise ApplicationError(TEXT_MEMBER_BAD.format(name=info.filename, kind=kind, reason="it is larger"))
    try:
        text = archive.read(info).decode("utf-8")
        if "\x00" in text:
            raise ValueError("it holds a NUL byte")
        if json_object and not isinstance(json.loads(text), dict):
            raise ValueError("it is not an object")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApplicationError(TEXT_MEMBER_BAD.format(name=info.filename, kind=kind, reason=reason)) from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(float(value))


def _field_check(config: dict[str, Any], field: str, ok: bool, expected: str) -> None:
    if not ok:
        raise ApplicationError(CONFIG_BAD_FIELD.format(field=field, expected=expected, value=config.get(field)))


def _config_check(raw: bytes) -> dict[str, Any]:
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
    from peft import PeftConfig

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
    _field_check(config, "r", _is_int(config.get("r")) and config["r"] >= 1, "a positive integer")
    _field_check(config, "lora_alpha", _is_number(config.get("lora_alpha", 8)), "a number")
    _field_check(
        config,
        "lora_dropout",
        _is_number(config.get("lora_dropout", 0.0)) and 0 <= config.get("lora_dropout", 0.0) < 1,
        "a number in [0, 1)",
    )
    _field_check(config, "bias", config.get("bias", "none") in LORA_BIAS, f"one of {sorted(LORA_BIAS)}")
    _field_check(
        config,
        "target_modules",
        targets is None or isinstance(targets, str) or _is_str_list(targets),
        "a list of module names or a regular expression",
    )
    saved = config.get("modules_to_save")
    _field_check(
        config,
        "modules_to_save",
        saved is None or _is_str_list(saved),
        "a list of module names or null",
    )
    for field in ("exclude_modules", "layers_pattern"):
        value = config.get(field)
        _field_check(
            config,
            field,
            value is None or isinstance(value, str) or _is_str_list(value),
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
    for field, pattern in _config_patterns(config):
        if _PLAIN_NAME.fullmatch(pattern):
            continue  # a module name, dots and all: nothing in it can repeat or nest
        compiled += len(pattern)
        if compiled > PATTERNS_MAX_CHARS:
            raise ApplicationError(PATTERNS_TOO_LONG)
        try:
            pattern_compile(pattern)
        except PatternRefused as exc:
            raise ApplicationError(PATTERN_REFUSED.format(field=field, pattern=_shorten(pattern), reason=exc)) from exc
    return config


def _config_patterns(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
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


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _header_check(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, dict[str, Any]]:
    """The tensors the safetensors member declares, after checking its header against its size: known dtypes, shapes
    of non-negative integers, and byte ranges that match the shapes and tile the data exactly. Reads the header
    only."""
    if info.file_size < 8:
        raise ApplicationError(WEIGHTS_REJECTED.format(reason="shorter than a header"))
    with archive.open(info) as stream:
        (header_size,) = struct.unpack("<Q", stream.read(8))
        if header_size > min(HEADER_MAX_BYTES, info.file_size - 8):
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"header of {header_size} bytes does not fit"))
        raw = stream.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"header is not JSON ({exc})")) from exc
    if not isinstance(header, dict):
        raise ApplicationError(WEIGHTS_REJECTED.format(reason="header is not an object"))
    header.pop("__metadata__", None)
    if not header:
        raise ApplicationError(NO_TENSORS)
    spans = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPE_BYTES:
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"tensor {name!r} has no known dtype"))
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"tensor {name!r} has a malformed shape"))
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"tensor {name!r} has malformed data_offsets"))
        begin, end = offsets
        if end - begin != math.prod(shape) * DTYPE_BYTES[entry["dtype"]] or begin < 0:
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"tensor {name!r}: its bytes do not match its shape"))
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise ApplicationError(WEIGHTS_REJECTED.format(reason="tensor byte ranges overlap or leave gaps"))
        position = end
    if position != info.file_size - 8 - header_size:
        raise ApplicationError(
            WEIGHTS_REJECTED.format(
                reason=f"tensors cover {position} bytes, the file holds {info.file_size - 8 - header_size}"
            )
        )
    return header


class _StepBudget:
    """The steps left for checking tensor names (``TENSOR_CHECK_MAX_STEPS``); spending past them is refused."""

    def __init__(self, steps: int) -> None:
        self.limit = steps
        self.left = steps

    def spend(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise ApplicationError(TENSOR_CHECK_TOO_COSTLY.format(limit=self.limit))


def _targeted_modules(modules: set[str], targets: Any, budget: _StepBudget) -> set[str]:
    """The modules among ``modules`` that peft would adapt for ``target_modules``: all of them for none or
    "all-linear", those a string matches whole (``re.fullmatch``, here run by ``adapters.peft_patterns``), or those
    equal to a listed name or ending in "." and one."""
    if targets is None or targets == "all-linear" or (isinstance(targets, list) and "all-linear" in targets):
        return set(modules)
    if isinstance(targets, str):
        try:
            pattern = pattern_compile(targets)  # refused here only when long: _config_check passes plain names
        except PatternRefused as exc:
            raise ApplicationError(
                PATTERN_REFUSED.format(field="target_modules", pattern=_shorten(targets), reason=exc)
            ) from exc
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


def _lora_tensors_check(tensors: dict[str, dict[str, Any]], config: dict[str, Any]) -> tuple[str, ...]:
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
            raise ApplicationError(TENSOR_NAME_NOT_ASCII.format(name=_shorten(name)))
    matches = {name: _LORA_TENSOR.match(name) for name in tensors}
    budget = _StepBudget(TENSOR_CHECK_MAX_STEPS)
    targeted = _targeted_modules({m["module"] for m in matches.values() if m is not None}, targets, budget)
    ranks: dict[str, dict[str, int]] = {}
    for name, entry in tensors.items():
        match = matches[name]
        if match is None or match["module"] not in targeted:
            budget.spend(len(saved))
            if any(f".{module}." in f".{name}" for module in saved):
                continue  # a module trained whole (modules_to_save): any tensor of it
            described = targets if isinstance(targets, str) else ", ".join(targets or [])
            raise ApplicationError(TENSOR_NOT_LORA.format(name=name, targets=_shorten(described)))
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
