"""What every export kind reads (``ExportSource``), what it counts as it goes (``ExportTally``) and what it yields
(``Batch``: columns of records). Pure: no Django."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from forests.metrics.forest import ForestArrays
from forests.metrics.values import NodeValues

Progress = Callable[[int, int], None]  # (trees done, trees)
Batch = dict[str, Any]  # column name -> pyarrow array or list of values, all of one length
TEXT_CHUNK = 65_536  # texts converted to Arrow at a time


@dataclass
class ExportTally:
    """What an export wrote and what it left out, and why."""

    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


@dataclass(frozen=True)
class ExportSource:
    """Everything the record builders read: the forest, its values and its texts."""

    forest_name: str
    forest: ForestArrays
    values: NodeValues
    texts: Sequence[str] | Any  # text of each node, by index (a list or an Arrow string array)
    rollout_models: dict[int, str] = field(default_factory=dict)  # model of each rollout row (processbench)


def export_texts(texts: Sequence[str] | Any, *, consume: bool = False) -> Any:
    """Node texts as the Arrow array the exports gather their text columns from (``large_string``: no 2 GiB cap).

    With ``consume`` (``texts`` a list), the list is emptied as it is converted, from its end, so that the strings and
    their Arrow copy are never both whole in memory.
    """
    import pyarrow as pa  # noqa: PLC0415 (deferred: pyarrow is heavy (~70 MB), and the server's admin imports this module at start)

    if isinstance(texts, pa.Array | pa.ChunkedArray):
        return texts if texts.type == pa.large_string() else texts.cast(pa.large_string())
    if not consume:
        return pa.array(texts, type=pa.large_string())
    chunks = []
    while texts:
        chunks.append(pa.array(texts[-TEXT_CHUNK:], type=pa.large_string()))
        del texts[-TEXT_CHUNK:]
    chunks.reverse()
    return pa.concat_arrays(chunks) if chunks else pa.array([], type=pa.large_string())
