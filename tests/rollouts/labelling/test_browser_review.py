"""End to end in a real headless browser (Debian's chromium through Selenium, as tests/browser.py): staff log in,
open the disagreements from the staff page, open the rollout most in dispute, and adjudicate it. Screenshots go to
test-artifacts/review/ (git-ignored)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from rollouts.labelling import rules
from rollouts.labels import label_create
from rollouts.models import Adjudication
from tests.browser import requires_chromium, screenshot, wait_for
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import PASSWORD, make_scheme

pytestmark = requires_chromium


def human(rollout, who, ratings):
    label = rules.label_from_ratings(ratings, [""] * len(ratings), finish_reason=None, stop_at_first_error=False)
    label_create(
        rollout_id=rollout.pk,
        prm_version="human-v1",
        prm_output=label.prm_output,
        worker=who,
        labelled_by=who,
        explanations=["", "the sum is 14" if who == "bob" else "", ""],
        attributes={"mode": label.mode, "finish_reason": label.finish_reason, "rated_steps": label.rated_steps},
    )


@pytest.mark.django_db(transaction=True)
def test_staff_review_a_disagreement_and_adjudicate_it(browser, live_api_server):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    staff = get_user_model().objects.create_user(username="lead", password=PASSWORD, is_staff=True)
    make_scheme(labels_per_rollout=2)
    disputed = make_rollout(
        example="What is 2 + 3 * 4?", reasoning=["3 * 4 = 12. ", "2 + 12 = 15. ", "Answer: 15"], prediction=15
    )
    mild = make_rollout(reasoning=["a", "b", "c"])
    human(disputed, "ann", [1, 1, 1])
    human(disputed, "bob", [1, -1, -1])
    human(mild, "ann", [1, 1, 1])
    human(mild, "bob", [1, 0, 1])
    base = live_api_server.url

    browser.get(base + "/label/login/")
    browser.find_element(By.NAME, "username").send_keys("lead")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + "\n")
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not lead to the scheme list")
    browser.get(base + "/label/human-v1/stats/")
    browser.find_element(By.ID, "review-link").click()
    wait_for(browser, lambda d: d.current_url == base + "/label/human-v1/review/", "the review link did not lead on")
    rows = browser.find_elements(By.CSS_SELECTOR, "#disagreements tbody tr")
    assert [row.get_attribute("data-rollout") for row in rows] == [str(disputed.pk), str(mild.pk)]
    screenshot(browser, "review", "01-disagreements")

    rows[0].find_element(By.TAG_NAME, "a").click()
    page = base + f"/label/human-v1/review/{disputed.pk}/"
    wait_for(browser, lambda d: d.current_url == page, "the row did not lead to the review page")
    step_2 = browser.find_element(By.ID, "step-2")
    assert "conflict-verdict" in step_2.get_attribute("class")
    assert "+1 right" in step_2.text and "\u22121 wrong" in step_2.text and "the sum is 14" in step_2.text
    screenshot(browser, "review", "02-side-by-side")

    for index, value in enumerate(["1", "-1", "-1"]):
        browser.find_element(By.CSS_SELECTOR, f'input[name="rating_{index}"][value="{value}"]').click()
    browser.find_element(By.NAME, "note_1").send_keys("2 + 12 is 14")
    browser.find_element(By.ID, "reason").send_keys("bob is right: the sum is 14")
    browser.find_element(By.ID, "adjudicate").click()
    wait_for(
        browser,
        lambda d: "Adjudicated label of rollout" in d.page_source,
        "the adjudication was not confirmed",
    )
    screenshot(browser, "review", "03-adjudicated")
    adjudication = Adjudication.objects.get()
    assert adjudication.rollout_id == disputed.pk and adjudication.decided_by == staff
    assert adjudication.prm_output == [1, 0, 0] and adjudication.explanations == ["", "2 + 12 is 14", ""]
    assert adjudication.reason == "bob is right: the sum is 14"
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="rating_1"][value="-1"]').is_selected()

    browser.get(base + "/label/human-v1/review/")
    first = browser.find_element(By.CSS_SELECTOR, "#disagreements tbody tr")
    assert "adjudicated" in first.get_attribute("class") and "lead" in first.text
