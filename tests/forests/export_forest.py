"""A small forest built in memory (no database) for the export kinds' tests: the trees of ``tests.forests.grown``
plus texts that JSON escapes and a step holding Math-Shepherd's step tag.

Tree A ("Is A?", ground truth 1), tree B ("Is "B"/ü?\\n", ground truth 0), tree C ("Is C?", ground truth 1, no
rollout). Rollout ids start at 100, node ids at 1, in insertion order; rollout 106 records no tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from forests.metrics.export.options import ExportOptions
from forests.metrics.export.registry import export_batches, features_of
from forests.metrics.export.source import ExportSource, ExportTally
from forests.metrics.forest import ForestArrays, forest_arrays
from forests.metrics.values import labelled_values
from prmsite.core.dataset_files import dataset_write

PROMPTS = {"A": "Is A?", "B": 'Is "B"/ü?\n', "C": "Is C?"}
TRUTHS = {"A": 1, "B": 0, "C": 1}
# (tree, steps, prediction, identical copies, model)
ROLLOUTS = [
    ("A", ["s1 ", "s2 ", "yes"], 1, 2, "model-a"),
    ("A", ["s1 ", "s2 ", "no"], 0, 1, "model-b"),
    ("A", ["s1 ", "t2 ки ", "yes"], 1, 1, "model-a"),
    ("A", ["u1 ", "no"], 0, 1, "model-b"),
    ("B", ["b1\t", "no"], 0, 1, "model-a"),
    ("B", ["b1\t", "yes"], 1, 1, "model-a"),
    ("B", ["c1 ", "yes"], None, 1, "model-c"),
]
FOREST_NAME = "memory-forest"
# The interval columns that close the JSON line of a path-based kind's first record (steps 4, 5, 6: 3 of 4, 2 of 3
# and 2 of 2 rollouts correct) and of its last one (steps 15, 16: 0 of 1 each), after the columns that were there
# before them, byte for byte.
FIRST_PATH_INTERVALS = (
    b',"ci95_lows":[0.3006418426,0.2076596008,0.3423802275],"ci95_highs":[0.9544127392,0.9385080553,1.0]}'
)
LAST_PATH_INTERVALS = b',"ci95_lows":[0.0,0.0],"ci95_highs":[0.7934506856,0.7934506856]}'


def forest_rows() -> tuple[list[tuple], list[tuple], dict[int, str]]:
    """``(node rows with texts, rollout rows, model by rollout id)`` of the forest above."""
    nodes: list[tuple] = []
    ids: dict[tuple[str, ...], int] = {}
    for tree in ("A", "B", "C"):
        ids[(tree,)] = len(nodes) + 1
        nodes.append([len(nodes) + 1, None, 0, False, None, TRUTHS[tree], PROMPTS[tree]])
    rollouts: list[tuple] = []
    models: dict[int, str] = {}
    for tree, steps, prediction, copies, model in ROLLOUTS:
        key: tuple[str, ...] = (tree,)
        for depth, step in enumerate(steps, start=1):
            parent = ids[key]
            key = (*key, step)
            if key not in ids:
                ids[key] = len(nodes) + 1
                nodes.append([len(nodes) + 1, parent, depth, False, None, None, step])
        leaf = ids[key]
        nodes[leaf - 1][3] = True
        nodes[leaf - 1][4] = prediction
        for _ in range(copies):
            rollout_id = 100 + len(rollouts)
            rollouts.append((rollout_id, leaf, prediction, None if rollout_id == 106 else 10 + rollout_id))
            models[rollout_id] = model
    return [tuple(node) for node in nodes], rollouts, models


def memory_forest() -> ForestArrays:
    nodes, rollouts, _ = forest_rows()
    return forest_arrays(nodes, rollouts, with_texts=True)


def memory_source() -> ExportSource:
    """The forest above with its exact values, as every export kind reads it."""
    _, _, models = forest_rows()
    forest = memory_forest()
    return ExportSource(
        forest_name=FOREST_NAME,
        forest=forest,
        values=labelled_values(forest),
        texts=list(forest.texts),
        rollout_models=models,
    )


def export_file(path: Path, fmt: str = "jsonl", **options) -> tuple[int, ExportTally]:
    """Export the forest above to ``path`` as ``fmt`` (as ``export_preferences`` writes it); ``(records, tally)``."""
    export_options = ExportOptions(**options)
    tally = ExportTally()
    lines = fmt == "jsonl"
    batches = export_batches(memory_source(), export_options, tally, json_lines=lines)
    written = dataset_write(batches, features_of(export_options), path, fmt, raw_json=lines)
    return written, tally


def export_rows(folder: Path, **options) -> tuple[list[dict], ExportTally]:
    """The records of an export of the forest above, read back from its JSON lines; and its tally."""
    path = folder / f"rows-{len(list(folder.iterdir()))}.jsonl"
    _, tally = export_file(path, **options)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()], tally
