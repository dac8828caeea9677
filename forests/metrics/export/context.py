"""One export under way: its source, options and tally, and the column helpers every kind builds its records with
(texts gathered from one Arrow array, list columns, prompts, nullable numbers). Pure: no Django."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forests.metrics.export.options import ExportOptions
from forests.metrics.export.source import ExportSource, ExportTally, export_texts
from forests.metrics.preferences import ancestors
from prmsite.core.json_text import DUMPS, LINES


def nullable_floats(values: np.ndarray) -> pa.Array:
    """A float array with NaN for "none" as a float64 Arrow array with nulls (JSON null, not NaN)."""
    return pa.array(values, mask=np.isnan(values))


def nullable_ints(values: np.ndarray) -> pa.Array:
    """Whole numbers in a float array with NaN for "none" as an int64 Arrow array with nulls (0 under each null, as
    ``pa.array`` writes from ``None``: the saved bytes do not depend on what NaN casts to)."""
    missing = np.isnan(values)
    return pa.array(np.where(missing, 0, values).astype(np.int64), mask=missing)


class ExportContext:
    """What a kind's builder reads: the source's forest and values, the options, the tally to count skips in, the
    kind's Arrow schema and the JSON style of ``Json`` columns (``json.dumps``' text, what parquet and
    ``save_to_disk`` store; with ``json_lines``, the text a JSON lines file gets)."""

    def __init__(
        self, source: ExportSource, options: ExportOptions, tally: ExportTally, features, *, json_lines: bool = False
    ) -> None:
        self.source = source
        self.options = options
        self.tally = tally
        self.features = features
        self.schema = features.arrow_schema
        self.json_style = LINES if json_lines else DUMPS
        self.forest = source.forest
        self.forest_name = source.forest_name
        self.value = source.values.value
        self.count = source.values.count
        self.low, self.high = source.values.intervals()

    @functools.cached_property
    def text_array(self) -> Any:
        """Every node's text as one Arrow array, converted once: columns of texts are gathered from it."""
        return export_texts(self.source.texts)

    def texts_of(self, indices: np.ndarray) -> pa.Array:
        """The texts of nodes ``indices`` as a ``string`` array."""
        return self.text_array.take(pa.array(indices, type=pa.int64())).cast(pa.string())

    def list_column(self, name: str, offsets: np.ndarray, flat) -> pa.Array:
        """Column ``name`` (a list type of the schema): row i holds ``flat[offsets[i]:offsets[i + 1]]``."""
        field_type = self.schema.field(name).type
        items = flat if isinstance(flat, pa.Array) else pa.array(flat, type=field_type.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), items)

    def prefixes(self, indices: np.ndarray) -> pa.Array:
        """The root prompt followed by the steps down to each node of ``indices``, as a ``string`` array."""
        offsets, steps = ancestors(self.forest, indices)
        below = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), self.texts_of(steps)), "")
        return pc.binary_join_element_wise(self.texts_of(self.forest.root[indices]), below, "")
