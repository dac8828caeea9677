"""Checking an uploaded adapter zip without trusting it: no Django here, only the file on disk.

An adapter is the folder peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``,
maybe a README), zipped at its top level or inside one folder. Nothing is ever unpickled: pickle-based weight files
(``.bin``, ``.pt``, …) can run code when loaded and are refused outright; the config is read as JSON and handed to
peft's config classes; tensors are read with safetensors. Only the two needed members are extracted, each to a fixed
name in a private temporary folder, so member names never become paths.
"""

from __future__ import annotations

import json
import shutil
import stat
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
WEIGHTS_REJECTED = f"safetensors cannot read {WEIGHTS_NAME}: {{reason}}"
NO_TENSORS = f"{WEIGHTS_NAME} holds no tensors."


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


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    with archive.open(info) as source, target.open("wb") as sink:
        shutil.copyfileobj(source, sink, length=1024 * 1024)


def adapter_zip_validate(*, path: Path, max_uncompressed_bytes: int) -> AdapterArchive:
    """Check the zip at ``path`` is a loadable, pickle-free peft adapter; raise ``ApplicationError`` saying why not."""
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
            bad_member = archive.testzip()
            if bad_member is not None:
                raise ApplicationError(BAD_ZIP.format(reason=f"bad CRC in {bad_member!r}"))
            with tempfile.TemporaryDirectory(prefix="prm-adapter-") as folder:
                folder_path = Path(folder)
                _extract(archive, config_info, folder_path / CONFIG_NAME)
                _extract(archive, weights_info, folder_path / WEIGHTS_NAME)
                config = _config_check(folder_path)
                tensor_names = _weights_check(folder_path / WEIGHTS_NAME)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
        raise ApplicationError(BAD_ZIP.format(reason=exc)) from exc
    return AdapterArchive(
        peft_type=str(config.get("peft_type")),
        base_model_name_or_path=config.get("base_model_name_or_path"),
        config=config,
        tensor_names=tensor_names,
    )


def _config_check(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApplicationError(CONFIG_NOT_JSON.format(reason=exc)) from exc
    if not isinstance(config, dict):
        raise ApplicationError(CONFIG_NOT_JSON.format(reason="not an object"))
    if not isinstance(config.get("peft_type"), str):
        raise ApplicationError(CONFIG_REJECTED.format(reason="no peft_type"))
    from peft import PeftConfig

    try:
        # A local folder holding the file: peft reads it from disk and never goes to the hub.
        PeftConfig.from_pretrained(str(folder))
    except Exception as exc:  # peft raises ValueError, TypeError, KeyError… for a bad config
        raise ApplicationError(CONFIG_REJECTED.format(reason=f"{type(exc).__name__}: {exc}")) from exc
    return config


def _weights_check(weights: Path) -> tuple[str, ...]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as tensors:
            names = tuple(tensors.keys())
            for name in names:
                tensors.get_tensor(name)  # reads every byte range the header promises
    except Exception as exc:  # safetensors raises SafetensorError, OSError, … for a bad file
        raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"{type(exc).__name__}: {exc}")) from exc
    if not names:
        raise ApplicationError(NO_TENSORS)
    return names
