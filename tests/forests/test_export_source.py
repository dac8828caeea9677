"""``forests.metrics.export.source``: the node texts as one Arrow array, and the tally of what was left out."""

from __future__ import annotations

import pyarrow as pa

from forests.metrics.export.source import TEXT_CHUNK, ExportTally, export_texts


def test_texts_become_one_large_string_array():
    array = export_texts(["a", "ü", ""])
    assert array.type == pa.large_string() and array.to_pylist() == ["a", "ü", ""]
    assert export_texts(pa.array(["x"])).type == pa.large_string()


def test_consuming_empties_the_list_and_keeps_the_order():
    texts = [str(i) for i in range(TEXT_CHUNK + 3)]
    array = export_texts(texts, consume=True)
    assert texts == [] and array.to_pylist()[:2] == ["0", "1"] and len(array) == TEXT_CHUNK + 3
    assert export_texts([], consume=True).to_pylist() == []


def test_the_tally_adds_up_skips_by_reason_and_ignores_zero():
    tally = ExportTally()
    tally.skip("a step without a value", 2)
    tally.skip("a step without a value")
    tally.skip("never", 0)
    assert tally.skipped == {"a step without a value": 3}
