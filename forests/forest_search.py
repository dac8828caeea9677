"""The forest page's trees: sorted, filtered and searched in the database, one page at a time.

Every sort and filter but ``disagreement`` is one SQL query over the forest's roots joined to their tallies (nodes,
rollouts and correct rollouts from the tree's ``TreeTally``; counted by correlated subqueries for a tree without
one), so a page costs the same number of queries whatever the forest's size. Full-text search matches whole words,
case-insensitively, in the first ``SEARCH_TEXT_CHARS`` characters of the prompts and steps: a tree matches when it
holds every word of the query, each anywhere in the tree (its prompt or any step). It reads the words of each tree
(``TreeWord``, kept by the database's triggers, migration ``0009_tree_words``), so the trees holding a word are one
index range, however many of their steps hold it: words as PostgreSQL's ``to_tsvector('simple', …)`` reads them
there (the query's words are read by one short statement first), as ``prmsite.core.search_words`` does on SQLite.
The count of matching trees and the page's ids are one statement (window functions on PostgreSQL; on SQLite the
ordered ids, counted and cut here): the search runs once.

Counted rollouts are counted as on the rest of the pages (``forests.selectors``): rollout rows ending in the tree,
plus one for each leaf that no rollout row ends at.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Page, Paginator
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, NullIf, RowNumber, Substr

from forests.metrics.values import labelled_values
from forests.metrics_reading import forest_arrays_load, forest_values, value_function_parse
from forests.models import Forest, Node, TreeWord
from prmsite.core.item_text import item_text, item_text_fields
from prmsite.core.search_words import SEARCH_WORD_CHARS, search_words
from prmsite.queries import correct_rollout_q
from rollouts.models import ProcessRewardLabel, Rollout

SEARCH_MAX_CHARS = 200
SEARCH_MAX_WORDS = 10
PROMPT_CHARS = 300  # characters of the item's text the page reads per tree (the database cuts it)

SORTS = {
    "tree": "tree (seeding order)",
    "accuracy": "accuracy",
    "rollouts": "rollouts",
    "nodes": "nodes",
    "ground_truth": "ground truth",
    "disagreement": "disagreement with the exact values",
}
RANGE_FILTERS = {  # parameter: (annotation, lowest, highest)
    "min_accuracy": ("accuracy", 0.0, 1.0),
    "max_accuracy": ("accuracy", 0.0, 1.0),
    "min_rollouts": ("rollouts", 0, None),
    "max_rollouts": ("rollouts", 0, None),
    "min_nodes": ("nodes", 1, None),
    "max_nodes": ("nodes", 1, None),
}

BAD_SORT = "sort must be one of: {choices} (a leading '-' sorts descending)."
BAD_NUMBER = "{name} must be a number{bounds}."
BAD_TRUTH = "truth must be an integer label on this forest (its answer kind is 'label')."
SEARCH_TOO_LONG = f"q must be at most {SEARCH_MAX_CHARS} characters."
SEARCH_TOO_MANY_WORDS = f"q may hold at most {SEARCH_MAX_WORDS} words."
SEARCH_NO_WORDS = "q holds no word to search for (letters or digits)."
SOURCE_NEEDED = "sort=disagreement needs a value source: source=prm:VERSION or source=labels:SCHEME."


class TreeQueryError(ValueError):
    """A parameter of the forest page that cannot be read: its message is one line, for a 400."""


@dataclass(frozen=True)
class TreeQuery:
    sort: str = "tree"
    descending: bool = False
    q: str = ""
    words: tuple[str, ...] = ()
    truth: str = ""
    ranges: dict[str, float] = field(default_factory=dict)
    source: str = ""

    @property
    def is_default(self) -> bool:
        return self.sort == "tree" and not self.descending and not self.words and not self.truth and not self.ranges


def _number(name: str, raw: str, low: float, high: float | None) -> float:
    bounds = f" from {low:g}" + (f" to {high:g}" if high is not None else "")
    try:
        value = float(raw)
    except ValueError:
        raise TreeQueryError(BAD_NUMBER.format(name=name, bounds=bounds)) from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise TreeQueryError(BAD_NUMBER.format(name=name, bounds=bounds))
    return value


def tree_query_parse(params: Mapping[str, str], *, forest: Forest) -> TreeQuery:
    """The page's parameters (``sort``, ``q``, ``truth``, ``min_*``/``max_*``, ``source``) read and checked;
    ``TreeQueryError`` with one line for the first bad one. Empty parameters are absent ones (a submitted form)."""
    raw_sort = (params.get("sort") or "tree").strip()
    descending = raw_sort.startswith("-")
    sort = raw_sort.removeprefix("-")
    if sort not in SORTS:
        raise TreeQueryError(BAD_SORT.format(choices=", ".join(SORTS)))
    q = (params.get("q") or "").strip()
    if len(q) > SEARCH_MAX_CHARS:
        raise TreeQueryError(SEARCH_TOO_LONG)
    words = tuple(search_words(q))
    if q and not words:
        raise TreeQueryError(SEARCH_NO_WORDS)
    if len(words) > SEARCH_MAX_WORDS:
        raise TreeQueryError(SEARCH_TOO_MANY_WORDS)
    truth = (params.get("truth") or "").strip()
    if truth and forest_answer_kind(forest) == "label":
        try:
            int(truth)
        except ValueError:
            raise TreeQueryError(BAD_TRUTH) from None
    ranges = {}
    for name, (_annotation, low, high) in RANGE_FILTERS.items():
        raw = (params.get(name) or "").strip()
        if raw:
            value = _number(name, raw, low, high)
            ranges[name] = int(value) if isinstance(low, int) and value.is_integer() else value
    source = (params.get("source") or "").strip()
    if sort == "disagreement" and not source:
        raise TreeQueryError(SOURCE_NEEDED)
    return TreeQuery(sort=sort, descending=descending, q=q, words=words, truth=truth, ranges=ranges, source=source)


def forest_answer_kind(forest: Forest) -> str:
    return (forest.rollout_config or {}).get("answer_kind") or "label"


# --- counts per tree, as correlated subqueries on the roots --------------------------------------------------------


def _count(query: QuerySet, group: str) -> Coalesce:
    counted = query.order_by().values(group).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _orphans_of_root() -> QuerySet:
    """Leaves of the outer root's tree that no rollout row ends at (each stands for one rollout)."""
    return Node.objects.filter(tree_id=OuterRef("pk"), is_leaf=True).filter(
        ~Exists(Rollout.objects.filter(node_id=OuterRef("pk")))
    )


def _all_tallied(roots: QuerySet, names: set[str]) -> bool:
    """Whether every one of ``roots`` has a tally holding the counts ``names`` needs (one query: an anti-join of the
    roots with their tallies), so the page's query can leave out the counting it would fall back to."""
    missing = Q(tally__isnull=True)
    if "nodes" in names:
        missing |= Q(tally__nodes__isnull=True)
    return not roots.filter(missing).exists()


def _annotations(names: set[str], *, tallied: bool = False) -> dict:
    """The per-tree counts ``names`` needs (``nodes``, ``rollouts``, ``accuracy``), nothing more, each annotated as
    ``tree_<name>`` (``rollouts`` is already a relation of a node).

    Each is read from the tree's tally (``TreeTally``, joined by the root's id: kept as rollouts arrive through the
    intake, with the nodes their paths created) where it has one, and counted otherwise (rollouts with the leaves no
    rollout row ends at), so a sort or filter reads one row per tree, not the forest's nodes or rollouts.

    ``tallied``: every tree has its tally (``_all_tallied``), so the counting is left out of the query (the same
    figures; a query this size takes Django longer to write than the database to run)."""

    def tally_else(name: str, counted: Callable[[], object]) -> F | Coalesce:
        # ``counted`` is called only where it is used: building the unused subqueries cost more than the query.
        return (
            F(f"tally__{name}") if tallied else Coalesce(F(f"tally__{name}"), counted(), output_field=BigIntegerField())
        )

    out: dict = {}
    if "nodes" in names:
        out["tree_nodes"] = tally_else("nodes", lambda: _count(Node.objects.filter(tree_id=OuterRef("pk")), "tree_id"))

    def linked() -> QuerySet:
        return Rollout.objects.filter(node__tree_id=OuterRef("pk"))

    if names & {"rollouts", "accuracy"}:
        out["tree_rollouts"] = tally_else(
            "rollouts", lambda: _count(linked(), "node__tree_id") + _count(_orphans_of_root(), "tree_id")
        )
    if "accuracy" in names:
        out["tree_correct"] = tally_else(
            "correct",
            lambda: (
                _count(linked().filter(correct_rollout_q()), "node__tree_id")
                + _count(_orphans_of_root().filter(correct_rollout_q()), "tree_id")
            ),
        )
        out["tree_accuracy"] = Cast(F("tree_correct"), FloatField()) / NullIf(
            Cast(F("tree_rollouts"), FloatField()), Value(0.0)
        )
    return out


# --- full-text search -------------------------------------------------------------------------------------------------


def query_words(query: TreeQuery) -> tuple[str, ...]:
    """The words the index is searched for: on PostgreSQL its parser's reading of the query (as it read the texts:
    one short statement), elsewhere the query's words (``search_words``); each cut to ``SEARCH_WORD_CHARS``."""
    if connection.vendor != "postgresql":
        return query.words
    with connection.cursor() as cursor:
        cursor.execute("SELECT tsvector_to_array(to_tsvector('simple'::regconfig, %s))", [query.q])
        lexemes = cursor.fetchone()[0]
    return tuple(dict.fromkeys(lexeme[:SEARCH_WORD_CHARS] for lexeme in lexemes))


def matching_tree_filter(*, forest: Forest, words: tuple[str, ...]) -> Q:
    """A filter of the forest's roots: the trees that hold every one of ``words`` (``query_words``), each anywhere in
    the tree (its prompt or any of its steps), read from the trees' words (``TreeWord``): one index range per word,
    whatever the number of steps that hold it, one semi-join per word (the planner sees each word's own figures)."""
    if not words:  # a query PostgreSQL's parser finds no word in: no tree
        return Q(pk__in=[])
    held = (Q(pk__in=TreeWord.objects.filter(forest=forest, word=word).values("tree_id")) for word in words)
    return functools.reduce(operator.and_, held)


# --- the page's query -------------------------------------------------------------------------------------------------


def forest_tree_query(*, forest: Forest, query: TreeQuery, disagreement_ids: list[int] | None = None) -> QuerySet:
    """The forest's roots filtered, searched and sorted as ``query`` says (a queryset of ids, for pagination).

    ``disagreement_ids``: for ``sort=disagreement``, the root ids in that order (computed outside the database)."""
    roots = Node.objects.filter(forest=forest, depth=0)
    needed = {RANGE_FILTERS[name][0] for name in query.ranges}
    if query.sort in {"accuracy", "rollouts", "nodes"}:
        needed.add(query.sort)
    if needed:
        roots = roots.annotate(**_annotations(needed, tallied=_all_tallied(roots, needed)))
    for name, value in query.ranges.items():
        annotation = RANGE_FILTERS[name][0]
        roots = roots.filter(**{f"tree_{annotation}__{'gte' if name.startswith('min_') else 'lte'}": value})
    if query.truth:
        if forest_answer_kind(forest) == "label":
            roots = roots.filter(ground_truth=int(query.truth))
        else:
            roots = roots.filter(reference_answer=query.truth)
    if query.words:
        roots = roots.filter(matching_tree_filter(forest=forest, words=query_words(query)))
    roots = roots.values_list("pk", flat=True)
    if query.sort == "disagreement" and disagreement_ids is not None:
        return roots  # ordered by the caller, who holds the order
    if query.sort == "tree":
        return roots.order_by("-pk" if query.descending else "pk")
    keys = ["ground_truth", "reference_answer"] if query.sort == "ground_truth" else [f"tree_{query.sort}"]
    ordering = [F(key).desc(nulls_last=True) if query.descending else F(key).asc(nulls_last=True) for key in keys]
    return roots.order_by(*ordering, "pk")


# A page number past any forest's end (and past what the databases' integers hold once multiplied by a page's rows):
# the last page, as any page past the end is.
PAGE_NUMBER_MAX = 10**9


def _page_number(raw: str | None) -> int:
    """``Paginator.get_page``'s reading of a page number: not an integer -> 1; below 1 or above ``PAGE_NUMBER_MAX``
    -> 0 (the last page)."""
    try:
        number = int(raw or 1)
    except (TypeError, ValueError):
        return 1
    return number if 0 < number <= PAGE_NUMBER_MAX else 0


def _page_rows(ordered: QuerySet, *, number: int, per_page: int) -> list[tuple[int, int, int]]:
    """(root id, matching trees, row number) of the page ``number`` of ``ordered`` (a queryset of root ids in the
    page's order), else of its last page (``number`` 0 or past the end, as ``Paginator.get_page`` does), in ONE
    statement: the count for the pagination and the page's rows are window functions over the same filtered roots,
    so the filter (a search's hits above all) runs once, not once for the count and once more for the rows.

    The page is cut by an outer SELECT written here, not by Django's filter on window functions (which took longer to
    write the statement than the database to run it). SQLite's window functions cost about a microsecond a row, more
    than reading the ordered ids themselves: there the statement reads the ids in the page's order, and the count and
    the page are taken from them (``_page_of_ids``)."""
    if connection.vendor == "sqlite":
        try:
            sql, params = ordered.values_list("pk").query.sql_with_params()
        except EmptyResultSet:
            return []
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return _page_of_ids([row[0] for row in cursor.fetchall()], number=number, per_page=per_page)
    numbered = (
        ordered.annotate(
            page_tree=F("pk"),
            page_total=Window(Count("pk")),
            page_row=Window(RowNumber(), order_by=ordered.query.order_by),
        )
        .order_by()
        .values_list("page_tree", "page_total", "page_row")
    )
    try:
        sql, params = numbered.query.sql_with_params()
    except EmptyResultSet:  # a filter Django knows matches nothing (an empty list of ids): no statement to run
        return []
    least = "least" if connection.vendor == "postgresql" else "min"  # the smaller of two values (SQLite: min)
    last_start = f"(numbered.page_total - 1) / {per_page:d} * {per_page:d}"  # integer division on both databases
    start = f"{least}(%s, {last_start})" if number else last_start
    statement = (
        f"SELECT numbered.page_tree, numbered.page_total, numbered.page_row FROM ({sql}) numbered "  # noqa: S608
        f"WHERE numbered.page_row > {start} AND numbered.page_row <= {start} + {per_page:d} "
        "ORDER BY numbered.page_row"
    )
    offset = [(number - 1) * per_page] if number else []
    with connection.cursor() as cursor:
        cursor.execute(statement, (*params, *offset, *offset))
        return cursor.fetchall()


def _page_of_ids(ids: list[int], *, number: int, per_page: int) -> list[tuple[int, int, int]]:
    """``_page_rows``' answer from every id in the page's order."""
    total = len(ids)
    last_start = (total - 1) // per_page * per_page if total else 0
    start = min((number - 1) * per_page, last_start) if number else last_start
    return [(tree, total, start + offset + 1) for offset, tree in enumerate(ids[start : start + per_page])]


def tree_page(*, forest: Forest, query: TreeQuery, page_number: str | None, per_page: int) -> tuple[Page, list[int]]:
    """The page ``page_number`` of the trees ``query`` asks for, and its root ids, in the query's order (one
    statement, ``_page_rows``; a page number past the end or below 1 is the last page, not a number 1).

    On PostgreSQL it runs with ``jit = off``, in a transaction of its own (three more statements): the correlated
    counts make the planner's cost estimate high enough to compile the query (most of a second on a forest of 50,000
    nodes), though the tally answers nearly all of them."""
    ordered = forest_tree_query(forest=forest, query=query)
    number = _page_number(page_number)
    if connection.vendor != "postgresql":
        rows = _page_rows(ordered, number=number, per_page=per_page)
    else:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
            rows = _page_rows(ordered, number=number, per_page=per_page)
    paginator = Paginator(ordered, per_page)
    paginator.count = rows[0][1] if rows else 0  # known: saves Paginator its own count query
    ids = [row[0] for row in rows]
    page = paginator.page((rows[0][2] - 1) // per_page + 1 if rows else 1)  # no statement: the count is known
    page.object_list = ids
    return page, ids


@dataclass(frozen=True)
class TreeRow:
    """One row of the forest page's tree table (stats come from ``forests.selectors.tree_stats_many``)."""

    id: int
    ground_truth: int | None
    reference_answer: str | None
    prompt: str  # the dataset item's own text, else the start of the root's prompt
    prompt_is_item: bool


def tree_rows_load(*, forest: Forest, root_ids: list[int]) -> list[TreeRow]:
    """The page's roots in ``root_ids`` order, in one query: the item's own text cut to ``PROMPT_CHARS`` by the
    database (never the whole serialized item)."""
    fields = item_text_fields((forest.rollout_config or {}).get("template"))
    names = [*fields[0], *fields[1]]
    annotations = {
        f"item_{index}": Substr(KT(f"serialized_item__{name}"), 1, PROMPT_CHARS) for index, name in enumerate(names)
    }
    rows = (
        Node.objects.filter(pk__in=root_ids)
        .annotate(prompt_start=Substr("text", 1, PROMPT_CHARS), **annotations)
        .values("pk", "ground_truth", "reference_answer", "prompt_start", *annotations)
    )
    by_id = {}
    for row in rows:
        values = {name: row[f"item_{index}"] for index, name in enumerate(names)}
        text = item_text(values, fields)
        by_id[row["pk"]] = TreeRow(
            id=row["pk"],
            ground_truth=row["ground_truth"],
            reference_answer=row["reference_answer"],
            prompt=text if text is not None else row["prompt_start"],
            prompt_is_item=text is not None,
        )
    return [by_id[root_id] for root_id in root_ids if root_id in by_id]


# --- disagreement of a value source with the exact values (outside the database) -------------------------------------

DISAGREEMENT_CACHE_SECONDS = 3600


def tree_disagreement(*, forest: Forest, source: str, nodes: int, rollouts: int) -> dict[int, float]:
    """Each tree's mean absolute difference between ``source``'s step values and the exact values, over the steps
    both value (trees where none is valued are absent). ``ApplicationError`` for a source that cannot be read.

    It needs every node and rollout of the forest and the source's labels (``forests.metrics_reading``), so it is
    computed once per forest, source and fingerprint (``nodes`` and ``rollouts``, the forest's size, and the newest
    label of the source's version) and cached for ``DISAGREEMENT_CACHE_SECONDS``.
    """

    value_function = value_function_parse(source)
    newest = ProcessRewardLabel.objects.filter(prm_version=value_function.version).aggregate(newest=Max("id"))
    key = f"forest-disagreement:{forest.pk}:{value_function}:{nodes}:{rollouts}:{newest['newest'] or 0}"
    cached = cache.get(key)
    if cached is not None:
        return cached

    arrays = forest_arrays_load(forest=forest)
    exact = labelled_values(arrays)
    scored = forest_values(forest=forest, arrays=arrays, value_function=value_function)
    both = (exact.count > 0) & (scored.count > 0) & (arrays.depth > 0)
    difference = np.where(both, np.abs(np.nan_to_num(scored.value) - np.nan_to_num(exact.value)), 0.0)
    roots = arrays.root
    total = np.bincount(roots, weights=difference, minlength=arrays.size)
    steps = np.bincount(roots, weights=both.astype(np.float64), minlength=arrays.size)
    valued = np.nonzero(steps > 0)[0]
    result = {int(arrays.ids[i]): float(total[i] / steps[i]) for i in valued}
    cache.set(key, result, DISAGREEMENT_CACHE_SECONDS)
    return result


def order_by_disagreement(ids: list[int], disagreement: dict[int, float], *, descending: bool) -> list[int]:
    """``ids`` by disagreement (trees without one last, then by id)."""
    valued = sorted((i for i in ids if i in disagreement), key=lambda i: (disagreement[i], i), reverse=descending)
    return valued + sorted(i for i in ids if i not in disagreement)
