"""The tree page end to end: blocks of consecutive steps and forks, value sources (exact, prm:V, labels:S) laid over
the steps one or two at a time, the first step below the threshold marked, bad input a 400 with one line, and a
fixed number of queries whatever the tree's size."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from forests.metrics.values import ERROR_VALUE_FUNCTION
from forests.metrics_reading import BAD_OUTPUT
from forests.models import Node
from forests.tree_sources import BAD_THRESHOLD, UNKNOWN_SOURCE
from forests.trie import forest_rollout_insert
from rollouts.models import Rollout
from tests.factories import make_forest, make_label, make_rollout, make_root
from tests.rollouts.labelling.conftest import make_scheme

pytestmark = pytest.mark.django_db

PROMPT = "Is the statement true?"
SHARED = [f"Step {i}. " for i in range(6)]


@pytest.fixture
def user_client(client, django_user_model):
    researcher = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(researcher)
    return client


def grow(forest, paths):
    """One rollout per ``(steps, prediction)`` in ``forest``'s tree of PROMPT (ground truth 1)."""
    rollouts = []
    for steps, prediction in paths:
        leaf = forest_rollout_insert(
            forest_name=forest.name, example=PROMPT, steps=steps, prediction=prediction, ground_truth=1
        )
        rollouts.append(
            make_rollout(
                forest=forest, node=leaf, example=PROMPT, reasoning=steps, prediction=prediction, ground_truth=1
            )
        )
    return rollouts


def build_chain_tree():
    """A chain of 6 shared steps forking into a right and a wrong answer, and a short other path. prm:v1 scores the
    wrong path's third step 0.3; the labelling scheme human-v1 rates it 0 (not preferred)."""
    forest = make_forest("tree-view-forest")
    root = make_root(forest, PROMPT, ground_truth=1)
    right, wrong, _other = grow(
        forest,
        [
            ([*SHARED, "So (code: 1)"], 1),
            ([*SHARED, "So (code: 0)"], 0),
            (["Other. ", "So (code: 1)"], 1),
        ],
    )
    make_label(right, "v1", prm_output=[0.9] * 7)
    make_label(wrong, "v1", prm_output=[0.9, 0.9, 0.3, 0.9, 0.9, 0.9, 0.1])
    make_scheme("human-v1")
    make_label(wrong, "human-v1", prm_output=[1, 1, 0, 2, 1, 1, 0], worker="")
    return forest, root


@pytest.fixture
def chain_tree():
    return build_chain_tree()


def page(client, forest, root, **params):
    return client.get(reverse("forests:tree", args=[forest.name, root.pk]), params)


def step(root, text):
    return Node.objects.get(tree=root, text=text)


def cells_of(html: str, node: Node) -> list[str]:
    """The value cells of ``node``'s step, as their hover texts."""
    row = re.search(rf'<div class="step[^"]*" id="node-{node.pk}">\s*<div class="cells">(.*?)</div>', html, re.S)
    assert row, f"no step row for node {node.pk}"
    return [html_lib.unescape(t) for t in re.findall(r'title="([^"]*)"', row.group(1))]


def test_a_chain_is_one_block_and_forks_list_their_branches(user_client, chain_tree):
    forest, root = chain_tree
    html = page(user_client, forest, root).content.decode()
    assert html.count('<div class="step') == Node.objects.filter(tree=root).count() == 11
    # the root's block, the chain of six steps (one block), its two answers, the other path (two steps, one block)
    assert html.count('<div class="block">') == 5
    assert html.count('<details class="kids"') == 2  # the root and the sixth step fork
    assert html.count("<div") == html.count("</div>") and html.count("<details") == html.count("</details>")
    first, sixth = step(root, "Step 0. "), step(root, "Step 5. ")
    chain = html[html.index(f'id="node-{first.pk}"') : html.index(f'id="node-{sixth.pk}"')]
    assert '<div class="block">' not in chain and "<details" not in chain  # consecutive steps, no staircase
    assert chain.count('<div class="step') == 5


def test_the_exact_values_are_laid_over_the_steps_by_default(user_client, chain_tree):
    forest, root = chain_tree
    html = page(user_client, forest, root).content.decode()
    first = step(root, "Step 0. ")
    assert cells_of(html, first) == ["exact: 0.500, 1/2 rollouts correct, 95% interval [0.09, 0.91]"]
    wrong_leaf = step(root, "So (code: 0)")
    assert 'class="cell below"' in html  # the wrong answer's leaf is where its path first falls below 0.5
    assert re.search(rf'id="node-{wrong_leaf.pk}">\s*<div class="cells"><span class="cell below"', html)
    assert "leaf, prediction" in html and "not correct" in html
    assert f'href="#node-{first.pk}"' in html  # the permalink


def test_two_sources_side_by_side_and_the_first_step_below_the_threshold(user_client, chain_tree):
    forest, root = chain_tree
    response = page(user_client, forest, root, source="prm:v1", compare="labels:human-v1", threshold="0.5")
    assert response.status_code == 200
    html = response.content.decode()
    third = step(root, "Step 2. ")
    cells = cells_of(html, third)
    assert cells[0] == "prm:v1: 0.600, mean of 2 labels, 95% interval [0.13, 0.94]"
    assert cells[1] == "labels:human-v1: 0.000, mean of 1 label, 95% interval [0.00, 0.79]"
    assert re.search(
        rf'id="node-{third.pk}">\s*<div class="cells"><span class="cell" [^>]*>.*?<span class="cell below"', html
    )
    fourth = step(root, "Step 3. ")
    assert cells_of(html, fourth)[1].startswith(
        "labels:human-v1: 0.500, mean of 1 label,"
    )  # neutral: 0.5, not marked again
    assert "labels on 2 of 3 rollouts of the tree" in html and "labels on 1 of 3 rollouts of the tree" in html
    other = step(root, "Other. ")
    assert cells_of(html, other)[0].endswith("no value (nothing reaches this step)")
    # the menus offer what labels the tree, and the links to a subtree keep the sources
    assert "<option selected>prm:v1</option>" in html and "<option selected>labels:human-v1</option>" in html
    assert f"?node={third.pk}&amp;source=prm%3Av1&amp;compare=labels%3Ahuman-v1&amp;threshold=0.5" in html


def test_the_threshold_moves_the_marks(user_client, chain_tree):
    forest, root = chain_tree
    low = page(user_client, forest, root, source="prm:v1", threshold="0.2").content.decode()
    high = page(user_client, forest, root, source="prm:v1", threshold="0.95").content.decode()
    assert low.count('class="cell below"') == 1  # only the wrong answer's 0.1
    assert cells_of(low, step(root, "So (code: 0)"))[0].startswith("prm:v1: 0.100")
    assert re.search(rf'id="node-{step(root, "So (code: 0)").pk}">\s*<div class="cells"><span class="cell below"', low)
    # 0.9 < 0.95: both labelled paths fall at their shared first step, marked once; nothing below it is marked again
    assert high.count('class="cell below"') == 1
    assert re.search(rf'id="node-{step(root, "Step 0. ").pk}">\s*<div class="cells"><span class="cell below"', high)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"source": "bogus"}, ERROR_VALUE_FUNCTION.format(option="bogus")),
        ({"compare": "prm:"}, ERROR_VALUE_FUNCTION.format(option="prm:")),
        ({"threshold": "high"}, BAD_THRESHOLD),
        ({"threshold": "1.5"}, BAD_THRESHOLD),
        ({"threshold": "nan"}, BAD_THRESHOLD),
        ({"source": "prm:nope"}, UNKNOWN_SOURCE.format(source="prm:nope", forest="tree-view-forest")),
    ],
)
def test_a_bad_source_or_threshold_is_a_400_with_one_line(user_client, chain_tree, params, message):
    forest, root = chain_tree
    response = page(user_client, forest, root, **params)
    assert response.status_code == 400
    assert f'<p class="error">{html_lib.escape(message)}</p>' in response.content.decode()


def test_a_label_that_is_not_a_list_of_numbers_is_a_400(user_client, chain_tree):
    forest, root = chain_tree
    rollout = Rollout.objects.filter(forest=forest).first()
    label = make_label(rollout, "broken", prm_output=["high"])
    response = page(user_client, forest, root, source="prm:broken")
    assert response.status_code == 400
    assert html_lib.escape(BAD_OUTPUT.format(label_id=label.pk, version="broken")) in response.content.decode()


def test_the_tree_page_is_closed_to_anyone_not_allowed_in(client, django_user_model, chain_tree):
    forest, root = chain_tree
    url = reverse("forests:tree", args=[forest.name, root.pk])
    assert client.get(url, {"source": "prm:v1"}).status_code == 302  # the login page
    client.force_login(django_user_model.objects.create_user(username="labeller", password="a-long-test-password"))
    assert client.get(url, {"source": "prm:v1"}).status_code == 403
    assert client.get(url, {"source": "bogus"}).status_code == 403  # no message before the permission check


def queries(client, forest, root, **params) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert page(client, forest, root, **params).status_code == 200
    return len(captured)


def test_a_fixed_number_of_queries_whatever_the_trees_size(user_client, chain_tree):
    forest, root = chain_tree
    params = {"source": "prm:v1", "compare": "labels:human-v1"}
    queries(user_client, forest, root, **params)  # warm the session and the caches
    small = queries(user_client, forest, root, **params)
    for i in range(30):
        (rollout,) = grow(forest, [([*SHARED[:3], f"Branch {i}. ", f"Then {i}. ", "So (code: 1)"], 1)])
        make_label(rollout, "v1", prm_output=[0.5] * 6)
        make_label(rollout, "human-v1", prm_output=[1] * 6, worker="")
    assert Node.objects.filter(tree=root).count() > 100
    assert queries(user_client, forest, root, **params) == small
    assert queries(user_client, forest, root) <= small  # the exact values read no label


def test_labelled_is_read_as_the_exact_values(user_client, chain_tree):
    forest, root = chain_tree
    html = page(user_client, forest, root, source="labelled").content.decode()
    assert cells_of(html, step(root, "Step 0. "))[0].startswith("exact: 0.500")


def test_a_hostile_version_name_is_shown_inert_in_the_menus_and_the_400(user_client, chain_tree):
    forest, root = chain_tree
    hostile = '<script>alert("v")</script>'
    make_label(Rollout.objects.filter(forest=forest).first(), hostile, prm_output=[0.5])
    html = page(user_client, forest, root, source=f"prm:{hostile}").content.decode()
    assert hostile not in html and "&lt;script&gt;alert(&quot;v&quot;)&lt;/script&gt;" in html
    refused = page(user_client, forest, root, source=f"prm:x{hostile}")
    assert refused.status_code == 400 and hostile not in refused.content.decode()


def test_a_node_page_links_to_its_place_on_the_tree(user_client, chain_tree):
    forest, root = chain_tree
    node = step(root, "Step 3. ")
    html = user_client.get(reverse("forests:node", args=[forest.name, root.pk, node.pk])).content.decode()
    tree_url = reverse("forests:tree", args=[forest.name, root.pk])
    assert f'href="{tree_url}#node-{node.pk}">on the tree</a>' in html
