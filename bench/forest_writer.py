"""The benchmarks' generated forest, written with raw inserts (setup, never measured): ``bench_metrics`` and
``bench_forest_page`` measure the same shape.

Trees of ``ROLLOUTS_PER_TREE`` rollouts of ``STEPS`` steps, branching like sampled reasoning (the first steps vary
most; identical rollouts share their leaf), about 400 nodes a tree, so 2,500 trees for a million nodes. A leaf
carries the prediction and the stored verdict of the rollouts ending there, as the intake grades them (integer
labels). With ``tallies``, each tree's ``TreeTally`` is written as the intake keeps it (rollouts, correct ones,
tokens and nodes).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ROLLOUTS_PER_TREE = 64
STEPS = 10
SEED = 20240611
FLUSH_ROWS = 50_000

# Only the quoted table name is interpolated; every value is a parameter.
_NODE_SQL = (
    "INSERT INTO {table} (id, forest_id, tree_id, parent_id, depth, text, text_sha256, is_leaf, prediction, correct, "
    "ground_truth, serialized_item, attributes, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_ROLLOUT_SQL = (
    "INSERT INTO {table} (id, model, example, reasoning, prediction, ground_truth, answer, correct, verdict_reason, "
    "worker, forest_id, node_id, attributes, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_TALLY_SQL = (
    "INSERT INTO {table} (root_id, forest_id, rollouts, correct, prompt_tokens, completion_tokens, nodes, "
    "planned_version, branched_version) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0)"
)


def statement(tree: int) -> str:
    """The dataset item's text of tree number ``tree`` (a word of 1 tree in 37: "district5")."""
    return f"Item {tree}: is the statement about district{tree % 37} and its {tree % 11} parks true?"


def forest_write(
    *,
    forest_id: int,
    nodes: int,
    template: str = "{statement}",
    usage: Mapping[str, int] | None = None,
    tallies: bool = False,
) -> tuple[int, int]:
    """Write trees into forest ``forest_id`` until it holds at least ``nodes`` nodes, in the caller's transaction;
    answer (nodes, rollouts) written. Each root's prompt is ``template`` filled with the item's ``statement``; each
    rollout records ``usage`` (token counts) when given."""
    # Django is set up by the calling benchmark's process before this runs: the models are imported here.
    from django.db import connection

    from forests.models import Node, TreeTally
    from rollouts.models import Rollout

    rng = random.Random(SEED)
    now = datetime.now(UTC).isoformat()
    quote = connection.ops.quote_name
    node_sql = _NODE_SQL.format(table=quote(Node._meta.db_table))
    rollout_sql = _ROLLOUT_SQL.format(table=quote(Rollout._meta.db_table))
    tally_sql = _TALLY_SQL.format(table=quote(TreeTally._meta.db_table))
    attributes = json.dumps({"usage": dict(usage)} if usage else {})
    prompt_tokens = (usage or {}).get("prompt_tokens", 0)
    completion_tokens = (usage or {}).get("completion_tokens", 0)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {quote(Node._meta.db_table)}")  # noqa: S608 (a table name)
        node_id = cursor.fetchone()[0]
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {quote(Rollout._meta.db_table)}")  # noqa: S608
        rollout_id = cursor.fetchone()[0]
    node_rows: list[tuple[Any, ...]] = []
    rollout_rows: list[tuple[Any, ...]] = []
    tally_rows: list[tuple[Any, ...]] = []

    def flush() -> None:
        with connection.cursor() as cursor:
            cursor.executemany(node_sql, node_rows)
            cursor.executemany(rollout_sql, rollout_rows)
            if tally_rows:
                cursor.executemany(tally_sql, tally_rows)
        node_rows.clear()
        rollout_rows.clear()
        tally_rows.clear()

    total_nodes = total_rollouts = tree = 0
    while total_nodes < nodes:
        truth = tree % 2
        node_id += 1
        root = node_id
        item = statement(tree)
        prompt = template.format(statement=item)
        tree_nodes: list[tuple[Any, ...]] = [
            (root, forest_id, root, None, 0, prompt, hashlib.sha256(prompt.encode()).hexdigest(), False, None, None,
             truth, json.dumps({"statement": item, "id": tree}), "{}", now)
        ]  # fmt: skip
        children: dict[tuple[int, int], int] = {}
        leaves: dict[int, int] = {}
        correct = 0
        for _ in range(ROLLOUTS_PER_TREE):
            parent, steps = root, []
            for step in range(STEPS):
                choice = rng.randrange(3 if step < 3 else 2) if rng.random() < 0.7 else 0
                key = (parent, choice)
                text = f"Step {step + 1}: reasoning variant {choice} about item {tree}, building on step {step}. "
                steps.append(text)
                if key not in children:
                    node_id += 1
                    children[key] = node_id
                    tree_nodes.append(
                        (node_id, forest_id, root, parent, step + 1, text, hashlib.sha256(text.encode()).hexdigest(),
                         False, None, None, None, None, "{}", now)
                    )  # fmt: skip
                parent = children[key]
            prediction = leaves.setdefault(parent, (truth if rng.random() < 0.55 else 1 - truth))
            rollout_id += 1
            correct += prediction == truth
            rollout_rows.append(
                (rollout_id, "bench-model", prompt, json.dumps(steps), prediction, truth, str(prediction),
                 prediction == truth, "", "bench", forest_id, parent, attributes, now)
            )  # fmt: skip
        for row in tree_nodes:
            if row[0] in leaves:
                row = (*row[:7], True, leaves[row[0]], leaves[row[0]] == truth, *row[10:])
            node_rows.append(row)
        if tallies:
            tally_rows.append(
                (root, forest_id, ROLLOUTS_PER_TREE, correct, ROLLOUTS_PER_TREE * prompt_tokens,
                 ROLLOUTS_PER_TREE * completion_tokens, len(tree_nodes))
            )  # fmt: skip
        total_nodes += len(tree_nodes)
        total_rollouts += ROLLOUTS_PER_TREE
        tree += 1
        if len(node_rows) >= FLUSH_ROWS:
            flush()
    flush()
    return total_nodes, total_rollouts
