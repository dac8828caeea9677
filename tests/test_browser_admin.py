"""Issue 13, item 5: the admin and the forest pages in a real headless browser. Staff log into the admin, create a
forest from the demo dataset, open its page and a tree page (markdown rendered; a script a model wrote did not run),
run the beam-search action and see its table and plot. Screenshots go to test-artifacts/admin/ (git-ignored)."""

from __future__ import annotations

import pytest

from forests.intake import receive_rollout
from forests.models import Forest, Node
from tests.browser import requires_chromium, screenshot, wait_for

pytestmark = [requires_chromium, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-staff-password-7"
MARKDOWN_STEP = "Step 1: the claim has **two parts**.\n\n| part | holds |\n| --- | --- |\n| hours | no |\n\n"
INJECTED_STEP = (
    "Step 2: <script>window.__pwned = 'script'</script><img src=x onerror=\"window.__pwned = 'img'\">"
    "[click](javascript:window.__pwned='link') so it is false.\n"
)


def submit(driver, css: str = "input[type=submit], button[type=submit]") -> None:
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    driver.find_element(By.CSS_SELECTOR, css).click()


def test_staff_seed_a_forest_read_its_trees_and_compute_search_metrics_in_a_browser(
    browser, live_server, django_user_model
):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional
    from selenium.webdriver.support.ui import Select  # deferred: selenium is optional

    django_user_model.objects.create_user(username="staff", password=PASSWORD, is_staff=True, is_superuser=True)
    base = live_server.url

    # Log into the admin.
    browser.get(f"{base}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    submit(browser)
    wait_for(browser, lambda d: d.current_url == f"{base}/admin/", "the admin did not let staff in")

    # Create a forest from the demo dataset with the "Add forest" form.
    browser.get(f"{base}/admin/forests/forest/add/")
    Select(browser.find_element(By.NAME, "config_name")).select_by_value("liar_demo")
    browser.find_element(By.NAME, "forest_name_suffix").send_keys("browser")
    submit(browser, "input[type=submit]")
    wait_for(browser, lambda d: "/change/" in d.current_url, "seeding did not open the forest's admin page")
    forest = Forest.objects.get(name="liar_demo-test-browser")
    assert Node.objects.filter(forest=forest, depth=0).count() == 20
    screenshot(browser, "admin", "1-forest-seeded")

    # Two rollouts a model wrote: markdown, and a script it should never have been able to run.
    root = Node.objects.filter(forest=forest, depth=0).order_by("id").first()
    for verdict, prediction in (("Verdict: True (code: 1)", 1), ("Verdict: False (code: 0)", 0)):
        receive_rollout(
            model="m",
            example=root.text,
            reasoning=[MARKDOWN_STEP, INJECTED_STEP, verdict],
            prediction=prediction,
            ground_truth=root.ground_truth,
            worker="w",
            forest_name=forest.name,
        )

    # The forest page, then the tree page.
    browser.get(f"{base}/forests/{forest.name}/")
    tree_link = wait_for(
        browser, lambda d: d.find_element(By.CSS_SELECTOR, f"a[href$='/trees/{root.pk}/']"), "no link to the tree"
    )
    tree_link.click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "strong"), "the tree page shows no rendered markdown")
    assert browser.find_element(By.XPATH, "//strong[text()='two parts']")
    assert browser.find_element(By.XPATH, "//table//td[text()='hours']")
    assert browser.execute_script("return window.__pwned === undefined"), "an injected script ran"
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src='x'], a[href^='javascript']")
    screenshot(browser, "admin", "2-tree-page")

    # The beam-search action on the forest: its form, then its table and plot on the forest's page.
    browser.get(f"{base}/admin/forests/forest/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{forest.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("compute_search_metrics")
    browser.find_element(By.NAME, "index").click()
    wait_for(browser, lambda d: d.find_elements(By.NAME, "num_beam_values"), "the action's form did not open")
    beams = browser.find_element(By.NAME, "num_beam_values")
    beams.clear()
    beams.send_keys("1,2")
    browser.find_element(By.NAME, "apply").click()
    wait_for(browser, lambda d: "Search report #" in d.page_source, "the action did not report its figures")
    browser.get(f"{base}/forests/{forest.name}/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#beam-results tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[0].text for row in rows] == ["1", "2"]
    assert browser.find_elements(By.CSS_SELECTOR, "#baselines tbody tr")
    plot = browser.find_element(By.ID, "search-plot")
    wait_for(browser, lambda d: d.execute_script("return arguments[0].naturalWidth > 0", plot), "the plot did not load")
    screenshot(browser, "admin", "3-search-metrics")
