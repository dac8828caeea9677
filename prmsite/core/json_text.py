"""JSON text of Arrow columns, built column by column with numpy and Arrow's string kernels. Pure: no Django.

Two styles, each reproducing a writer byte for byte:

- ``LINES``: what ``datasets``' ``Dataset.to_json(lines=True, force_ascii=False)`` writes through pandas' ujson:
  no spaces, floats as ujson prints them with ``double_precision=10`` (NaN and infinities as ``null``), ``/``
  escaped as ``\\/``;
- ``DUMPS``: what ``json.dumps(value, ensure_ascii=False)`` writes: ``", "`` and ``": "`` between items, floats as
  their ``repr`` (infinities as ``Infinity``).

Both escape ``"``, ``\\`` and the control characters U+0000 to U+001F (``\\b \\t \\n \\f \\r``, the others as
``\\u00xx``) and write every other character as it is, in UTF-8. Floats are printed by the writers themselves, once
per distinct value of a column. ``json_lines`` writes a record batch as JSON lines; ``json_lines_supported`` says
whether it knows every column type of a schema (strings, integers, floats, booleans, lists of those, and JSON text
already written in the ``LINES`` style).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _lines_floats(values: np.ndarray) -> list[str]:
    from pandas.io.json import ujson_dumps  # noqa: PLC0415 (deferred: pandas is heavy; only LINES floats need it)

    return ujson_dumps(values, double_precision=10)[1:-1].split(",")


def _dumps_floats(values: np.ndarray) -> list[str]:
    return json.dumps(values.tolist())[1:-1].split(", ")


@dataclass(frozen=True)
class JsonStyle:
    name: str
    item_separator: str
    key_separator: str
    escape_slash: bool
    floats: Callable[[np.ndarray], list[str]]  # the text of each float of a non-empty array without NaN


LINES = JsonStyle("lines", ",", ":", True, _lines_floats)
DUMPS = JsonStyle("dumps", ", ", ": ", False, _dumps_floats)

_NULL = "null"
NO_JSON_TEXT = "no JSON text for Arrow type {type}"
# How JSON writes each character it escapes (both writers alike; "/" only in the LINES style).
_ESCAPES = {0x5C: "\\\\", 0x22: '\\"', 0x2F: "\\/", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_ESCAPES.update({byte: f"\\u{byte:04x}" for byte in range(0x20) if byte not in _ESCAPES})


def _escaped(strings: pa.Array, escape_slash: bool) -> pa.Array:
    """``strings`` (a ``string`` array) with the characters JSON escapes escaped.

    In UTF-8 every byte below 0x80 is an ASCII character, so the characters present are found by comparing the bytes
    of the data buffer (numpy), and only those are replaced, each by one pass of Arrow's ``replace_substring``;
    backslashes first, since the other escapes add some.
    """
    data_buffer = strings.buffers()[2]
    if data_buffer is None or len(strings) == 0:
        return strings
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    present = [byte for byte in (0x5C, 0x22, 0x2F) if (escape_slash or byte != 0x2F) and (data == byte).any()]
    controls = data < 0x20
    if controls.any():
        present += np.unique(data[controls]).tolist()
    for byte in present:
        strings = pc.replace_substring(strings, chr(byte), _ESCAPES[byte])
    return strings


def _strings(array: pa.Array) -> pa.Array:
    return array if array.type == pa.string() else array.cast(pa.string())


def string_values(strings: pa.Array, style: JsonStyle) -> pa.Array:
    """Each string as a JSON string (quoted, escaped); null as ``null``."""
    quoted = pc.binary_join_element_wise('"', _escaped(_strings(strings), style.escape_slash), '"', "")
    return pc.fill_null(quoted, _NULL) if strings.null_count else quoted


def int_values(integers: pa.Array) -> pa.Array:
    text = pc.cast(integers, pa.string())
    return pc.fill_null(text, _NULL) if integers.null_count else text


def bool_values(booleans: pa.Array) -> pa.Array:
    text = pc.if_else(booleans, "true", "false")
    return pc.fill_null(text, _NULL) if booleans.null_count else text


def float_values(floats: pa.Array | np.ndarray, style: JsonStyle) -> pa.Array:
    """Each float as ``style``'s writer prints it; null and NaN as ``null``.

    Distinct values (told apart by their bits, so ``-0.0`` keeps its sign where the writer prints it) are printed
    once each and gathered back.
    """
    if isinstance(floats, pa.Array):
        floats = floats.to_numpy(zero_copy_only=False)  # nulls become NaN
    values = np.asarray(floats, dtype=np.float64)
    present = ~np.isnan(values)
    encoded = pc.dictionary_encode(pa.array(values[present].view(np.int64)))  # hashed, not sorted
    distinct = encoded.dictionary.to_numpy().view(np.float64)
    texts = style.floats(distinct) if distinct.size else []
    gather = np.full(values.size, len(texts), dtype=np.int64)
    gather[present] = encoded.indices.to_numpy()
    return pa.array([*texts, _NULL], type=pa.string()).take(pa.array(gather))


def _scalar_kind(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_boolean(arrow_type):
        return "bool"
    return None


def _is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)


def json_values(array: pa.Array, style: JsonStyle) -> pa.Array:
    """Each value of ``array`` as JSON text (see the module docstring for the types); ``TypeError`` for others."""
    kind = _scalar_kind(array.type)
    if kind == "string":
        return string_values(array, style)
    if kind == "int":
        return int_values(array)
    if kind == "float":
        return float_values(array, style)
    if kind == "bool":
        return bool_values(array)
    if _is_list(array.type) and _scalar_kind(array.type.value_type) is not None:
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy()
        offsets = np.zeros(len(array) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = json_values(pc.list_flatten(array), style)
        joined = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), items), style.item_separator)
        text = pc.binary_join_element_wise("[", joined, "]", "")
        return pc.if_else(pc.is_null(array), _NULL, text) if array.null_count else text
    raise TypeError(NO_JSON_TEXT.format(type=array.type))


def json_lines_supported(schema: pa.Schema, raw: Collection[str] = ()) -> bool:
    """Whether ``json_lines`` writes every column of ``schema`` (``raw``: columns holding JSON text already)."""
    for field in schema:
        arrow_type = field.type
        if field.name in raw:
            continue
        if _is_list(arrow_type):
            arrow_type = arrow_type.value_type
        if _scalar_kind(arrow_type) is None:
            return False
    return True


def object_pieces(members: Sequence[tuple[str, Any]], style: JsonStyle) -> list[Any]:
    """The pieces of JSON objects, for ``pc.binary_join_element_wise``: ``{"key": value, ...`` without the ``}``.

    ``members`` are (key, JSON text) pairs; a JSON text is an array (one per object) or one string for them all.
    """
    pieces: list[Any] = []
    for i, (key, text) in enumerate(members):
        pieces.append(("{" if i == 0 else style.item_separator) + _key(key, style) + style.key_separator)
        pieces.append(text)
    return pieces


@functools.lru_cache(maxsize=256)
def _key(name: str, style: JsonStyle) -> str:
    return string_values(pa.array([name], type=pa.string()), style)[0].as_py()


def joined(pieces: Sequence[Any]) -> pa.Array:
    """The pieces (arrays of one length and strings) joined row by row."""
    return pc.binary_join_element_wise(*pieces, "")


def json_lines(batch: pa.RecordBatch, raw: Collection[str] = ()) -> pa.Array:
    """Each record of ``batch`` as a line of JSON (``LINES`` style, ending in ``\\n``), columns in schema order.

    Columns named in ``raw`` hold JSON text already (strings or Arrow's JSON extension), written as they are.
    """
    members = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if field.name in raw:
            text = _strings(column.storage if isinstance(column, pa.ExtensionArray) else column)
            members.append((field.name, pc.fill_null(text, _NULL) if text.null_count else text))
        else:
            members.append((field.name, json_values(column, LINES)))
    return joined([*object_pieces(members, LINES), "}\n"])


def _offsets(text: pa.Array) -> np.ndarray:
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets_buffer = text.buffers()[1]
    width = np.dtype(offset_type).itemsize
    return np.frombuffer(offsets_buffer, dtype=offset_type, count=len(text) + 1, offset=text.offset * width)


def grouped(text: pa.Array, bounds: np.ndarray) -> pa.Array:
    """One string per group: strings ``bounds[i]`` to ``bounds[i + 1] - 1`` of ``text`` (no nulls) one after another.

    The groups share ``text``'s data buffer: only the offsets are new.
    """
    offsets = _offsets(text)
    return pa.Array.from_buffers(
        text.type, len(bounds) - 1, [None, pa.py_buffer(offsets[bounds].copy()), text.buffers()[2]], null_count=0
    )


def text_bytes(text: pa.Array) -> memoryview:
    """The UTF-8 bytes of every string of ``text`` one after another (``text`` without nulls)."""
    data_buffer = text.buffers()[2]
    bounds = _offsets(text)
    if data_buffer is None:
        return memoryview(b"")
    return memoryview(data_buffer)[int(bounds[0]) : int(bounds[-1])]
