"""``prmsite.core.json_text``: JSON text of Arrow columns, byte for byte what pandas' and Python's writers give."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pytest
from pandas.io.json import ujson_dumps

from prmsite.core.json_text import (
    DUMPS,
    LINES,
    float_values,
    json_lines,
    json_lines_supported,
    json_values,
    text_bytes,
)

# Every character JSON escapes, the one pandas alone escapes (/), and characters written as they are.
ALPHABET = [chr(c) for c in range(0x80)] + ["é", "中", "🙂", "\u2028", "\u2029", "ки", "\x7f"]


def random_strings(count: int, seed: int = 5) -> list[str | None]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 30))) for _ in range(count)] + ["", None]


@pytest.mark.parametrize(
    ("style", "dump"),
    [
        (LINES, lambda s: ujson_dumps(s, ensure_ascii=False)),
        (DUMPS, lambda s: json.dumps(s, ensure_ascii=False)),
    ],
)
def test_strings_are_escaped_as_each_writer_escapes_them(style, dump):
    strings = random_strings(3000)
    expected = [dump(s) if s is not None else "null" for s in strings]
    array = pa.array(strings, type=pa.string())
    assert json_values(array, style).to_pylist() == expected
    assert json_values(array.slice(7, 500), style).to_pylist() == expected[7:507]
    assert json_values(array.cast(pa.large_string()), style).to_pylist() == expected


def test_each_character_is_escaped_as_the_writers_escape_it():
    characters = [chr(c) for c in [*range(0x3000), 0xFEFF, 0xFFFD, 0xFFFF, 0x1F642, 0x10FFFF]]
    array = pa.array(characters, type=pa.string())
    assert json_values(array, LINES).to_pylist() == [ujson_dumps(c, ensure_ascii=False) for c in characters]
    assert json_values(array, DUMPS).to_pylist() == [json.dumps(c, ensure_ascii=False) for c in characters]


def test_floats_are_printed_by_the_writers_themselves():
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            rng.random(1000),
            rng.random(200) * 10.0 ** rng.integers(-25, 25, 200),
            [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-20, 1e22, 2 / 3, 0.99999999995, 5e-324],
        ]
    )
    assert float_values(values, DUMPS).to_pylist() == [json.dumps(v) if v == v else "null" for v in values.tolist()]
    assert float_values(values, LINES).to_pylist() == [
        ujson_dumps(v, double_precision=10) if v == v else "null" for v in values.tolist()
    ]
    assert float_values(pa.array([0.5, None]), LINES).to_pylist() == ["0.5", "null"]


def tricky_table(rows: int) -> pa.Table:
    rng = random.Random(11)
    strings = random_strings(rows - 2)

    def pick(*choices):
        return [rng.choice(choices) for _ in strings]

    return pa.table(
        {
            "s": pa.array(strings, type=pa.string()),
            "i": pa.array(pick(None, 1, -5, 2**62), type=pa.int64()),
            "f": pa.array(pick(None, 0.1, 2 / 3, -0.0, 1e30, float("nan")), type=pa.float64()),
            "b": pa.array(pick(None, True, False), type=pa.bool_()),
            "ls": pa.array(pick(None, [], ["a/b", None, 'q"\n'], ["x"]), type=pa.list_(pa.string())),
            "li": pa.array(pick(None, [], [1, None], [3, 4]), type=pa.list_(pa.int64())),
            "lf": pa.array(pick(None, [], [0.5, None], [1 / 3]), type=pa.list_(pa.float64())),
            "lb": pa.array(pick(None, [], [True, None], [False]), type=pa.list_(pa.bool_())),
        }
    )


def pandas_lines(table: pa.Table) -> str:
    """What ``datasets``' ``to_json(lines=True, force_ascii=False)`` writes for one batch of records."""
    text = table.to_pandas(integer_object_nulls=True).to_json(orient="records", lines=True, force_ascii=False)
    return text if text.endswith("\n") else text + "\n"


def test_json_lines_are_the_lines_pandas_writes_batch_by_batch_or_sliced():
    table = tricky_table(6000)
    expected = pandas_lines(table)
    written = b"".join(bytes(text_bytes(json_lines(batch))) for batch in table.to_batches(max_chunksize=1700))
    assert written.decode() == expected
    middle = table.slice(5, 3000).to_batches()[0]
    assert bytes(text_bytes(json_lines(middle))).decode() == pandas_lines(table.slice(5, 3000))


def test_json_text_columns_are_written_as_they_are():
    batch = pa.RecordBatch.from_pydict({"id": [1, 2], "root": ['{"a":[1,2]}', None]})
    assert bytes(text_bytes(json_lines(batch, raw={"root"}))) == b'{"id":1,"root":{"a":[1,2]}}\n{"id":2,"root":null}\n'


def test_only_known_column_types_are_supported():
    assert json_lines_supported(tricky_table(10).schema)
    assert not json_lines_supported(pa.schema([("x", pa.struct([("a", pa.int64())]))]))
    assert not json_lines_supported(pa.schema([("x", pa.list_(pa.list_(pa.int64())))]))
    assert json_lines_supported(pa.schema([("x", pa.struct([("a", pa.int64())]))]), raw={"x"})
