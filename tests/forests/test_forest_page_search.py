"""The forest page's tree list: a search reads each matching tree's words once (whatever its matching steps), and the
count and the page's ids are one statement that pages as ``Paginator.get_page`` does."""

from __future__ import annotations

import re

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext

from forests.forest_search import tree_page, tree_query_parse
from forests.models import Node, TreeWord
from forests.trie import forest_rollout_insert
from prmsite.core.search_words import search_words
from tests.factories import make_forest, make_root

pytestmark = pytest.mark.django_db


def grow(forest, root, steps_list):
    for steps in steps_list:
        forest_rollout_insert(
            forest_name=forest.name, example=root.text, steps=steps, prediction=1, ground_truth=root.ground_truth
        )


def expected_trees(forest, words) -> list[int]:
    """The oracle: roots (by id) of the trees whose texts (prompt and steps together) hold every word, read in
    Python."""
    held: dict[int, set[str]] = {}
    for tree_id, text in Node.objects.filter(forest=forest).values_list("tree_id", "text"):
        held.setdefault(tree_id, set()).update(w.lower() for w in re.findall(r"\w+", text))
    return sorted(tree for tree, found in held.items() if all(word in found for word in words))


def listed(forest, per_page=3, **params) -> tuple[list[int], int]:
    """Every page's ids in order, and the count the first page gave."""
    query = tree_query_parse(params, forest=forest)
    first, ids = tree_page(forest=forest, query=query, page_number="1", per_page=per_page)
    every = list(ids)
    for number in range(2, first.paginator.num_pages + 1):
        every += tree_page(forest=forest, query=query, page_number=str(number), per_page=per_page)[1]
    return every, first.paginator.count


@pytest.fixture
def interleaved():
    """Two forests whose roots and steps interleave in id; a common word in most steps of most trees, one word in a
    single step deep in one tree, one in a prompt."""
    here, there = make_forest("search-here"), make_forest("search-there")
    roots = {here: [], there: []}
    for i in range(7):
        for forest in (here, there):
            root = make_root(forest, f"Prompt {i} of {forest.name}" + (" with kestrels" if i == 5 else ""))
            roots[forest].append(root)
            paths = [[f"Step {j}: a variant of {i}. ", f"Then {k}."] for j in range(3) for k in range(2)]
            if i % 3 == 1:
                paths = [[f"Step {j}: plain {i}. "] for j in range(3)]  # no common word in this tree
            if i == 4 and forest is here:
                paths.append(["Step 0: plain 4. ", "Deep: a lonely zeppelin variant. "])
            grow(forest, root, paths)
    return here, there, roots


@pytest.mark.parametrize(
    "q", ["variant", "zeppelin", "kestrels", "variant then", "plain 4", "nowhere", "kestrels variant", "lonely 5", "_"]
)
def test_a_search_lists_each_matching_tree_once_and_only_its_own_forests(interleaved, q):
    here, there, _roots = interleaved
    words = tuple(q.split())
    for forest in (here, there):
        ids, count = listed(forest, q=q)
        assert ids == expected_trees(forest, words)
        assert count == len(ids)
    # 7 trees each, 2 without the word in their steps (i = 1, 4); here, i = 4 holds it deep down
    assert (listed(here, q="variant")[1], listed(there, q="variant")[1]) == (6, 5)


def test_a_word_of_the_prompt_and_one_of_a_step_find_their_tree_together(interleaved):
    here, _there, roots = interleaved
    assert listed(here, q="kestrels variant")[0] == [roots[here][5].pk]  # the prompt's word and the steps'
    assert listed(here, q="Kestrels PROMPT")[0] == [roots[here][5].pk]  # case does not matter
    assert listed(here, q="kestrels zeppelin")[0] == []  # two trees' words: no tree holds both


def test_a_tree_holds_each_of_its_words_once_whatever_its_steps_hold():
    """The index is per tree: a word in every step of a tree is one row, so a common word costs its trees."""
    forest = make_forest("words-once")
    root = make_root(forest, "A question about variants")
    grow(forest, root, [[f"Step {j}: a variant. ", f"Variant {k} again."] for j in range(4) for k in range(3)])
    rows = TreeWord.objects.filter(forest=forest, word="variant")
    assert list(rows.values_list("tree_id", flat=True)) == [root.pk]
    words = set(TreeWord.objects.filter(forest=forest).values_list("word", flat=True))
    texts = Node.objects.filter(forest=forest).values_list("text", flat=True)
    assert words == {word for text in texts for word in search_words(text)}
    assert TreeWord.objects.filter(forest=forest).count() == len(words)


def test_a_tree_found_before_its_root_was_given_its_tree_id_is_still_found(interleaved):
    """Roots are inserted with no tree id, then given their own; a changed text adds its words (words are only ever
    added: the old text's stay, see TreeWord)."""
    here, _there, roots = interleaved
    root = roots[here][5]
    assert listed(here, q="kestrels")[0] == [root.pk]
    Node.objects.filter(pk=root.pk).update(text="Prompt 5 with falcons")
    assert listed(here, q="falcons")[0] == [root.pk]
    assert listed(here, q="kestrels")[0] == [root.pk]


def test_a_long_word_is_found_by_its_indexed_start():
    forest = make_forest("long-words")
    root = make_root(forest, "x" * 70 + " short")
    assert listed(forest, q="x" * 70)[0] == [root.pk]
    assert listed(forest, q="x" * 64 + "yz")[0] == [root.pk]  # both sides are cut to 64 characters
    assert listed(forest, q="x" * 63)[0] == []


def _selects(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]


@pytest.mark.parametrize("params", [{"q": "variant"}, {"q": "variant", "sort": "-nodes"}, {"sort": "-tree"}])
def test_the_count_and_the_page_are_one_statement(interleaved, params):
    """A search's matching runs once per page, not once for the count and again for the rows."""
    here, _there, _roots = interleaved
    query = tree_query_parse(params, forest=here)
    with CaptureQueriesContext(connection) as queries:
        page, ids = tree_page(forest=here, query=query, page_number="2", per_page=2)
    selects = _selects(queries)
    words = [sql for sql in selects if "tsvector_to_array" in sql]  # PostgreSQL reads the query's words first
    assert len(words) == (1 if "q" in params and connection.vendor == "postgresql" else 0)
    tally_check = 1 if params.get("sort") == "-nodes" else 0  # the check that every tree is tallied
    assert len(selects) == 1 + len(words) + tally_check
    if "q" in params:
        assert sum("forests_treeword" in sql for sql in selects) == 1
    assert page.number == 2 and len(ids) == 2 and page.has_next() and page.has_previous()


@pytest.mark.parametrize("raw", ["1", "2", "3", "4", "99", "0", "-2", "x", "", None, "2.0", "9" * 30, "-" + "9" * 30])
@pytest.mark.parametrize("params", [{}, {"q": "variant", "sort": "-tree"}, {"q": "nowhere"}])
def test_a_page_number_reads_as_paginators_get_page_does(interleaved, raw, params):
    here, _there, _roots = interleaved
    query = tree_query_parse(params, forest=here)
    every = listed(here, per_page=100, **params)[0]
    expected = Paginator(every, 2).get_page(raw)
    page, ids = tree_page(forest=here, query=query, page_number=raw, per_page=2)
    assert (page.number, ids, page.paginator.count) == (expected.number, list(expected), len(every))
    assert list(page) == ids and page.paginator.num_pages == expected.paginator.num_pages


def test_the_roots_by_ground_truth_are_read_from_their_partial_index():
    forest = make_forest("truths")
    for truth in (0, 1, 1):
        make_root(forest, f"Root with truth {truth} {Node.objects.count()}", ground_truth=truth)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            statement = "SELECT id FROM forests_node WHERE forest_id = %s AND depth = 0 AND ground_truth = 1"
            cursor.execute(f"EXPLAIN QUERY PLAN {statement}", [forest.pk])
            assert any("COVERING INDEX node_root_truth" in row[-1] for row in cursor.fetchall())
            cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'node_root_truth'")
        else:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'node_root_truth'")
        assert re.search(r"WHERE \(*\"?depth\"? = 0", cursor.fetchone()[0])
    assert listed(forest, truth="1")[0] == sorted(
        Node.objects.filter(forest=forest, ground_truth=1).values_list("pk", flat=True)
    )
