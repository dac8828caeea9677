"""A tree page's work is bounded per page view, not only per step (issue 17, item 7): 12 rollouts of 5 steps of
200,000 characters made a first view of 230 s and 16 MB of HTML. Work is counted (characters parsed as markdown,
markdown calls, bytes emitted), never timed; every character of every step stays reachable."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from markdown_it import MarkdownIt

import prmsite.core.rendering
from forests.models import Node
from forests.selectors import tree_rows
from forests.trie import forest_rollout_insert
from tests.factories import make_forest, make_rollout, make_root

pytestmark = pytest.mark.django_db

STEP_CHARS = 200_000
PROMPT = "Is **this** true?"
PAGE_CHROME_BYTES = 40_000  # the page around the texts: header, styles, the dataset item
NODE_CHROME_BYTES = 1_500  # each node's <details>, summary line and "the whole text" link


def heavy_step(rollout: int, step: int) -> str:
    head = f"**Rollout {rollout}, step {step}**: <u>check</u> [a](https://example.org) `x < y` "
    return (head + "some words of a long step " * (STEP_CHARS // 26 + 1))[:STEP_CHARS]


@pytest.fixture
def user_client(client, django_user_model):
    from django.contrib.auth.models import Permission

    researcher = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(researcher)
    return client


@pytest.fixture
def heavy_tree():
    forest = make_forest("heavy-pages")
    root = make_root(forest, PROMPT, ground_truth=1, serialized_item={"statement": "x" * STEP_CHARS, "n": [1, 2]})
    for r in range(12):
        steps = [heavy_step(r, s) for s in range(5)]
        leaf = forest_rollout_insert(forest_name=forest.name, example=PROMPT, steps=steps, prediction=1)
        make_rollout(forest=forest, node=leaf, example=PROMPT, reasoning=steps, prediction=1, ground_truth=1)
    return forest, root


@pytest.fixture
def markdown_work(monkeypatch):
    """The length of every text markdown-it parses (the render cache emptied first, so that every parse counts)."""
    parsed: list[int] = []
    real = MarkdownIt.render

    def counting(self, text: str, env=None) -> str:
        parsed.append(len(text))
        return real(self, text, env)

    monkeypatch.setattr(MarkdownIt, "render", counting)
    prmsite.core.rendering._cache.clear()
    return parsed


def test_a_tree_of_long_steps_parses_and_emits_a_bounded_amount(user_client, heavy_tree, markdown_work, settings):
    forest, root = heavy_tree
    response = user_client.get(reverse("forests:tree", args=[forest.name, root.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<div class="step') == 61
    assert sum(markdown_work) <= settings.PAGE_MARKDOWN_MAX_CHARS
    assert len(markdown_work) <= 61 + 2  # at most one call per node and per item field
    assert len(response.content) <= settings.PAGE_TEXT_MAX_BYTES + 61 * NODE_CHROME_BYTES + PAGE_CHROME_BYTES
    assert len(response.content) < 1_000_000  # was 16 MB: 61 steps of 4,000 characters at most
    assert "<strong>Rollout 0, step 0</strong>" in html  # the first steps are still read as markdown
    step = Node.objects.get(tree=root, depth=1, text__startswith="**Rollout 0,")
    node_url = reverse("forests:node", args=[forest.name, root.pk, step.pk])
    assert f"{settings.FOREST_TREE_STEP_CHARS} of {STEP_CHARS} characters shown" in html
    assert f'href="{node_url}"' in html
    assert html.count(f'href="/forests/{forest.name}/trees/{root.pk}/nodes/') >= 61  # each step and the item


def test_the_html_of_a_tree_page_stops_at_its_byte_budget(user_client, heavy_tree, markdown_work, settings):
    settings.PAGE_TEXT_MAX_BYTES = 30_000
    forest, root = heavy_tree
    response = user_client.get(reverse("forests:tree", args=[forest.name, root.pk]))
    assert response.status_code == 200
    assert len(response.content) <= 30_000 + 61 * NODE_CHROME_BYTES + PAGE_CHROME_BYTES
    assert response.content.decode().count("the whole text</a>") == 60  # every step, even those shown empty


def test_the_whole_text_of_every_step_stays_reachable(user_client, heavy_tree, markdown_work, settings):
    forest, root = heavy_tree
    step = Node.objects.get(tree=root, depth=3, text__startswith="**Rollout 7,")
    page = user_client.get(reverse("forests:node", args=[forest.name, root.pk, step.pk]))
    assert page.status_code == 200
    assert sum(markdown_work) <= settings.PAGE_MARKDOWN_MAX_CHARS  # 200,000 characters: plain text here
    assert len(page.content) <= settings.PAGE_TEXT_MAX_BYTES + PAGE_CHROME_BYTES
    text_url = reverse("forests:node_text", args=[forest.name, root.pk, step.pk])
    assert f'href="{text_url}"' in page.content.decode()
    text = user_client.get(text_url)
    assert text.status_code == 200 and text["Content-Type"] == "text/plain; charset=utf-8"
    assert text.content.decode() == step.text == heavy_step(7, 2)


def test_a_short_step_page_is_markdown_and_a_root_page_shows_the_whole_item(user_client, markdown_work):
    forest = make_forest("short-pages")
    root = make_root(forest, PROMPT, ground_truth=1, serialized_item={"statement": "It *is*.", "n": [1]})
    leaf = forest_rollout_insert(forest_name=forest.name, example=PROMPT, steps=["**Step** one. "], prediction=1)
    html = user_client.get(reverse("forests:node", args=[forest.name, root.pk, leaf.pk])).content.decode()
    assert "<strong>Step</strong> one." in html and "text.txt" in html
    html = user_client.get(reverse("forests:node", args=[forest.name, root.pk, root.pk])).content.decode()
    assert "<em>is</em>" in html and "<code>[1]</code>" in html


def test_a_node_of_another_tree_or_an_unknown_node_is_a_404(user_client, heavy_tree):
    forest, root = heavy_tree
    other = make_root(forest, "another prompt")
    step = Node.objects.filter(tree=root, depth=1).first()
    for args in ([forest.name, other.pk, step.pk], [forest.name, root.pk, 10**12], ["nope", root.pk, step.pk]):
        assert user_client.get(reverse("forests:node", args=args)).status_code == 404
        assert user_client.get(reverse("forests:node_text", args=args)).status_code == 404


def test_node_pages_need_the_view_permission(client, heavy_tree, django_user_model):
    forest, root = heavy_tree
    url = reverse("forests:node_text", args=[forest.name, root.pk, root.pk])
    assert client.get(url).status_code == 302
    client.force_login(django_user_model.objects.create_user(username="nobody", password="a-long-test-password"))
    assert client.get(url).status_code == 403


def test_the_database_sends_a_tree_page_only_the_start_of_each_text(heavy_tree):
    _, root = heavy_tree
    rows = tree_rows(root=root, text_chars=100)
    steps = [row for row in rows if row[2] > 0]
    assert len(steps) == 60
    assert all(len(row[3]) == 100 and row[6] == STEP_CHARS for row in steps)
    assert re.match(r"\*\*Rollout \d+, step \d+\*\*", steps[0][3])
    assert [row[3] for row in tree_rows(root=root) if row[0] == root.pk] == [PROMPT]
