"""Reads of forests and trees: counts and progress, per forest and per tree, each in a constant number of queries;
a tree's rows and rollouts for its page.

The whole-forest reads behind values, search metrics, PRM evaluation and exports are in ``forests.metrics_reading``,
``forests.search_reports`` and ``forests.prm_evaluation``.

Progress counts rollouts, not leaves (``forests.metrics.forest``): every rollout row ending in the forest, plus one
for each leaf that no rollout row ends at. A rollout is correct by ``prmsite.queries.correct_rollout_q`` against its
tree's ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import BigIntegerField, Count, Exists, F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Length, Substr

from forests.metrics.stats import wilson_interval
from forests.models import Forest, ForestTally, Node
from prmsite.core.errors import NotFoundError
from prmsite.queries import correct_rollout_q
from rollouts.models import Rollout

FOREST_NOT_FOUND = "No forest named {name!r}."
TREE_NOT_FOUND = "Forest {forest!r} has no tree with root id {root_id}."
TREE_NODE_NOT_FOUND = "Tree {root_id} has no node {node_id}."


def _orphan_leaf() -> Q:
    """A leaf that no rollout row ends at: it stands for one rollout (see forests.metrics.forest)."""
    return Q(is_leaf=True) & ~Q(Exists(Rollout.objects.filter(node_id=OuterRef("pk"))))


@dataclass(frozen=True)
class ForestCounts:
    trees: int
    nodes: int
    leaves: int
    rollouts: int


@dataclass(frozen=True)
class ForestProgress:
    """How far a forest has grown: rollouts end at leaves, and the grader found the correct ones correct."""

    trees: int = 0
    trees_with_rollouts: int = 0
    nodes: int = 0
    leaves: int = 0
    rollouts: int = 0
    correct_rollouts: int = 0

    @property
    def accuracy(self) -> float | None:
        """Share of correct rollouts over the whole forest (``None`` before the first rollout)."""
        return self.correct_rollouts / self.rollouts if self.rollouts else None


@dataclass(frozen=True)
class TreeStats:
    nodes: int = 1
    leaves: int = 0
    rollouts: int = 0
    correct_rollouts: int = 0
    max_depth: int = 0

    @property
    def accuracy(self) -> float | None:
        """The root's exact value: share of this tree's rollouts whose prediction is the ground truth."""
        return self.correct_rollouts / self.rollouts if self.rollouts else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of ``accuracy``."""
        return wilson_interval(self.correct_rollouts, self.rollouts)


def forest_get(*, name: str) -> Forest:
    forest = Forest.objects.filter(name=name).first()
    if forest is None:
        raise NotFoundError(FOREST_NOT_FOUND.format(name=name))
    return forest


def forest_counts(*, forest: Forest) -> ForestCounts:
    nodes = Node.objects.filter(forest=forest)
    return ForestCounts(
        trees=nodes.filter(depth=0).count(),
        nodes=nodes.count(),
        leaves=nodes.filter(is_leaf=True).count(),
        rollouts=Rollout.objects.filter(forest=forest).count(),
    )


def forest_progress_many(*, forest_ids: Iterable[int]) -> dict[int, ForestProgress]:
    """Progress of each forest in ``forest_ids``, in two queries whatever their number."""
    ids = list(forest_ids)
    if not ids:
        return {}
    orphan = _orphan_leaf()
    rows = (
        Node.objects.filter(forest_id__in=ids)
        .order_by()
        .values("forest_id")
        .annotate(
            trees=Count("id", filter=Q(depth=0)),
            trees_with_rollouts=Count("tree_id", filter=Q(is_leaf=True), distinct=True),
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            orphans=Count("id", filter=orphan),
            orphans_correct=Count("id", filter=orphan & correct_rollout_q()),
        )
    )
    rollouts = {
        row["forest_id"]: row
        for row in Rollout.objects.filter(forest_id__in=ids, node__isnull=False)
        .order_by()
        .values("forest_id")
        .annotate(n=Count("id"), correct=Count("id", filter=correct_rollout_q()))
    }
    progress = {forest_id: ForestProgress() for forest_id in ids}
    for row in rows:
        forest_id = row.pop("forest_id")
        orphans, orphans_correct = row.pop("orphans"), row.pop("orphans_correct")
        linked = rollouts.get(forest_id, {"n": 0, "correct": 0})
        progress[forest_id] = ForestProgress(
            **row, rollouts=linked["n"] + orphans, correct_rollouts=linked["correct"] + orphans_correct
        )
    return progress


PROGRESS_CACHE_SECONDS = 600


def _forest_fingerprint(*, forest: Forest) -> tuple:
    """What changes whenever a forest's progress can, in one query that reads no node row: its newest node's id (a
    node added, leaf or not, has a larger id than every node of its forest), its rollouts' newest id (one added) and
    count (the forest's tally, ``ForestTally.rollouts``, where it has one: the rollouts its bookkeeping received;
    counted otherwise, which also sees one deleted) and when the forest was made (a new forest that reuses a deleted
    one's id is another forest). Verdicts are stored once, when a rollout comes in, nodes are deleted only with
    their forest and rollouts detached only with it, so a forest whose fingerprint is unchanged has unchanged
    progress, but for a rollout deleted by hand in the admin from a forest with a tally (not its newest one): its
    figures may then be stale for ``PROGRESS_CACHE_SECONDS``."""

    def newest(model) -> Subquery:
        return Subquery(model.objects.filter(forest=OuterRef("pk")).order_by("-id").values("id")[:1])

    counted = Rollout.objects.filter(forest=OuterRef("pk")).order_by().values("forest").annotate(n=Count("id"))
    tallied = ForestTally.objects.filter(forest=OuterRef("pk")).values("rollouts")[:1]
    row = (
        Forest.objects.filter(pk=forest.pk)
        .annotate(
            newest_node=newest(Node),
            # The tally first: the databases evaluate COALESCE's arguments only as far as needed (no count then).
            rollout_count=Coalesce(Subquery(tallied), Subquery(counted.values("n")), output_field=BigIntegerField()),
            newest_rollout=newest(Rollout),
        )
        .values_list("created_at", "newest_node", "rollout_count", "newest_rollout")
        .first()
    )
    created_at, *counts = row or (None,)
    return (forest.pk, created_at.timestamp() if created_at else 0, *counts)


def forest_progress(*, forest: Forest) -> ForestProgress:
    """``forest_progress_many`` for one forest, served from this process's cache while the forest's fingerprint
    (``_forest_fingerprint``: one query that reads no node row) is unchanged, for ``PROGRESS_CACHE_SECONDS``: a page
    view of a large forest does not read all its nodes."""
    key = "forest-progress:" + ":".join(str(part) for part in _forest_fingerprint(forest=forest))
    cached = cache.get(key)
    if cached is not None:
        return cached
    progress = forest_progress_many(forest_ids=[forest.pk])[forest.pk]
    cache.set(key, progress, PROGRESS_CACHE_SECONDS)
    return progress


def tree_stats_many(*, root_ids: Iterable[int]) -> dict[int, TreeStats]:
    """Counts and accuracy of each tree in ``root_ids``, in two queries."""
    ids = list(root_ids)
    stats = {root_id: TreeStats() for root_id in ids}
    if not ids:
        return stats
    orphan = _orphan_leaf()
    rows = (
        Node.objects.filter(tree_id__in=ids)
        .order_by()
        .values("tree_id")
        .annotate(
            nodes=Count("id"),
            leaves=Count("id", filter=Q(is_leaf=True)),
            orphans=Count("id", filter=orphan),
            orphans_correct=Count("id", filter=orphan & correct_rollout_q()),
            max_depth=Max("depth"),
        )
    )
    rollouts = {
        row["node__tree_id"]: row
        for row in Rollout.objects.filter(node__tree_id__in=ids)
        .order_by()
        .values("node__tree_id")
        .annotate(n=Count("id"), correct=Count("id", filter=correct_rollout_q()))
    }
    for row in rows:
        root_id = row.pop("tree_id")
        orphans, orphans_correct = row.pop("orphans"), row.pop("orphans_correct")
        linked = rollouts.get(root_id, {"n": 0, "correct": 0})
        stats[root_id] = TreeStats(
            **row, rollouts=linked["n"] + orphans, correct_rollouts=linked["correct"] + orphans_correct
        )
    return stats


def tree_root_get(*, forest: Forest, root_id: int) -> Node:
    root = Node.objects.filter(forest=forest, depth=0, pk=root_id).first()
    if root is None:
        raise NotFoundError(TREE_NOT_FOUND.format(forest=forest.name, root_id=root_id))
    return root


def tree_rows(*, root: Node, text_chars: int | None = None) -> list[tuple]:
    """Every node of ``root``'s tree as ``(id, parent_id, depth, text, is_leaf, prediction, text_chars, correct,
    answer)``, in one query (``correct`` and ``answer``: a leaf's stored verdict and final answer); with
    ``text_chars``, ``text`` is only the first ``text_chars`` characters of the node's text (the database cuts it: a
    tree of long steps is not read whole for a page that shows their start), and ``text_chars`` is always the whole
    text's length in characters."""
    text = F("text") if text_chars is None else Substr("text", 1, text_chars)
    return list(
        Node.objects.filter(tree_id=root.pk)
        .order_by("id")
        .annotate(shown_text=text, text_length=Length("text"))
        .values_list(
            "id", "parent_id", "depth", "shown_text", "is_leaf", "prediction", "text_length", "correct", "answer"
        )
        .iterator(chunk_size=2000)
    )


def tree_node_get(*, root: Node, node_id: int) -> Node:
    """Node ``node_id`` of ``root``'s tree (its whole text); ``NotFoundError`` when the tree has no such node."""
    node = Node.objects.filter(tree_id=root.pk, pk=node_id).first()
    if node is None:
        raise NotFoundError(TREE_NODE_NOT_FOUND.format(root_id=root.pk, node_id=node_id))
    return node


def tree_rollouts(*, root: Node) -> list[tuple[int, int, int | None, bool]]:
    """Every rollout ending in ``root``'s tree as ``(id, node_id, prediction, correct)``, in one query."""
    return list(
        Rollout.objects.filter(node__tree_id=root.pk)
        .order_by("id")
        .values_list("id", "node_id", "prediction", "correct")
        .iterator(chunk_size=2000)
    )
