"""``adapter_zip_validate``: every check of an uploaded adapter zip, in order (see the package's docstring)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from adapters.validation.archive import (
    BAD_ZIP,
    NO_WEIGHTS,
    NOT_A_ZIP,
    TOO_BIG_UNCOMPRESSED,
    config_member_find,
    member_name_check,
    members_check,
    text_member_check,
    whole_file_check,
)
from adapters.validation.config import CONFIG_NOT_JSON, config_check
from adapters.validation.folder import CONFIG_MAX_BYTES, PRM_CONFIG_NAME, README_NAME, WEIGHTS_NAME
from adapters.validation.safetensors_header import header_check
from adapters.validation.tensors import lora_tensors_check
from prmsite.core.errors import ApplicationError


@dataclass(frozen=True)
class AdapterArchive:
    """What a valid adapter zip holds."""

    peft_type: str
    base_model_name_or_path: str | None
    config: dict[str, Any]
    tensor_names: tuple[str, ...]


def adapter_zip_validate(*, path: Path, max_uncompressed_bytes: int) -> AdapterArchive:
    """Check the zip at ``path`` is a loadable, pickle-free LoRA adapter and nothing more; raise ``ApplicationError``
    saying why not."""
    if not zipfile.is_zipfile(path):
        raise ApplicationError(NOT_A_ZIP)
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            for info in infos:
                member_name_check(info)
            total = sum(info.file_size for info in infos)
            if total > max_uncompressed_bytes:
                raise ApplicationError(TOO_BIG_UNCOMPRESSED.format(size=total, limit=max_uncompressed_bytes))
            whole_file_check(path, archive)
            config_info = config_member_find(infos)
            members = members_check(infos, folder=PurePosixPath(config_info.filename).parent)
            weights_info = members.get(WEIGHTS_NAME)
            if weights_info is None:
                raise ApplicationError(NO_WEIGHTS.format(config=config_info.filename))
            if config_info.file_size > CONFIG_MAX_BYTES:
                raise ApplicationError(CONFIG_NOT_JSON.format(reason="larger than 1 MiB"))
            config = config_check(archive.read(config_info))
            for name, json_object in ((README_NAME, False), (PRM_CONFIG_NAME, True)):
                if name in members:
                    text_member_check(archive, members[name], json_object=json_object)
            tensors = header_check(archive, weights_info)
            tensor_names = lora_tensors_check(tensors, config)
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
