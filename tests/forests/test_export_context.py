"""The column helpers every export kind builds with (``forests.metrics.export.context``), on a forest in memory."""

from __future__ import annotations

import numpy as np

from forests.metrics.export.context import ExportContext, nullable_floats, nullable_ints
from forests.metrics.export.kinds import pairs
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.source import ExportTally
from prmsite.core.json_text import DUMPS, LINES
from tests.forests.export_forest import PROMPTS, memory_source


def context(*, json_lines: bool = False) -> ExportContext:
    options = ExportOptions(kind="pairs")
    return ExportContext(memory_source(), options, ExportTally(), pairs.features(options), json_lines=json_lines)


def test_none_is_null_in_numbers():
    assert nullable_floats(np.array([0.5, np.nan])).to_pylist() == [0.5, None]
    assert nullable_ints(np.array([3.0, np.nan])).to_pylist() == [3, None]


def test_texts_and_prompts_are_gathered_by_node_index():
    built = context()
    forest = built.forest
    nodes = np.array([forest.index_of(6), forest.index_of(12)])
    assert built.texts_of(nodes).to_pylist() == ["yes", "b1\t"]
    assert built.prefixes(nodes).to_pylist() == [PROMPTS["A"] + "s1 s2 yes", PROMPTS["B"] + "b1\t"]


def test_the_json_style_follows_the_format():
    assert context().json_style is DUMPS and context(json_lines=True).json_style is LINES
