"""In headless chromium (Debian's, through tests/browser.py): a researcher logs in through the admin's login page,
opens a forest's search reports, and the comparison plot and each report's plot load as images under the site's
content security policy. Screenshots go to test-artifacts/search-reports/ (git-ignored)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from forests.search_reports import forest_search_report
from forests.services import forest_search_report_save
from tests.browser import admin_login, requires_chromium, screenshot, wait_for
from tests.factories import make_label
from tests.forests.grown import grow

pytestmark = requires_chromium
PASSWORD = "a-long-test-password"


def loaded(driver, element_id: str) -> bool:
    return driver.execute_script(
        "const i = document.getElementById(arguments[0]); return i !== null && i.complete && i.naturalWidth > 0;",
        element_id,
    )


@pytest.mark.django_db(transaction=True)
def test_a_researcher_compares_two_reports_on_one_plot(browser, live_api_server, django_user_model):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.2, 0.1])
    for option in ("labelled", "prm:prm-v1"):
        report = forest_search_report(
            forest=grown.forest, num_beam_values=[1, 2, 4], value_function_option=option, aggregation="last"
        )
        forest_search_report_save(forest=grown.forest, report=report.as_dict())
    viewer = django_user_model.objects.create_user(username="viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    base = live_api_server.url

    admin_login(browser, base, f"/forests/{grown.forest.name}/reports/", username="viewer", password=PASSWORD)
    wait_for(browser, lambda d: loaded(d, "compare-plot"), "the comparison plot did not load")
    assert "Few rollouts: PRM prm-v1 reaches only 1 of 8 rollouts" in browser.page_source
    screenshot(browser, "search-reports", "01-compared")
    browser.find_element(By.CSS_SELECTOR, "#reports tbody tr a").click()  # the newest report's own plot
    wait_for(browser, lambda d: d.current_url.endswith(".svg"), "the report's plot did not open")
    assert browser.execute_script("return document.documentElement.tagName") == "svg"
