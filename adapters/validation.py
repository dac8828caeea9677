"""Checking an uploaded adapter zip without trusting it: no Django here, only the file on disk.

An adapter is the folder peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``,
maybe a README), zipped at its top level or inside one folder. Nothing is ever unpickled: pickle-based weight files
(``.bin``, ``.pt``, …) can run code when loaded and are refused outright.

Nothing is unpacked to disk but the config (at most 1 MiB, to a fixed name in a private folder, so member names never
become paths): the archive may unpack to no more than the upload limit itself, the weights are checked from the
safetensors header read out of the archive (every tensor's dtype, shape and byte range, which must tile the file
exactly), and the members' checksums are verified by streaming them. The config must be a LoRA config whose fields
have the types peft expects, and the tensors must be LoRA weights of the modules it targets, with matching ranks.
"""

from __future__ import annotations

import json
import math
import re
import stat
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from prmsite.errors import ApplicationError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# Suffixes of pickle-based formats (torch.save, pickle, joblib, Lightning checkpoints, numpy object arrays).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"})
# A small config file is all that adapter_config.json ever is.
CONFIG_MAX_BYTES = 1024 * 1024
# safetensors refuses headers larger than this itself.
HEADER_MAX_BYTES = 100 * 1024 * 1024
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
    """Check the zip at ``path`` is a loadable, pickle-free LoRA adapter; raise ``ApplicationError`` saying why not."""
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
            configs = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == CONFIG_NAME]
            if not configs:
                raise ApplicationError(NO_CONFIG)
            if len(configs) > 1:
                raise ApplicationError(SEVERAL_CONFIGS.format(names=", ".join(i.filename for i in configs)))
            config_info = configs[0]
            weights_name = str(PurePosixPath(config_info.filename).with_name(WEIGHTS_NAME))
            weights_info = next((i for i in infos if i.filename == weights_name), None)
            if weights_info is None:
                raise ApplicationError(NO_WEIGHTS.format(config=config_info.filename))
            if config_info.file_size > CONFIG_MAX_BYTES:
                raise ApplicationError(CONFIG_NOT_JSON.format(reason="larger than 1 MiB"))
            config = _config_check(archive.read(config_info))
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        targets is None
        or isinstance(targets, str)
        or (isinstance(targets, list) and all(isinstance(m, str) for m in targets)),
        "a list of module names or a regular expression",
    )
    saved = config.get("modules_to_save")
    _field_check(
        config,
        "modules_to_save",
        saved is None or (isinstance(saved, list) and all(isinstance(m, str) for m in saved)),
        "a list of module names or null",
    )
    for field in ("rank_pattern", "alpha_pattern"):
        _field_check(config, field, config.get(field) is None or isinstance(config[field], dict), "an object")
    _field_check(
        config,
        "base_model_name_or_path",
        config.get("base_model_name_or_path") is None or isinstance(config["base_model_name_or_path"], str),
        "a string or null",
    )
    return config


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


def _targeted(module: str, targets: Any, saved: list[str]) -> bool:
    if targets is None or targets == "all-linear" or (isinstance(targets, list) and "all-linear" in targets):
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def _lora_tensors_check(tensors: dict[str, dict[str, Any]], config: dict[str, Any]) -> tuple[str, ...]:
    """Every tensor is a LoRA weight of a targeted module (or of a module peft saves whole), A and B come in pairs,
    and their shapes carry the module's rank."""
    targets = config.get("target_modules")
    saved = config.get("modules_to_save") or []
    rank_pattern = config.get("rank_pattern") or {}
    ranks: dict[str, dict[str, int]] = {}
    for name, entry in tensors.items():
        match = _LORA_TENSOR.match(name)
        if match is None or not _targeted(match["module"], targets, saved):
            if any(f".{module}." in f".{name}" for module in saved):
                continue  # a module trained whole (modules_to_save): any tensor of it
            described = targets if isinstance(targets, str) else ", ".join(targets or [])
            raise ApplicationError(TENSOR_NOT_LORA.format(name=name, targets=described))
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
