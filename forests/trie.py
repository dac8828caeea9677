"""Inserting a rollout into a forest: its steps become a root-to-leaf path that shares every existing prefix.

Concurrency: siblings are unique by ``(parent, text_sha256)`` in the database, so two workers that add the same step
at once cannot both succeed. The loser's insert fails inside a savepoint, it reads the winner's node and carries on
below it. On PostgreSQL the loser's INSERT waits on the unique index until the winner commits; on SQLite the
transaction holds the write lock from its start (``BEGIN IMMEDIATE``), so inserts never interleave. Paths are always
written root first, so two inserters never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from forests.models import Forest, Node, text_sha256
from prmsite.errors import ApplicationError, NotFoundError

FOREST_NOT_FOUND = "No forest named {name!r}."
ROOT_NOT_FOUND = "Forest {forest!r} has no tree with root id {root_id}."
EXAMPLE_NOT_FOUND = "No tree of forest {forest!r} has this example as its prompt; send root_id to name the tree."
EXAMPLE_AMBIGUOUS = "{count} trees of forest {forest!r} have this example as their prompt; send root_id to choose one."
EXAMPLE_MISMATCH = "The example differs from the prompt of tree {root_id} of forest {forest!r}."
GROUND_TRUTH_MISMATCH = "ground_truth {given} differs from the label {expected} of tree {root_id} of forest {forest!r}."
NO_STEPS = "A rollout needs at least one reasoning step."
STEP_NOT_TEXT = "Every reasoning step must be a string."


def forest_root_resolve(*, forest: Forest, example: str | None, root_id: int | None) -> Node:
    """The root a rollout belongs to: the one named by ``root_id``, else the only root whose prompt is ``example``."""
    roots = Node.objects.filter(forest=forest, parent__isnull=True)
    if root_id is not None:
        root = roots.filter(pk=root_id).first()
        if root is None:
            raise NotFoundError(ROOT_NOT_FOUND.format(forest=forest.name, root_id=root_id))
        if example is not None and example != root.text:
            raise ApplicationError(EXAMPLE_MISMATCH.format(root_id=root.pk, forest=forest.name))
        return root
    if example is None:
        raise ApplicationError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
    matches = [r for r in roots.filter(text_sha256=text_sha256(example))[:2] if r.text == example]
    if not matches:
        raise ApplicationError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
    if len(matches) > 1:
        count = roots.filter(text_sha256=text_sha256(example)).count()
        raise ApplicationError(EXAMPLE_AMBIGUOUS.format(count=count, forest=forest.name))
    return matches[0]


def _child_get_or_create(*, parent: Node, text: str, digest: str, known_missing: bool) -> tuple[Node, bool]:
    """The child of ``parent`` holding ``text``, created if missing; the flag says whether this call created it."""
    if not known_missing:
        existing = Node.objects.filter(parent=parent, text_sha256=digest).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            node = Node.objects.create(
                forest_id=parent.forest_id,
                tree_id=parent.tree_id or parent.pk,
                parent=parent,
                depth=parent.depth + 1,
                text=text,
                text_sha256=digest,
            )
        return node, True
    except IntegrityError:
        # Another worker added the same step a moment ago: share its node.
        return Node.objects.get(parent=parent, text_sha256=digest), False


def forest_rollout_insert(
    *,
    forest_name: str,
    example: str | None,
    steps: Sequence[str],
    prediction: int | None,
    ground_truth: int | None = None,
    root_id: int | None = None,
) -> Node:
    """Insert a rollout's steps below its root and return the leaf where it ends.

    Creates only the nodes the path is missing; marks the last one as a leaf carrying ``prediction`` (a leaf that
    already has a prediction keeps it: the same text parses to the same prediction). All or nothing: it runs in one
    transaction (a savepoint inside the caller's), so an error leaves the forest as it was.
    """
    if not steps:
        raise ApplicationError(NO_STEPS)
    if not all(isinstance(step, str) for step in steps):
        raise ApplicationError(STEP_NOT_TEXT)
    forest = Forest.objects.filter(name=forest_name).first()
    if forest is None:
        raise NotFoundError(FOREST_NOT_FOUND.format(name=forest_name))
    root = forest_root_resolve(forest=forest, example=example, root_id=root_id)
    if ground_truth is not None and root.ground_truth is not None and ground_truth != root.ground_truth:
        raise ApplicationError(
            GROUND_TRUTH_MISMATCH.format(
                given=ground_truth, expected=root.ground_truth, root_id=root.pk, forest=forest.name
            )
        )
    with transaction.atomic():
        node = root
        created_any = False
        for step in steps:
            # Below a node this call created there is nothing yet: skip the lookup.
            node, created = _child_get_or_create(
                parent=node, text=step, digest=text_sha256(step), known_missing=created_any
            )
            created_any = created_any or created
        Node.objects.filter(pk=node.pk).update(is_leaf=True, prediction=Coalesce(F("prediction"), Value(prediction)))
        node.refresh_from_db(fields=["is_leaf", "prediction"])
    return node
