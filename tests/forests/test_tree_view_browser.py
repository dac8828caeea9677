"""The tree page in a real headless chromium (skipped where it is absent): a long chain drawn as one block and a fork,
two value sources side by side with their colours and bars, the first step below the threshold marked, collapse all /
expand all hiding branches but never a fork's own step, and a permalink opening the forks above its node.
Screenshots go to test-artifacts/tree-view/ (git-ignored)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from forests.models import Node
from tests.browser import requires_chromium, screenshot, wait_for
from tests.forests.test_tree_view_page import build_chain_tree
from tests.rollouts.labelling.conftest import PASSWORD, make_labeller

pytestmark = requires_chromium

SHOWN = "var e = document.getElementById(arguments[0]); return !!(e && e.checkVisibility());"


def shown(browser, node: Node) -> bool:
    return browser.execute_script(SHOWN, f"node-{node.pk}")


@pytest.mark.django_db(transaction=True)
def test_a_tree_with_a_long_chain_a_fork_and_two_sources_in_chromium(browser, live_api_server):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    researcher = make_labeller("rita")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    forest, root = build_chain_tree()
    base = live_api_server.url
    browser.get(base + "/label/login/")
    browser.find_element(By.NAME, "username").send_keys(researcher.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + "\n")
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not go through")

    url = base + reverse("forests:tree", args=[forest.name, root.pk]) + "?source=prm:v1&compare=labels:human-v1"
    browser.get(url)
    wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, ".tree-buttons").is_displayed(), "no tree script")
    chain = [Node.objects.get(tree=root, text=f"Step {i}. ") for i in range(6)]
    wrong_leaf = Node.objects.get(tree=root, text="So (code: 0)")

    # One block of consecutive steps, not a staircase: every step of the chain starts at the same x.
    lefts = {browser.find_element(By.ID, f"node-{n.pk}").rect["x"] for n in chain}
    assert len(lefts) == 1
    # Two cells a step, each coloured by its value, with a bar; the labelling scheme's 0 at step 2 is marked.
    third = browser.find_element(By.ID, f"node-{chain[2].pk}")
    cells = third.find_elements(By.CSS_SELECTOR, ".cells > .cell")
    assert len(cells) == 2
    colours = [c.value_of_css_property("background-color") for c in cells]
    assert colours[0] != colours[1]  # 0.6 and 0.0 differ
    assert cells[1].find_element(By.CSS_SELECTOR, ".mark").is_displayed()
    assert cells[0].find_element(By.TAG_NAME, "meter").get_attribute("value") == "0.6"
    assert "mean of 2 labels" in cells[0].get_attribute("title")
    screenshot(browser, "tree-view", "1-two-sources")

    # Collapse all: the branches of the forks go, the forks' own steps stay; expand all brings them back.
    browser.find_element(By.CSS_SELECTOR, "[data-tree-toggle=collapse]").click()
    assert not shown(browser, wrong_leaf) and not shown(browser, chain[0])
    root_step = browser.find_element(By.ID, f"node-{root.pk}")
    assert root_step.is_displayed() and PROMPT_START in root_step.text
    screenshot(browser, "tree-view", "2-collapsed")
    browser.find_element(By.CSS_SELECTOR, "[data-tree-toggle=expand]").click()
    assert shown(browser, wrong_leaf) and shown(browser, chain[5])

    # A permalink opens the forks above its node, even when they were collapsed.
    browser.find_element(By.CSS_SELECTOR, "[data-tree-toggle=collapse]").click()
    browser.get(url + f"&open=0#node-{wrong_leaf.pk}")
    wait_for(browser, lambda d: shown(d, wrong_leaf), "the permalink did not open the forks above its node")
    assert browser.execute_script("return document.querySelector(':target').id") == f"node-{wrong_leaf.pk}"
    screenshot(browser, "tree-view", "3-permalink")


PROMPT_START = "Is the statement true?"
