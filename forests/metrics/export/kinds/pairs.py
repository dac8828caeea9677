"""``pairs``: synthetic preferences between sibling steps (``forests.metrics.preferences.sibling_pairs``), for TRL's
preference trainers: ``prompt`` (the root prompt and the steps down to the parent), ``chosen``, ``rejected``,
``margin``, ``preference``, and where each pair comes from."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from datasets import Features, Value

from forests.metrics.export.context import ExportContext, nullable_floats
from forests.metrics.export.names import PAIRS
from forests.metrics.export.options import ExportOptions
from forests.metrics.export.source import Batch, ExportSource, ExportTally, Progress
from forests.metrics.preferences import sibling_pairs

NAME = PAIRS
PAIR_BATCH = 4096  # pairs built at a time


def features(options: ExportOptions) -> Features:
    text, integer, real = Value("string"), Value("int64"), Value("float64")
    return Features(
        {
            "prompt": text,
            "chosen": text,
            "rejected": text,
            "margin": real,
            "preference": integer,
            "forest": text,
            "tree_id": integer,
            "parent_id": integer,
            "chosen_id": integer,
            "rejected_id": integer,
            "chosen_value": real,
            "rejected_value": real,
            "chosen_count": integer,
            "rejected_count": integer,
            "chosen_ci95_low": real,
            "chosen_ci95_high": real,
            "rejected_ci95_low": real,
            "rejected_ci95_high": real,
        }
    )


def batches(
    source: ExportSource,
    options: ExportOptions,
    tally: ExportTally,
    progress: Progress | None = None,
    *,
    json_lines: bool = False,
) -> Iterator[Batch]:
    context = ExportContext(source, options, tally, features(options), json_lines=json_lines)
    forest = context.forest
    total = int(forest.roots.size)
    branching = np.flatnonzero(np.diff(forest.child_start) >= 2)
    parents = branching[np.lexsort((branching, forest.root[branching]))].tolist()  # by tree, then node id
    found: dict[str, list] = {"parent": [], "chosen": [], "rejected": [], "margin": [], "preference": []}
    for pair in sibling_pairs(
        forest,
        context.value,
        min_margin=options.min_margin,
        max_pairs_per_node=options.max_pairs_per_node,
        neutral=options.neutral_pairs,
        parents=parents,
    ):
        for name in found:
            found[name].append(getattr(pair, name))
        if len(found["parent"]) >= PAIR_BATCH:
            yield _pair_batch(context, found)
            if progress is not None:
                progress(int(np.searchsorted(forest.roots, forest.root[pair.parent])) + 1, total)
            found = {name: [] for name in found}
    if found["parent"]:
        yield _pair_batch(context, found)
    if progress is not None:
        progress(total, total)


def _pair_batch(context: ExportContext, found: dict[str, list]) -> Batch:
    forest, value, count, low, high = context.forest, context.value, context.count, context.low, context.high
    parent, chosen, rejected = (np.asarray(found[name], dtype=np.int64) for name in ("parent", "chosen", "rejected"))
    parents, which = np.unique(parent, return_inverse=True)  # a prompt per parent, gathered for its pairs
    return {
        "prompt": context.prefixes(parents).take(which.reshape(-1)),
        "chosen": context.texts_of(chosen),
        "rejected": context.texts_of(rejected),
        "margin": found["margin"],
        "preference": found["preference"],
        "forest": [context.forest_name] * parent.size,
        "tree_id": forest.ids[forest.root[parent]],
        "parent_id": forest.ids[parent],
        "chosen_id": forest.ids[chosen],
        "rejected_id": forest.ids[rejected],
        "chosen_value": value[chosen],
        "rejected_value": value[rejected],
        "chosen_count": count[chosen].astype(np.int64),
        "rejected_count": count[rejected].astype(np.int64),
        "chosen_ci95_low": nullable_floats(low[chosen]),
        "chosen_ci95_high": nullable_floats(high[chosen]),
        "rejected_ci95_low": nullable_floats(low[rejected]),
        "rejected_ci95_high": nullable_floats(high[rejected]),
    }
