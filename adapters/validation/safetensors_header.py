"""``adapter_model.safetensors``, read from its header only: known dtypes, shapes of non-negative integers, and byte
ranges that match the shapes and tile the data exactly."""

from __future__ import annotations

import json
import math
import struct
import zipfile
from typing import Any

from adapters.validation.folder import WEIGHTS_NAME
from adapters.validation.json_values import is_int
from prmsite.core.errors import ApplicationError

# safetensors refuses headers larger than this itself.
HEADER_MAX_BYTES = 100 * 1024 * 1024
# Bytes per element of every safetensors dtype.
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip

WEIGHTS_REJECTED = f"safetensors cannot read {WEIGHTS_NAME}: {{reason}}"
NO_TENSORS = f"{WEIGHTS_NAME} holds no tensors."


def header_check(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, dict[str, Any]]:
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
        if not (isinstance(shape, list) and all(is_int(d) and d >= 0 for d in shape)):
            raise ApplicationError(WEIGHTS_REJECTED.format(reason=f"tensor {name!r} has a malformed shape"))
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)):
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
