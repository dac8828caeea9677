"""The forest pages: list, forest, tree. Logged-in users only; markdown rendered, model output made inert."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from forests.models import Node
from forests.trie import forest_rollout_insert
from tests.factories import make_forest, make_rollout, make_root
from tests.html_checks import assert_inert

pytestmark = pytest.mark.django_db

PROMPT = "Is **this** statement true?\n\n| who | said |\n| --- | --- |\n| Ann | it |"


@pytest.fixture
def user_client(client, django_user_model):
    from django.contrib.auth.models import Permission

    researcher = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(researcher)
    return client


@pytest.fixture
def grown_forest():
    """One tree, ground truth 1, three rollouts: two share their first step; 2 of 3 leaves are correct."""
    forest = make_forest("liar-test-pages", config_name="liar", dataset_split="test")
    root = make_root(forest, PROMPT, ground_truth=1, serialized_item={"statement": "It *is*.", "label": "true"})
    make_root(forest, "An untouched second item", ground_truth=0)
    for steps, prediction in [
        (["Step 1: read. ", "Step 2: agree. ", "```python\nprint('code: 1')\n```"], 1),
        (["Step 1: read. ", "Step 2: doubt. ", "Verdict (code: 0)"], 0),
        (["Other start. ", "Verdict (code: 1)"], 1),
    ]:
        leaf = forest_rollout_insert(
            forest_name=forest.name, example=PROMPT, steps=steps, prediction=prediction, ground_truth=1
        )
        make_rollout(forest=forest, node=leaf, example=PROMPT, reasoning=steps, prediction=prediction, ground_truth=1)
    return forest, root


def test_pages_send_anonymous_users_to_the_login_page(client, grown_forest):
    forest, root = grown_forest
    for url in (
        reverse("forests:list"),
        reverse("forests:detail", args=[forest.name]),
        reverse("forests:tree", args=[forest.name, root.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_the_list_shows_each_forest_with_its_progress(user_client, grown_forest):
    make_forest("empty-forest")
    response = user_client.get(reverse("forests:list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'href="/forests/liar-test-pages/"' in html
    row = re.search(r"liar-test-pages</a></td>(.*?)</tr>", html, re.S).group(1)
    cells = re.findall(r'<td class="num">(.*?)</td>', row)
    # trees, trees with rollouts, nodes, leaves, rollouts, accuracy
    assert cells == ["2", "1", "9", "3", "3", "0.667"]
    assert "empty-forest" in html


def test_the_forest_page_shows_each_tree_with_counts_accuracy_and_ground_truth(user_client, grown_forest):
    forest, root = grown_forest
    response = user_client.get(reverse("forests:detail", args=[forest.name]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "accuracy so far: <strong>0.667</strong> (2/3 rollouts)" in html
    row = re.search(rf'href="/forests/{forest.name}/trees/{root.pk}/">#{root.pk}</a></td>(.*?)</tr>', html, re.S)
    cells = re.findall(r'<td class="num">(.*?)</td>', row.group(1))
    # ground truth, nodes, rollouts, correct rollouts, accuracy, its 95% Wilson interval, depth, tokens (none reported)
    assert cells == ["1", "8", "3", "2", "0.667", "[0.21, 0.94]", "3", "0"]


def test_the_forest_page_is_paginated_with_a_constant_number_of_queries(
    user_client, django_assert_max_num_queries, grown_forest
):
    forest, _ = grown_forest
    for i in range(60):
        make_root(forest, f"item {i}", ground_truth=i % 2)
    # 12 for the page, its trees and its kept search report (the progress: its fingerprint, then, on a first view,
    # its 2 counts), 2 for the viewer's permissions (user, groups), 5 for the growth display (plan and tallies, queue,
    # roots, stages, tokens): a constant number, whatever the trees. On PostgreSQL 3 more: the tree list runs with
    # jit = off in a transaction of its own (forests.forest_search.tree_page).
    with django_assert_max_num_queries(19 if connection.vendor == "sqlite" else 22):
        first = user_client.get(reverse("forests:detail", args=[forest.name]))
    assert first.content.decode().count("/trees/") == 50
    assert "page 1 of 2" in first.content.decode()
    second = user_client.get(reverse("forests:detail", args=[forest.name]), {"page": 2})
    assert second.content.decode().count("/trees/") == 12
    assert "item 59" in second.content.decode()


def test_the_tree_page_shows_every_node_with_depth_prediction_and_exact_value(user_client, grown_forest):
    forest, root = grown_forest
    response = user_client.get(reverse("forests:tree", args=[forest.name, root.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('<div class="step') == Node.objects.filter(tree=root).count() == 8
    assert html.count('<details class="kids"') == html.count("</details>") - 1  # + the dataset item's details
    assert "Ground truth: <strong>1</strong>" in html
    assert "exact value of the root (accuracy so far): <strong>0.667</strong> (2/3 rollouts correct, " in html
    step1 = Node.objects.get(tree=root, depth=1, text="Step 1: read. ")
    # value (correct/rollouts, 95% Wilson interval of 1 in 2: 0.09 to 0.91)
    assert (
        f'#{step1.pk}</a> · depth 1 · value 0.500 (1/2, <span title="95% Wilson interval">[0.09, 0.91]</span>)' in html
    )
    leaf = Node.objects.get(tree=root, text="Verdict (code: 0)")
    interval = '<span title="95% Wilson interval">[0.00, 0.79]</span>'
    assert (
        f'#{leaf.pk}</a> · depth 3 · value 0.000 (0/1, {interval}) · leaf, prediction <span class="badge bad">0' in html
    )


def test_the_tree_page_renders_text_as_markdown(user_client, grown_forest):
    forest, root = grown_forest
    html = user_client.get(reverse("forests:tree", args=[forest.name, root.pk])).content.decode()
    assert "<strong>this</strong>" in html  # the prompt
    assert "<th>who</th>" in html  # a table in the prompt
    assert '<code class="language-python">print(&#x27;code: 1&#x27;)' in html or (
        "<code class=\"language-python\">print('code: 1')" in html
    )
    assert "<em>is</em>" in html  # a text field of the serialized item


def test_deep_subtrees_start_collapsed(user_client, grown_forest):
    forest, root = grown_forest
    html = user_client.get(reverse("forests:tree", args=[forest.name, root.pk]), {"open": 1}).content.decode()
    opened = re.findall(r'<details class="kids" open><summary>2 branches of #(\d+)', html)
    assert opened == [str(root.pk)]  # the fork at depth 1 starts collapsed
    assert html.count('<div class="step') == 8  # its own text is still shown


def test_a_subtree_page_shows_only_that_subtree(user_client, grown_forest):
    forest, root = grown_forest
    step1 = Node.objects.get(tree=root, depth=1, text="Step 1: read. ")
    html = user_client.get(reverse("forests:tree", args=[forest.name, root.pk]), {"node": step1.pk}).content.decode()
    assert html.count('<div class="step') == 5  # step 1, two step 2s, two leaves
    assert "Other start." not in html


def test_a_big_tree_is_capped(user_client, grown_forest, settings):
    settings.FOREST_TREE_MAX_NODES = 3
    forest, root = grown_forest
    html = user_client.get(reverse("forests:tree", args=[forest.name, root.pk])).content.decode()
    assert html.count('<div class="step') == 3
    assert "Showing 3 of 8 nodes" in html
    assert "open this subtree" in html


XSS_STEPS = [
    "<script>alert('pwned')</script>Step 1. ",
    'Step 2: <img src="x" onerror="alert(1)"> ',
    "[click me](javascript:alert(document.cookie)) ",
    '<a href="javascript:alert(2)" onclick="alert(3)">x</a> (code: 1)',
]


def test_injected_html_in_steps_prompts_and_items_is_inert(user_client):
    forest = make_forest("xss-forest")
    prompt = "<script>alert('prompt')</script> Is it <b>true</b>?"
    root = make_root(forest, prompt, ground_truth=1, serialized_item={"statement": "<img src=x onerror=alert(9)>"})
    forest_rollout_insert(forest_name=forest.name, example=prompt, steps=XSS_STEPS, prediction=1)
    for url in (
        reverse("forests:tree", args=[forest.name, root.pk]),
        reverse("forests:detail", args=[forest.name]),
        reverse("forests:list"),
    ):
        # the tree page's own form (its menus of value sources) is the one form a page may hold
        assert_inert(
            re.sub(
                r'<form method="get" class="sources">.*?</form>', "", user_client.get(url).content.decode(), flags=re.S
            )
        )
    tree_html = user_client.get(reverse("forests:tree", args=[forest.name, root.pk])).content.decode()
    assert "click me" in tree_html  # the link text stays, its target does not
    assert "<b>true</b>" in tree_html  # harmless tags survive


def test_an_unknown_forest_or_tree_is_a_404(user_client, grown_forest):
    forest, root = grown_forest
    other = make_forest("other-forest")
    other_root = make_root(other, "elsewhere")
    assert user_client.get(reverse("forests:detail", args=["no-such-forest"])).status_code == 404
    assert user_client.get(reverse("forests:tree", args=[forest.name, other_root.pk])).status_code == 404
    step = Node.objects.filter(tree=root, depth=1).first()
    assert user_client.get(reverse("forests:tree", args=[forest.name, step.pk])).status_code == 404
    assert user_client.get(reverse("forests:tree", args=[forest.name, root.pk]), {"node": 10**9}).status_code == 404


def test_slash_forest_name_redirects_to_the_forest_page(user_client, grown_forest):
    forest, _ = grown_forest
    response = user_client.get(f"/{forest.name}")
    assert response.status_code == 302
    assert response["Location"] == f"/forests/{forest.name}/"


def test_slash_forest_name_tells_anonymous_callers_nothing_about_which_forests_exist(client, grown_forest):
    forest, _ = grown_forest
    existing, missing = client.get(f"/{forest.name}"), client.get("/no-such-forest")
    assert existing.status_code == missing.status_code == 302
    assert existing["Location"].startswith("/admin/login/") and missing["Location"].startswith("/admin/login/")
    assert forest.name not in existing["Location"].replace(f"next=/{forest.name}", "")


def test_the_redirect_does_not_swallow_other_routes(client, user_client):
    assert user_client.get("/no-such-forest").status_code == 404
    admin = client.get("/admin")
    assert admin.status_code == 301 and admin["Location"] == "/admin/"
    forests = client.get("/forests")
    assert forests.status_code == 301 and forests["Location"] == "/forests/"


def test_only_users_who_may_add_forests_see_the_seed_link(user_client, staff_user):
    seed_url = reverse("admin:forests_forest_add")
    assert seed_url not in user_client.get(reverse("forests:list")).content.decode()
    staff = Client()
    staff.force_login(staff_user)
    assert seed_url in staff.get(reverse("forests:list")).content.decode()


def test_a_logged_in_user_without_the_view_permission_sees_no_forest(client, django_user_model, grown_forest):
    # A labeller logs in too, and must not see ground truths and exact values while rating steps.
    forest, root = grown_forest
    client.force_login(django_user_model.objects.create_user(username="labeller", password="a-long-test-password"))
    for url in (
        reverse("forests:list"),
        reverse("forests:detail", args=[forest.name]),
        reverse("forests:tree", args=[forest.name, root.pk]),
    ):
        assert client.get(url).status_code == 403
    assert client.get(f"/{forest.name}").status_code == 404  # existence not told either


def test_a_freshly_seeded_tree_page_opens_before_any_rollout(user_client, liar_file):
    # Issue 17, item 1: every tree without rollouts was a 500 (numpy's empty bincount is int64; Python 3.11 ints have
    # no is_integer()). Seeded as a newcomer seeds, then opened before growing it.
    from forests.services import forest_seed
    from prmsite.core.configs.loader import config_load

    result = forest_seed(config=config_load("liar", dataset_name=str(liar_file)), dataset_split="test")
    root = Node.objects.filter(forest=result.forest, depth=0).order_by("id").first()
    response = user_client.get(reverse("forests:tree", args=[result.forest.name, root.pk]))
    assert response.status_code == 200
    assert "(no rollouts yet)" in response.content.decode()
    assert user_client.get(reverse("forests:detail", args=[result.forest.name])).status_code == 200
