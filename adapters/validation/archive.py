"""The zip itself: safe member names, no links, no encryption, no pickle-based files, the archive the whole file, and
only the files of one adapter folder, each what its name says."""

from __future__ import annotations

import json
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

from adapters.validation.folder import ADAPTER_FILES, CONFIG_MAX_BYTES, CONFIG_NAME, WEIGHTS_NAME
from prmsite.core.errors import ApplicationError

LOCAL_HEADER_MAGIC = b"PK\x03\x04"
END_RECORD_MAGIC = b"PK\x05\x06"
_END_RECORD_SIZE = 22  # the end-of-central-directory record without its comment
# Suffixes of pickle-based formats (torch.save, pickle, joblib, Lightning checkpoints, numpy object arrays).
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".dill", ".npy", ".npz"})

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


def member_name_check(info: zipfile.ZipInfo) -> None:
    """A member is a plain relative name, not a link, not encrypted, and not a pickle-based file."""
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


def whole_file_check(path: Path, archive: zipfile.ZipFile) -> None:
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


def config_member_find(infos: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The one ``adapter_config.json`` of the archive (which says where the adapter folder is)."""
    configs = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).name == CONFIG_NAME]
    if not configs:
        raise ApplicationError(NO_CONFIG)
    if len(configs) > 1:
        raise ApplicationError(SEVERAL_CONFIGS.format(names=", ".join(i.filename for i in configs)))
    return configs[0]


def members_check(infos: list[zipfile.ZipInfo], *, folder: PurePosixPath) -> dict[str, zipfile.ZipInfo]:
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


def text_member_check(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, json_object: bool) -> None:
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
