"""In headless chromium (Debian's, through tests/browser.py): a researcher logs in, opens a forest's PRM comparison,
the search curves load as an image under the content security policy, unticking a source and submitting the form
compares the other alone, and a step where the PRM disagrees most opens the tree at that step with both sources.
Screenshots go to test-artifacts/prm-compare/ (git-ignored)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from forests.search_reports import forest_search_report
from forests.services import forest_search_report_save
from tests.browser import admin_login, requires_chromium, screenshot, wait_for
from tests.factories import make_label
from tests.forests.grown import grow
from tests.rollouts.labelling.conftest import make_scheme

pytestmark = requires_chromium
PASSWORD = "a-long-test-password"


@pytest.mark.django_db(transaction=True)
def test_a_researcher_compares_a_prm_and_a_scheme_and_opens_a_disagreement(browser, live_api_server, django_user_model):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.9, 0.9])
    make_scheme("human-v1")
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), prm_version="human-v1", prm_output=[1, 0, 1])
    report = forest_search_report(
        forest=grown.forest, num_beam_values=[1, 2], value_function_option="prm:prm-v1", aggregation="last"
    )
    forest_search_report_save(forest=grown.forest, report=report.as_dict())
    viewer = django_user_model.objects.create_user(username="viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    base = live_api_server.url

    admin_login(browser, base, f"/forests/{grown.forest.name}/prms/", username="viewer", password=PASSWORD)
    wait_for(
        browser,
        lambda d: d.execute_script(
            "const i = document.getElementById('prm-compare-plot'); return i && i.complete && i.naturalWidth > 0;"
        ),
        "the search curves did not load",
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#figures-table tbody tr")) == 2
    screenshot(browser, "prm-compare", "01-both")
    browser.find_element(By.CSS_SELECTOR, "input[name=sources][value='labels:human-v1']").click()  # untick
    browser.find_element(By.CSS_SELECTOR, "#prm-compare-form button[type=submit]").click()
    wait_for(browser, lambda d: "sources=prm" in d.current_url, "the form did not submit")
    rows = browser.find_elements(By.CSS_SELECTOR, "#figures-table tbody tr")
    assert len(rows) == 1 and "prm:prm-v1" in rows[0].text
    u1 = grown.node("A", "u1 ")
    browser.find_element(By.CSS_SELECTOR, "table.disagreement tbody tr a").click()
    wait_for(browser, lambda d: d.current_url.endswith(f"#node-{u1.pk}"), "the step's link did not open the tree")
    assert "compare=prm%3Aprm-v1" in browser.current_url
    assert browser.find_element(By.ID, f"node-{u1.pk}").is_displayed()
    screenshot(browser, "prm-compare", "02-tree-at-the-step")
