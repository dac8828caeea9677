"""The forest page's trees: sorted, filtered and searched in the database, paginated, the item's own text shown."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from forests.forest_search import (
    BAD_NUMBER,
    BAD_SORT,
    BAD_TRUTH,
    SEARCH_MAX_CHARS,
    SEARCH_NO_WORDS,
    SEARCH_TOO_LONG,
    SEARCH_TOO_MANY_WORDS,
    SORTS,
    SOURCE_NEEDED,
    tree_page,
    tree_query_parse,
)
from forests.intake import receive_rollout
from forests.models import Node, TreeTally, TreeWord
from forests.services import forest_delete
from forests.trie import forest_rollout_insert
from forests.views import TREES_PER_PAGE
from prmsite.core.item_text import item_text, item_text_fields
from tests.factories import make_forest, make_label, make_rollout, make_root

pytestmark = pytest.mark.django_db

TEMPLATE = "Statement: {statement}\n\nIs the statement true or false? Think in steps, then give a verdict."


@pytest.fixture
def user_client(client, django_user_model):
    from django.contrib.auth.models import Permission

    researcher = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(researcher)
    return client


def grow(forest, root, paths):
    """Rollouts ``paths`` (steps, prediction) into ``root``'s tree, each with its rollout row."""
    rollouts = []
    for steps, prediction in paths:
        leaf = forest_rollout_insert(
            forest_name=forest.name,
            example=root.text,
            steps=steps,
            prediction=prediction,
            ground_truth=root.ground_truth,
        )
        rollouts.append(
            make_rollout(
                forest=forest,
                node=leaf,
                example=root.text,
                reasoning=steps,
                prediction=prediction,
                ground_truth=root.ground_truth,
            )
        )
    return rollouts


def statement_root(forest, statement, ground_truth):
    return make_root(
        forest,
        TEMPLATE.format(statement=statement),
        ground_truth=ground_truth,
        serialized_item={"statement": statement, "label": ground_truth},
    )


@pytest.fixture
def forest_of_four():
    """Four trees: a (truth 1, 3 rollouts, 2 correct), b (truth 0, 1 rollout, correct), c (truth 1, 2 rollouts,
    none correct), d (truth 0, no rollout)."""
    forest = make_forest("liar-test-page", config_name="liar", rollout_config={"template": TEMPLATE})
    a = statement_root(forest, "Penguins can fly over the Andes.", 1)
    b = statement_root(forest, "Water boils at 100 degrees.", 0)
    c = statement_root(forest, "The moon is cheese.", 1)
    d = statement_root(forest, "Nobody looked at this one.", 0)
    rollouts = grow(
        forest,
        a,
        [
            (["Step 1: penguins swim. ", "Step 2: they cannot fly. ", "Verdict (code: 1)"], 1),
            (["Step 1: penguins swim. ", "Step 2: albatrosses glide. ", "Verdict (code: 1)"], 1),
            (["Step 1: consider Emperor penguins. ", "Verdict (code: 0)"], 0),
        ],
    )
    rollouts += grow(forest, b, [(["Step 1: boiling depends on pressure. ", "Verdict (code: 0)"], 0)])
    rollouts += grow(
        forest,
        c,
        [(["Step 1: the moon is rock. ", "Verdict (code: 0)"], 0), (["Step 1: cheese? ", "Verdict (code: 0)"], 0)],
    )
    return forest, {"a": a, "b": b, "c": c, "d": d}, rollouts


def tree_ids(response) -> list[int]:
    assert response.status_code == 200, response.content[:300]
    table = re.search(r'<table class="grid" id="tree-table">(.*?)</table>', response.content.decode(), re.S).group(1)
    return [int(i) for i in re.findall(r'<a href="/forests/[^/]+/trees/(\d+)/">', table)]


def names(roots, ids) -> str:
    by_id = {root.pk: name for name, root in roots.items()}
    return "".join(by_id[i] for i in ids)


def page(client, forest, **params):
    return client.get(reverse("forests:detail", args=[forest.name]), params)


def test_trees_sort_by_each_column_in_the_database(user_client, forest_of_four):
    forest, roots, _ = forest_of_four
    expected = {
        "tree": "abcd",
        "-tree": "dcba",
        "-rollouts": "acbd",  # 3, 2, 1, 0
        "rollouts": "dbca",
        "-nodes": "acbd",  # a: 1 + 6 steps; c: 1 + 4; b: 1 + 2; d: the root alone
        "nodes": "dbca",
        "-accuracy": "bacd",  # 1.0, 0.667, 0.0, none (last either way)
        "accuracy": "cabd",
        "ground_truth": "bdac",
        "-ground_truth": "acbd",
    }
    for sort, order in expected.items():
        assert names(roots, tree_ids(page(user_client, forest, sort=sort))) == order, sort


def test_trees_filter_by_accuracy_rollouts_nodes_and_ground_truth(user_client, forest_of_four):
    forest, roots, _ = forest_of_four
    cases = [
        ({"min_accuracy": "0.5"}, "ab"),
        ({"max_accuracy": "0.5"}, "c"),  # a tree without rollouts has no accuracy: no accuracy filter keeps it
        ({"min_rollouts": "2"}, "ac"),
        ({"max_rollouts": "0"}, "d"),
        ({"min_nodes": "5", "max_nodes": "6"}, "c"),
        ({"truth": "0"}, "bd"),
        ({"truth": "1", "min_rollouts": "1", "sort": "-accuracy"}, "ac"),
        ({"truth": "", "q": "", "min_nodes": ""}, "abcd"),  # an empty field is an absent one
    ]
    for params, order in cases:
        response = page(user_client, forest, **params)
        assert names(roots, tree_ids(response)) == order, params
    html = page(user_client, forest, truth="0").content.decode()
    assert "2 of 4 trees match" in html


def test_search_finds_trees_by_words_of_their_prompt_or_steps(user_client, forest_of_four):
    forest, roots, _ = forest_of_four
    cases = [
        ("albatrosses", "a"),  # a step
        ("ALBATROSSES glide", "a"),  # case-insensitive, every word in one step
        ("penguins", "a"),  # a step and the prompt
        ("moon", "c"),  # the prompt
        ("pressure", "b"),
        ("code", "abc"),  # d has no step
        ("albatrosses moon", ""),  # no text holds both
        ("albatross", ""),  # whole words
        ('"penguins" OR * NEAR(moon', ""),  # operators are words, not syntax: no text holds every one
        ("statement", "abcd"),  # the template's words are in every prompt
    ]
    for q, order in cases:
        response = page(user_client, forest, q=q)
        assert names(roots, tree_ids(response)) == order, q
    html = page(user_client, forest, q="nothing-like-this").content.decode()
    assert "No tree matches." in html


def test_search_combines_with_sort_and_filters(user_client, forest_of_four):
    forest, roots, _ = forest_of_four
    response = page(user_client, forest, q="code", sort="-accuracy", min_rollouts="2")
    assert names(roots, tree_ids(response)) == "ac"


def test_search_only_looks_in_its_own_forest(user_client, forest_of_four):
    forest, roots, _ = forest_of_four
    other = make_forest("other-forest")
    other_root = make_root(other, "albatrosses everywhere", ground_truth=1)
    assert names(roots, tree_ids(page(user_client, forest, q="albatrosses"))) == "a"
    assert tree_ids(page(user_client, other, q="albatrosses")) == [other_root.pk]


def _listed(forest, q: str) -> list[int]:
    query = tree_query_parse({"q": q}, forest=forest)
    return tree_page(forest=forest, query=query, page_number="1", per_page=50)[1]


@pytest.mark.parametrize("delete", ["service", "orm"])
def test_the_search_index_follows_inserts_and_goes_with_its_forest(forest_of_four, delete):
    forest, roots, _ = forest_of_four
    assert _listed(forest, "zeppelins") == []
    grow(forest, roots["d"], [(["Step 1: zeppelins float. ", "Verdict (code: 1)"], 1)])
    assert _listed(forest, "zeppelins") == [roots["d"].pk]
    forest_id = forest.pk
    assert TreeWord.objects.filter(forest_id=forest_id).exists()
    if delete == "service":
        forest_delete(forest=forest)
    else:
        forest.delete()
    assert not TreeWord.objects.filter(forest_id=forest_id).exists()


def test_prompts_show_the_items_own_text_not_the_template(user_client, forest_of_four):
    forest, _roots, _ = forest_of_four
    no_item = make_root(forest, "A prompt with no item behind it", ground_truth=1, serialized_item=None)
    html = page(user_client, forest).content.decode()
    table = re.search(r'id="tree-table">(.*?)</table>', html, re.S).group(1)
    assert "Penguins can fly over the Andes." in table
    assert "Is the statement true or false" not in table  # the template's boilerplate
    assert "A prompt with no item behind it" in table  # no item: the root's prompt, marked
    assert 'class="muted" title="the root\'s prompt' in table
    assert no_item.pk in tree_ids(page(user_client, forest))


def test_the_item_field_comes_from_the_template_first(user_client):
    forest = make_forest(
        "math-like", rollout_config={"template": "Problem: {problem}\n\nBox it.", "answer_kind": "math"}
    )
    make_root(
        forest,
        "Problem: What is 1+1?\n\nBox it.",
        ground_truth=None,
        reference_answer="2",
        serialized_item={"statement": "a distractor", "problem": "What is 1+1?", "solution": "x" * 10_000},
    )
    html = page(user_client, forest).content.decode()
    assert "What is 1+1?" in html and "a distractor" not in html and "x" * 400 not in html
    assert names({"r": Node.objects.get(forest=forest)}, tree_ids(page(user_client, forest, truth="2"))) == "r"
    assert tree_ids(page(user_client, forest, truth="3")) == []  # other kinds: the reference answer, as text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "bogus"}, BAD_SORT.format(choices=", ".join(SORTS))),
        ({"min_accuracy": "2"}, BAD_NUMBER.format(name="min_accuracy", bounds=" from 0 to 1")),
        ({"max_rollouts": "many"}, BAD_NUMBER.format(name="max_rollouts", bounds=" from 0")),
        ({"min_nodes": "nan"}, BAD_NUMBER.format(name="min_nodes", bounds=" from 1")),
        ({"q": "x" * (SEARCH_MAX_CHARS + 1)}, SEARCH_TOO_LONG),
        ({"q": " ".join(f"w{i}" for i in range(11))}, SEARCH_TOO_MANY_WORDS),
        ({"q": "!!! ???"}, SEARCH_NO_WORDS),
        ({"truth": "yes"}, BAD_TRUTH),
        ({"sort": "disagreement"}, SOURCE_NEEDED),
    ],
)
def test_bad_parameters_are_a_400_with_one_line(user_client, forest_of_four, params, message):
    forest, _, _ = forest_of_four
    response = page(user_client, forest, **params)
    assert response.status_code == 400
    assert response.content.decode() == message
    assert "\n" not in message


def test_a_value_source_that_cannot_be_read_is_a_400(user_client, forest_of_four):
    forest, _, _ = forest_of_four
    for source in ("bogus", "prm:no-such-version"):
        response = page(user_client, forest, sort="disagreement", source=source)
        assert response.status_code == 400
        assert len(response.content.decode().splitlines()) == 1


def test_trees_sort_by_a_value_sources_disagreement_with_the_exact_values(user_client, forest_of_four):
    forest, roots, rollouts = forest_of_four
    # a's rollouts: the PRM agrees on the correct ones' steps only roughly; c's: it calls every step of two wrong
    # rollouts right (exact values 0): the largest disagreement. b: one correct rollout scored 1, 1: none.
    by_tree = {}
    for rollout in rollouts:
        by_tree.setdefault(rollout.node.tree_id, []).append(rollout)
    for rollout in by_tree[roots["a"].pk]:
        make_label(rollout, prm_version="prm-v1", prm_output=[0.5] * len(rollout.reasoning))
    for rollout in by_tree[roots["b"].pk]:
        make_label(rollout, prm_version="prm-v1", prm_output=[1.0] * len(rollout.reasoning))
    for rollout in by_tree[roots["c"].pk]:
        make_label(rollout, prm_version="prm-v1", prm_output=[1.0] * len(rollout.reasoning))
    response = page(user_client, forest, sort="-disagreement", source="prm:prm-v1")
    assert names(roots, tree_ids(response)) == "cabd"  # d: no valued step, last
    rows = re.findall(r"<tr>(.*?)</tr>", response.content.decode().split('id="tree-table"')[1], re.S)
    cells = [re.findall(r"<td class=\"num\">(.*?)</td>", row)[-1] for row in rows if "<td" in row]
    assert cells == ["1.000", "0.500", "0.000", "\N{EN DASH}"]
    response = page(user_client, forest, sort="disagreement", source="prm:prm-v1", truth="1")
    assert names(roots, tree_ids(response)) == "ac"


def test_pagination_keeps_the_sort_filters_and_search(user_client):
    forest = make_forest("many-trees", rollout_config={"template": TEMPLATE})
    for i in range(TREES_PER_PAGE + 5):
        statement_root(forest, f"Statement number {i} about kites.", i % 2)
    response = page(user_client, forest, q="kites", sort="-tree", truth="1")
    html = response.content.decode()
    assert f"{(TREES_PER_PAGE + 5) // 2} of {TREES_PER_PAGE + 5} trees match" in html
    assert "page 1 of 1" not in html
    response = page(user_client, forest, q="kites", sort="-tree")
    html = response.content.decode()
    nxt = re.search(r'<a href="\?([^"]*)">next \N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}</a>', html).group(1)
    nxt = nxt.replace("&amp;", "&")
    assert set(nxt.split("&")) == {"q=kites", "sort=-tree", "page=2"}
    first = tree_ids(response)
    second = tree_ids(user_client.get(reverse("forests:detail", args=[forest.name]) + "?" + nxt))
    assert len(first) == TREES_PER_PAGE and len(second) == 5
    assert first + second == sorted(first + second, reverse=True)


def _queries(client, forest, params) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert page(client, forest, **params).status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"sort": "-accuracy"},
        {"sort": "nodes", "min_rollouts": "1"},
        {"q": "code", "sort": "-rollouts", "max_accuracy": "1"},
        {"truth": "1", "sort": "ground_truth", "page": "2"},
    ],
)
def test_a_page_costs_the_same_queries_whatever_the_forests_size(user_client, params):
    """The same query count on a forest of 3 trees and one of 2 pages of bigger trees."""
    small = make_forest("small-forest", rollout_config={"template": TEMPLATE})
    big = make_forest("big-forest", rollout_config={"template": TEMPLATE})
    for i in range(3):
        grow(small, statement_root(small, f"small {i}", 1), [([f"Step {i}. ", "Verdict (code: 1)"], 1)])
    for i in range(TREES_PER_PAGE + 10):
        root = statement_root(big, f"big {i}", 1)
        if i % 7 == 0:
            grow(big, root, [([f"Step {i}.{j}. ", "Verdict (code: 1)"], j % 2) for j in range(4)])
    user_client.get(reverse("forests:detail", args=[small.name]))  # warm the session and the content types
    user_client.get(reverse("forests:detail", args=[big.name]))  # and both forests' progress (forest_progress)
    assert _queries(user_client, small, params) == _queries(user_client, big, params)


def test_the_page_needs_the_view_permission(client, django_user_model, forest_of_four):
    forest, _, _ = forest_of_four
    response = page(client, forest, q="penguins", sort="-accuracy")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    client.force_login(django_user_model.objects.create_user(username="labeller", password="a-long-test-password"))
    assert page(client, forest, q="penguins").status_code == 403


def test_the_search_words_are_shown_escaped(user_client, forest_of_four):
    forest, _, _ = forest_of_four
    html = page(user_client, forest, q='"><script>alert(1)</script>').content.decode()
    assert "<script>alert(1)" not in html
    assert "&quot;&gt;&lt;script&gt;" in html


def _search_index_exists() -> bool:
    """The word index's triggers on forests_node (the table is the model's)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'forests_node'::regclass")
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'forests_node'")
        triggers = {row[0] for row in cursor.fetchall()}
    return {"forests_node_words_insert", "forests_node_words_update"} <= triggers


@pytest.mark.django_db(transaction=True)
def test_the_search_migration_is_reversible_and_indexes_the_nodes_already_there():
    forest = make_forest("migrated")
    kestrels = make_root(forest, "kestrels hover", ground_truth=1)
    grow(forest, kestrels, [(["Kestrels hover again. ", "Then kestrels dive."], 1)])  # one word, three nodes
    assert _search_index_exists()
    call_command("migrate", "forests", "0008_forest_page_search", verbosity=0)
    try:
        assert not _search_index_exists()
        with connection.cursor() as cursor:  # 0008's per-node index is back, and holds the nodes (3 say kestrels)
            if connection.vendor == "postgresql":
                cursor.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'node_text_search'")
                assert cursor.fetchone()[0] == 1
            else:
                cursor.execute("SELECT count(*) FROM forests_node_fts WHERE forests_node_fts MATCH 'kestrels'")
                assert cursor.fetchone()[0] == 3
        call_command("migrate", "forests", "0004_search_reports", verbosity=0)
        falcons = make_root(forest, "falcons dive", ground_truth=0)  # stored while nothing indexes it
    finally:
        call_command("migrate", verbosity=0)
    assert _search_index_exists()
    assert _listed(forest, "kestrels") == [kestrels.pk]
    assert _listed(forest, "falcons") == [falcons.pk]
    # the nodes already there were read in with each word of a tree once
    assert TreeWord.objects.filter(forest=forest, word="kestrels").count() == 1
    rows = TreeWord.objects.filter(forest=forest).values_list("word", "tree_id")
    assert len(rows) == len(set(rows))


def test_trees_with_a_tally_sort_by_it_as_their_rollouts_arrive(user_client):
    """Rollouts posted through the intake are tallied per tree (TreeTally): the sort reads the tally."""
    forest = make_forest("tallied", rollout_config={"template": TEMPLATE})
    roots = {name: statement_root(forest, f"Statement {name}.", 1) for name in "xyz"}
    for name, predictions in {"x": [1, 0, 0], "y": [1, 1], "z": [0]}.items():
        for i, prediction in enumerate(predictions):
            receive_rollout(
                model="m",
                example=roots[name].text,
                reasoning=[f"Step {i} of {name}. ", f"Verdict (code: {prediction})"],
                worker="w",
                prediction=prediction,
                ground_truth=1,
                forest_name=forest.name,
            )
    assert TreeTally.objects.filter(forest=forest).count() == 3
    assert names(roots, tree_ids(page(user_client, forest, sort="-accuracy"))) == "yxz"
    assert names(roots, tree_ids(page(user_client, forest, sort="-rollouts"))) == "xyz"
    assert names(roots, tree_ids(page(user_client, forest, min_accuracy="0.3"))) == "xy"


def test_the_search_index_and_its_triggers_survive_every_migration():
    """A later migration that rebuilds forests_node on SQLite drops its triggers: it must create them again."""
    assert _search_index_exists()


def test_the_items_own_text_is_the_longest_text_the_template_puts_in():
    fields = item_text_fields("Item {id} of {date}: {question}\n\nAnswer {{in braces}}.")
    assert fields == (["id", "date", "question"], ["problem", "statement", "prompt", "query", "input", "text"])
    assert item_text({"id": "17", "date": "2024-01-01", "question": "Why is the sky blue?"}, fields) == (
        "Why is the sky blue?"
    )
    assert item_text({"id": "17", "problem": "Add 2 and 2."}, item_text_fields("Item {id}")) == "17"
    assert item_text({"problem": "Add 2 and 2."}, item_text_fields("{x.y}")) == "Add 2 and 2."
    assert item_text({"problem": "  "}, item_text_fields("{0} bad")) is None  # a template that cannot be read
