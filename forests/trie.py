"""Inserting a rollout into a forest: its steps become a root-to-leaf path that shares every existing prefix.

Set-based, whatever the path's length: one query finds the prefix the tree already has, one statement (per
``INSERT_BATCH`` nodes) writes the missing suffix with ids reserved in advance, one updates the leaf. A rollout's
steps are bounded (``forests.intake.steps_check``, which every rollout passes before it gets here), so the write
transaction is short even on SQLite, where it holds the database's write lock.

Concurrency: siblings are unique by ``(parent, text_sha256)`` in the database, so two workers that add the same step
at once cannot both succeed. The first missing node is inserted inside a savepoint: the loser's insert fails, it reads
the winner's node and walks on below it. Below a node this transaction created, nobody else can have added anything
(the node is not committed yet), so the rest of the path goes in one statement. On PostgreSQL the loser's INSERT
waits on the unique index until the winner commits; on SQLite the transaction holds the write lock from its start
(``BEGIN IMMEDIATE``), so inserts never interleave. Paths are always written root first, so two inserters never wait
on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, F, IntegerField, TextField, Value
from django.db.models.functions import Coalesce

from forests.models import Forest, Node, text_sha256
from forests.selectors import forest_get
from prmsite.core.errors import ApplicationError, NotFoundError, UnprocessableError
from prmsite.core.grading import AnswerSpec, Verdict, grade

ROOT_NOT_FOUND = "Forest {forest!r} has no tree with root id {root_id}."
EXAMPLE_NOT_FOUND = "No tree of forest {forest!r} has this example as its prompt; send root_id to name the tree."
EXAMPLE_AMBIGUOUS = "{count} trees of forest {forest!r} have this example as their prompt; send root_id to choose one."
EXAMPLE_MISMATCH = "The example differs from the prompt of tree {root_id} of forest {forest!r}."
GROUND_TRUTH_MISMATCH = "ground_truth {given} differs from the label {expected} of tree {root_id} of forest {forest!r}."
# Nodes per INSERT statement (well under SQLite's limit of bound parameters).
INSERT_BATCH = 500


def forest_root_resolve(*, forest: Forest, example: str | None, root_id: int | None) -> Node:
    """The root a rollout belongs to: the one named by ``root_id``, else the only root whose prompt is ``example``."""
    roots = Node.objects.filter(forest=forest, parent__isnull=True)
    if root_id is not None:
        root = roots.filter(pk=root_id).first()
        if root is None:
            raise NotFoundError(ROOT_NOT_FOUND.format(forest=forest.name, root_id=root_id))
        if example is not None and example != root.text:
            raise UnprocessableError(EXAMPLE_MISMATCH.format(root_id=root.pk, forest=forest.name))
        return root
    if example is None:
        raise UnprocessableError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
    matches = [r for r in roots.filter(text_sha256=text_sha256(example))[:2] if r.text == example]
    if not matches:
        raise UnprocessableError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
    if len(matches) > 1:
        count = roots.filter(text_sha256=text_sha256(example)).count()
        raise UnprocessableError(EXAMPLE_AMBIGUOUS.format(count=count, forest=forest.name))
    return matches[0]


def _child_get_or_create(*, parent: Node, text: str, digest: str) -> tuple[Node, bool]:
    """The child of ``parent`` holding ``text``, created if missing; the flag says whether this call created it."""
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


def _existing_prefix(*, root: Node, digests: Sequence[str]) -> list[int]:
    """Ids of the nodes of the longest prefix of the path that the tree already has (one query)."""
    rows = Node.objects.filter(
        tree_id=root.pk, depth__gte=1, depth__lte=len(digests), text_sha256__in=set(digests)
    ).values_list("id", "parent_id", "text_sha256")
    child_of = {(parent_id, digest): node_id for node_id, parent_id, digest in rows}
    path: list[int] = []
    parent_id = root.pk
    for digest in digests:
        node_id = child_of.get((parent_id, digest))
        if node_id is None:
            break
        path.append(node_id)
        parent_id = node_id
    return path


def _node_ids_reserve(count: int) -> list[int]:
    """``count`` fresh node ids, taken from the table's id sequence before the rows are written."""
    table = Node._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [connection.ops.quote_name(table), count],
            )
            return sorted(row[0] for row in cursor.fetchall())
        # SQLite: the transaction holds the write lock (BEGIN IMMEDIATE), so nobody else takes ids meanwhile. An
        # AUTOINCREMENT table never reuses an id: start past both the largest id and the largest one ever used.
        cursor.execute(f"SELECT MAX(id) FROM {connection.ops.quote_name(table)}")  # noqa: S608 - a quoted table name
        largest = cursor.fetchone()[0] or 0
        cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
        row = cursor.fetchone()
        start = max(largest, row[0] if row else 0) + 1
        return list(range(start, start + count))


def _chain_insert(*, parent: Node, steps: Sequence[str], digests: Sequence[str]) -> int:
    """Write ``steps`` as a chain below ``parent`` (which this transaction created, so nobody else can have added a
    child to it) in ``INSERT_BATCH``-sized statements; return the id of the last node."""
    ids = _node_ids_reserve(len(steps))
    tree_id = parent.tree_id or parent.pk
    nodes = []
    parent_id = parent.pk
    for offset, (node_id, step, digest) in enumerate(zip(ids, steps, digests, strict=True)):
        nodes.append(
            Node(
                id=node_id,
                forest_id=parent.forest_id,
                tree_id=tree_id,
                parent_id=parent_id,
                depth=parent.depth + 1 + offset,
                text=step,
                text_sha256=digest,
            )
        )
        parent_id = node_id
    Node.objects.bulk_create(nodes, batch_size=INSERT_BATCH)
    return ids[-1]


@dataclass(frozen=True)
class TriePlace:
    """Where a rollout goes, resolved by reads alone (``forest_rollout_place``): its forest, its tree's root, the
    digests of its steps."""

    forest: Forest
    root: Node
    digests: list[str]


def forest_rollout_place(
    *, forest_name: str, example: str | None, steps: Sequence[str], ground_truth: int | None, root_id: int | None
) -> TriePlace:
    """Check a rollout against its forest and find its tree, by reads only: callers resolve this before their write
    transaction, which on SQLite holds the database's one write lock, and pass it to ``forest_rollout_insert``.

    Nodes are only ever added below a root, so the place stays valid until the insert (a forest deleted meanwhile
    makes the insert fail on its foreign keys, as it could on PostgreSQL all along). The steps themselves are
    checked by the intake (``forests.intake.steps_check``) before."""
    forest = forest_get(name=forest_name)
    root = forest_root_resolve(forest=forest, example=example, root_id=root_id)
    if ground_truth is not None and root.ground_truth is not None and ground_truth != root.ground_truth:
        raise UnprocessableError(
            GROUND_TRUTH_MISMATCH.format(
                given=ground_truth, expected=root.ground_truth, root_id=root.pk, forest=forest.name
            )
        )
    return TriePlace(forest=forest, root=root, digests=[text_sha256(step) for step in steps])


@dataclass(frozen=True)
class PathWanted:
    """A rollout's claim on a tree, as ``forest_rollout_place`` takes it."""

    example: str | None
    steps: Sequence[str]
    ground_truth: int | None = None
    root_id: int | None = None


def forest_rollouts_place(*, forest_name: str, paths: Sequence[PathWanted]) -> list[TriePlace]:
    """``forest_rollout_place`` for many rollouts of one forest, by reads only: the forest is found once, the roots
    named by id in one query and those found by their prompt in another. The same rules and messages; the first
    path refused raises its error with ``extra["index"]``, its position in ``paths`` (0 when the forest is not
    found: it refuses them all)."""
    try:
        forest = forest_get(name=forest_name)
    except ApplicationError as exc:
        exc.extra = {**exc.extra, "index": 0}
        raise
    roots = Node.objects.filter(forest=forest, parent__isnull=True)
    by_id = {root.pk: root for root in roots.filter(pk__in={p.root_id for p in paths if p.root_id is not None})}
    wanted = {text_sha256(p.example) for p in paths if p.root_id is None and p.example is not None}
    by_prompt: dict[str, list[Node]] = {}
    for root in roots.filter(text_sha256__in=wanted).order_by("id") if wanted else ():
        by_prompt.setdefault(root.text, []).append(root)
    places = []
    for index, path in enumerate(paths):
        try:
            if path.root_id is not None:
                root = by_id.get(path.root_id)
                if root is None:
                    raise NotFoundError(ROOT_NOT_FOUND.format(forest=forest.name, root_id=path.root_id))
                if path.example is not None and path.example != root.text:
                    raise UnprocessableError(EXAMPLE_MISMATCH.format(root_id=root.pk, forest=forest.name))
            else:
                if path.example is None:
                    raise UnprocessableError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
                matches = by_prompt.get(path.example, [])
                if not matches:
                    raise UnprocessableError(EXAMPLE_NOT_FOUND.format(forest=forest.name))
                if len(matches) > 1:
                    raise UnprocessableError(EXAMPLE_AMBIGUOUS.format(count=len(matches), forest=forest.name))
                root = matches[0]
            given = path.ground_truth
            if given is not None and root.ground_truth is not None and given != root.ground_truth:
                raise UnprocessableError(
                    GROUND_TRUTH_MISMATCH.format(
                        given=given, expected=root.ground_truth, root_id=root.pk, forest=forest.name
                    )
                )
        except ApplicationError as exc:
            exc.extra = {**exc.extra, "index": index}
            raise
        places.append(TriePlace(forest=forest, root=root, digests=[text_sha256(step) for step in path.steps]))
    return places


def leaf_verdict(place: TriePlace, answer: str | None) -> Verdict:
    """The grader's verdict on ``answer`` in ``place``'s tree: the forest's answer kind against the root's reference
    answer (a label tree's class label as text when it has none)."""
    root = place.root
    reference = root.reference_answer
    if reference is None and root.ground_truth is not None:
        reference = str(root.ground_truth)
    return grade(answer, reference, AnswerSpec.from_settings(place.forest.rollout_config))


def forest_rollout_insert(
    *,
    forest_name: str,
    example: str | None,
    steps: Sequence[str],
    prediction: int | None,
    ground_truth: int | None = None,
    root_id: int | None = None,
    place: TriePlace | None = None,
    answer: str | None = None,
    correct: bool | None = None,
) -> Node:
    """Insert a rollout's steps below its root and return the leaf where it ends (``forest_rollout_insert_counted``
    without the count)."""
    leaf, _created = forest_rollout_insert_counted(
        forest_name=forest_name,
        example=example,
        steps=steps,
        prediction=prediction,
        ground_truth=ground_truth,
        root_id=root_id,
        place=place,
        answer=answer,
        correct=correct,
    )
    return leaf


def forest_rollout_insert_counted(
    *,
    forest_name: str,
    example: str | None,
    steps: Sequence[str],
    prediction: int | None,
    ground_truth: int | None = None,
    root_id: int | None = None,
    place: TriePlace | None = None,
    answer: str | None = None,
    correct: bool | None = None,
) -> tuple[Node, int]:
    """Insert a rollout's steps below its root; answer the leaf where it ends and how many nodes this call created
    (what the tree's tally adds to its node count).

    Creates only the nodes the path is missing; marks the last one as a leaf carrying ``prediction``, ``answer`` and
    the grader's verdict ``correct`` (a leaf that already has them keeps them: the same text states the same answer,
    and a verdict is decided once). All or nothing: it runs in one
    transaction (a savepoint inside the caller's), so an error leaves the forest as it was. ``place``: what
    ``forest_rollout_place`` answered for the same arguments, resolved before the caller's transaction.
    """
    if place is None:
        place = forest_rollout_place(
            forest_name=forest_name, example=example, steps=steps, ground_truth=ground_truth, root_id=root_id
        )
    root, digests = place.root, place.digests
    if correct is None:  # a caller that did not grade (tests, trusted seeding code): the one rule decides here
        if answer is None and prediction is not None:
            answer = str(prediction)
        correct = leaf_verdict(place, answer).correct
    with transaction.atomic():
        prefix = _existing_prefix(root=root, digests=digests)
        leaf_id = prefix[-1] if prefix else root.pk
        depth = len(prefix)
        added = 0
        while depth < len(steps):
            parent = root if depth == 0 else Node.objects.get(pk=leaf_id)
            node, created = _child_get_or_create(parent=parent, text=steps[depth], digest=digests[depth])
            depth += 1
            leaf_id = node.pk
            added += int(created)
            if created and depth < len(steps):
                leaf_id = _chain_insert(parent=node, steps=steps[depth:], digests=digests[depth:])
                added += len(steps) - depth
                depth = len(steps)
        _leaf_mark(leaf_id, prediction=prediction, answer=answer, correct=correct)
        leaf = Node.objects.get(pk=leaf_id)
    return leaf, added


def _leaf_mark(leaf_id: int, *, prediction: int | None, answer: str | None, correct: bool) -> None:
    """Mark ``leaf_id`` as a leaf carrying what the rollout ending there states (kept where it has them already)."""
    Node.objects.filter(pk=leaf_id).update(
        is_leaf=True,
        prediction=Coalesce(F("prediction"), Value(prediction, output_field=IntegerField())),
        answer=Coalesce(F("answer"), Value(answer, output_field=TextField())),
        correct=Coalesce(F("correct"), Value(correct, output_field=BooleanField())),
    )


@dataclass(frozen=True)
class LeafFacts:
    """What a rollout states at the leaf where it ends: its prediction, its answer and the grader's verdict."""

    prediction: int | None
    answer: str | None
    correct: bool


# Digests per query when many paths look for the prefixes their trees already have.
PREFIX_QUERY_DIGESTS = 5_000


def _existing_children(*, root_ids: set[int], digests: set[str], depth: int) -> dict[tuple[int, str], int]:
    """``(parent id, step digest) -> node id`` of the nodes of the trees ``root_ids`` at depth 1 to ``depth`` whose
    step is one of ``digests`` (a query per ``PREFIX_QUERY_DIGESTS`` digests)."""
    found: dict[tuple[int, str], int] = {}
    ordered = sorted(digests)
    for start in range(0, len(ordered), PREFIX_QUERY_DIGESTS):
        rows = Node.objects.filter(
            tree_id__in=root_ids,
            depth__gte=1,
            depth__lte=depth,
            text_sha256__in=ordered[start : start + PREFIX_QUERY_DIGESTS],
        ).values_list("id", "parent_id", "text_sha256")
        found.update({(parent_id, digest): node_id for node_id, parent_id, digest in rows})
    return found


def forest_rollouts_insert(
    *, places: Sequence[TriePlace], steps: Sequence[Sequence[str]], leaves: Sequence[LeafFacts]
) -> tuple[list[int], dict[int, int]]:
    """Insert many rollouts' paths (``places`` resolved by ``forest_rollout_place``, all of one forest) in a few
    statements; answer the id of each path's leaf, in order, and the number of nodes created in each tree (root id
    -> count; what the trees' tallies add to their node counts). The trie ends as if ``forest_rollout_insert`` had
    inserted the paths one after the other: existing prefixes are shared, a path's missing suffix is created, its
    last node marked as a leaf that keeps what the first rollout ending there stated.

    One query (per ``PREFIX_QUERY_DIGESTS`` digests) finds the prefixes the trees already have, one reserves the ids
    of all missing nodes, one statement per ``INSERT_BATCH`` nodes writes them, and one update marks each leaf that
    existed before. For callers that write a batch in their own transaction (a bulk import): a concurrent inserter
    that added one of the same steps meanwhile makes the insert fail with ``IntegrityError`` (the unique siblings),
    leaving the forest as it was (a savepoint), so the caller can insert those paths one at a time instead, with
    ``forest_rollout_insert``'s handling of the race.
    """
    if not places:
        return [], {}
    child_of: dict[tuple[int | tuple[int], str], int | tuple[int]] = dict(
        _existing_children(
            root_ids={place.root.pk for place in places},
            digests={digest for place in places for digest in place.digests},
            depth=max(len(place.digests) for place in places),
        )
    )
    # New nodes: (parent key, depth, text, digest, tree id); a new node's key is (its index,), an existing one's its id.
    new: list[tuple[int | tuple[int], int, str, str, int]] = []
    new_leaf: dict[int, LeafFacts] = {}
    old_leaf: dict[int, LeafFacts] = {}
    ends: list[int | tuple[int]] = []
    for place, texts, facts in zip(places, steps, leaves, strict=True):
        root = place.root
        tree_id = root.tree_id or root.pk
        key: int | tuple[int] = root.pk
        for depth, (text, digest) in enumerate(zip(texts, place.digests, strict=True), start=1):
            child = child_of.get((key, digest))
            if child is None:
                child = (len(new),)
                new.append((key, depth, text, digest, tree_id))
                child_of[(key, digest)] = child
            key = child
        ends.append(key)
        if isinstance(key, tuple):
            new_leaf.setdefault(key[0], facts)
        else:
            old_leaf.setdefault(key, facts)
    with transaction.atomic():
        ids = _node_ids_reserve(len(new)) if new else []
        nodes = []
        forest_id = places[0].forest.pk
        for index, (parent, depth, text, digest, tree_id) in enumerate(new):
            facts = new_leaf.get(index)
            nodes.append(
                Node(
                    id=ids[index],
                    forest_id=forest_id,
                    tree_id=tree_id,
                    parent_id=ids[parent[0]] if isinstance(parent, tuple) else parent,
                    depth=depth,
                    text=text,
                    text_sha256=digest,
                    is_leaf=facts is not None,
                    prediction=facts.prediction if facts is not None else None,
                    answer=facts.answer if facts is not None else None,
                    correct=facts.correct if facts is not None else None,
                )
            )
        Node.objects.bulk_create(nodes, batch_size=INSERT_BATCH)
        for leaf_id, facts in old_leaf.items():
            _leaf_mark(leaf_id, prediction=facts.prediction, answer=facts.answer, correct=facts.correct)
    added: dict[int, int] = {}
    for _parent, _depth, _text, _digest, tree_id in new:
        added[tree_id] = added.get(tree_id, 0) + 1
    return [ids[end[0]] if isinstance(end, tuple) else end for end in ends], added
