"""End to end in a real headless browser: Debian's chromium, driven by Selenium through Debian's chromedriver (no tool
downloads a browser or a driver). A labeller logs in, labels two rollouts with the keyboard alone, and the stored
labels are checked; a labeller labels three rollouts with the keys that say their rating, skips one and finds it last
(its draft kept), and revises a label. Screenshots go to test-artifacts/labelling/ (git-ignored)."""

from __future__ import annotations

import pytest

from rollouts.models import LabelDraft, LabelRevision, LabelSkip, ProcessRewardLabel, RolloutCheckout
from tests.browser import requires_chromium, wait_for
from tests.browser import screenshot as save_screenshot
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import PASSWORD, make_labeller, make_scheme

pytestmark = requires_chromium


def keys(driver, *sequence: str) -> None:
    """Press keys in the page, as a person would: sent to whatever has the focus."""
    from selenium.webdriver.common.action_chains import ActionChains  # deferred: selenium is optional

    chain = ActionChains(driver)
    for key in sequence:
        chain.send_keys(key)
    chain.perform()


def wait_for_labelling_page(driver, url: str) -> None:
    """The page of ``url`` is shown and its script has marked the current step."""
    wait_for(driver, lambda d: d.current_url == url, f"the browser did not reach {url} (at {driver.current_url})")
    wait_for(
        driver,
        lambda d: d.execute_script("return document.querySelector('li.step.current') !== null"),
        "the labelling script did not start",
    )


def screenshot(driver, name: str) -> None:
    save_screenshot(driver, "labelling", name)


@pytest.mark.django_db(transaction=True)
def test_a_labeller_labels_two_rollouts_with_the_keyboard_alone(browser, live_api_server):
    from selenium.webdriver.common.keys import Keys  # deferred: selenium is optional

    make_labeller("ann")
    make_scheme("human-phase2", title="Phase 2", stop_at_first_error=True, instructions="Find the **first** error.")
    first = make_rollout(
        example="What is 2 + 3 * 4?",
        reasoning=["Multiply first: 3 * 4 = 12. ", "Then 2 + 12 = 15. ", "Answer: 15"],
        prediction=15,
        ground_truth=14,
    )
    second = make_rollout(example="Is 9 prime?", reasoning=["9 = 3 * 3. ", "So 9 is not prime."], prediction=0)
    base = live_api_server.url
    rollout_page = base + "/label/human-phase2/rollouts/{}/"

    browser.get(base + "/label/login/")
    keys(browser, "ann", Keys.TAB, PASSWORD, Keys.ENTER)  # the user name field has the focus
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not lead to the scheme list")
    screenshot(browser, "01-schemes")

    browser.get(base + "/label/human-phase2/")
    keys(browser, Keys.ENTER)  # "Start labelling" has the focus
    wait_for_labelling_page(browser, rollout_page.format(first.pk))
    screenshot(browser, "02-first-rollout")
    # +1 on step 1 (the focus moves on), a note on step 2, then -1 on step 2: the rollout ends there.
    keys(browser, "+")
    wait_for(
        browser,
        lambda d: "Draft saved" in d.find_element("id", "save-status").text,
        "the change was not saved as a draft",
    )
    assert LabelDraft.objects.get().ratings == [1, None, None]
    keys(browser, "n", "precedence is right, the sum is 14", Keys.ESCAPE, "-")
    assert "after-error" in browser.find_element("id", "step-2").get_attribute("class")
    screenshot(browser, "03-first-error-found")
    keys(browser, Keys.ENTER)

    wait_for_labelling_page(browser, rollout_page.format(second.pk))
    screenshot(browser, "04-second-rollout")
    # 0 on step 1, back to it (k), +1 instead, +1 on step 2, flag the problem (b), submit.
    keys(browser, "0", "k", "d", "=", "b", Keys.ENTER)
    wait_for(
        browser,
        lambda d: d.current_url == base + "/label/human-phase2/",
        "the last submit did not lead back to the scheme page",
    )
    assert "Nothing left for you to label" in browser.page_source
    screenshot(browser, "05-done")

    labels = {label.rollout_id: label for label in ProcessRewardLabel.objects.filter(prm_version="human-phase2")}
    assert set(labels) == {first.pk, second.pk}
    one, two = labels[first.pk], labels[second.pk]
    assert one.prm_output == [1, 0, 2]  # +1, -1, then unrated (stored neutral)
    assert one.explanations == ["", "precedence is right, the sum is 14", ""]
    assert one.attributes["rated_steps"] == 2
    assert one.attributes["finish_reason"] == "found_error"
    assert one.attributes["mode"] == "stop_at_first_error"
    assert one.attributes["seconds_spent"] > 0
    assert two.prm_output == [1, 1]
    assert two.attributes["finish_reason"] == "solution"
    assert two.attributes["bad_problem"] is True
    assert {one.labelled_by, two.labelled_by} == {"ann"}
    assert not LabelDraft.objects.exists()
    assert not RolloutCheckout.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_script_saves_and_skips_a_rollout_as_long_as_the_server_stores(browser, live_api_server, settings):
    # Issue 17, item 4: the script's draft saves and the skip key of a 1,000-step rollout (2,000 form fields).
    from selenium.webdriver.common.keys import Keys  # deferred: selenium is optional

    make_labeller("ann")
    make_scheme("human-long", title="Long")
    steps = settings.PRM_ROLLOUT_MAX_STEPS
    longest = make_rollout(reasoning=[f"Step {i}. " for i in range(steps)])
    base = live_api_server.url

    browser.get(base + "/label/login/")
    keys(browser, "ann", Keys.TAB, PASSWORD, Keys.ENTER)
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not lead to the scheme list")
    browser.get(base + "/label/human-long/")
    keys(browser, Keys.ENTER)
    wait_for_labelling_page(browser, base + f"/label/human-long/rollouts/{longest.pk}/")
    keys(browser, "d", "d", "n", "a note on step 3", Keys.ESCAPE)
    wait_for(
        browser,
        lambda d: (
            "Draft saved" in d.find_element("id", "save-status").text
            and any(draft.notes[2] == "a note on step 3" for draft in LabelDraft.objects.all())
        ),
        f"the draft was not saved: {browser.find_element('id', 'save-status').text}",
    )
    draft = LabelDraft.objects.get()
    assert len(draft.ratings) == steps and draft.ratings[:3] == [1, 1, None]
    screenshot(browser, "06-long-rollout-saved")
    keys(browser, "X")  # Shift+X: skip
    wait_for(browser, lambda d: d.current_url == base + "/label/human-long/", "the skip did not lead back")
    assert "skipped" in browser.page_source
    assert not RolloutCheckout.objects.exists()
    assert LabelDraft.objects.get().notes[2] == "a note on step 3"  # the skip keeps the draft
    assert LabelSkip.objects.get().rollout_id == longest.pk


def checked(driver, step: int) -> str | None:
    """The value of the rating radio checked for a step (None: none)."""
    return driver.execute_script(
        "const r = document.querySelector(`input[name=rating_${arguments[0]}]:checked`); return r ? r.value : null;",
        step,
    )


@pytest.mark.django_db(transaction=True)
def test_a_labeller_labels_three_rollouts_skips_one_finds_it_last_and_revises_a_label(browser, live_api_server):
    # Issue 20, part 4: keys that say their rating, Enter after a click on a toggle, a skip that keeps the draft and
    # sends the rollout behind the rest of the queue, and a revision of one's own label.
    from selenium.webdriver.common.keys import Keys  # deferred: selenium is optional

    make_labeller("ann")
    make_scheme("human-flow", title="Flow", instructions="Rate **every** step.")
    first, second, third = (
        make_rollout(example=f"Problem {n}?", reasoning=[f"Step one of {n}. ", f"Step two of {n}."]) for n in range(3)
    )
    base = live_api_server.url
    rollout_page = base + "/label/human-flow/rollouts/{}/"

    browser.get(base + "/label/login/")
    keys(browser, "ann", Keys.TAB, PASSWORD, Keys.ENTER)
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not lead to the scheme list")
    browser.get(base + "/label/human-flow/")
    keys(browser, Keys.ENTER)
    wait_for_labelling_page(browser, rollout_page.format(first.pk))

    # A digit rates nothing and says which keys do; "d" rates +1. Then skip (Shift+X): the draft is saved first.
    keys(browser, "1")
    hint = browser.find_element("id", "key-hint")
    assert hint.is_displayed() and "Digits other than 0 rate nothing" in hint.text
    assert checked(browser, 0) == ""
    keys(browser, "d")
    assert checked(browser, 0) == "1"
    screenshot(browser, "07-keys-say-the-rating")
    keys(browser, "X")
    wait_for_labelling_page(browser, rollout_page.format(second.pk))
    assert LabelDraft.objects.get(rollout=first).ratings == [1, None]
    assert LabelSkip.objects.get().rollout_id == first.pk

    # "+" and "s" (+1, 0); a click on the instructions' toggle, then Enter submits (it does not toggle them).
    keys(browser, "+", "s")
    browser.find_element("css selector", "details.instructions > summary").click()
    keys(browser, Keys.ENTER)
    wait_for_labelling_page(browser, rollout_page.format(third.pk))

    # "a" and "=" (-1, +1); a click on step 1's note toggle, then Enter submits.
    keys(browser, "a", "=")
    browser.find_element("css selector", "#step-0 details.note > summary").click()
    keys(browser, Keys.ENTER)

    # The skipped rollout comes last, with its draft: step 1 is +1 already; "_" rates step 2 -1.
    wait_for_labelling_page(browser, rollout_page.format(first.pk))
    assert checked(browser, 0) == "1"
    screenshot(browser, "08-skipped-comes-back-last")
    keys(browser, "_", Keys.ENTER)
    wait_for(browser, lambda d: d.current_url == base + "/label/human-flow/", "the last submit did not lead back")
    assert "Nothing left for you to label" in browser.page_source

    labels = {label.rollout_id: label for label in ProcessRewardLabel.objects.filter(prm_version="human-flow")}
    assert {rollout_id: label.prm_output for rollout_id, label in labels.items()} == {
        first.pk: [1, 0],
        second.pk: [1, 2],
        third.pk: [0, 1],
    }
    assert labels[third.pk].attributes["finish_reason"] == "found_error"
    assert not LabelSkip.objects.exists() and not LabelDraft.objects.exists()

    # Revise the second rollout's label from the scheme page: -1 on step 1 ("-"), Enter.
    seconds_before = labels[second.pk].attributes["seconds_spent"]
    browser.find_element("css selector", f'a[href="/label/human-flow/rollouts/{second.pk}/revise/"]').click()
    wait_for_labelling_page(browser, base + f"/label/human-flow/rollouts/{second.pk}/revise/")
    assert checked(browser, 0) == "1" and checked(browser, 1) == "0"
    keys(browser, "k", "-", Keys.ENTER)
    wait_for(browser, lambda d: d.current_url == rollout_page.format(second.pk), "the revision did not lead back")
    assert "revised it 1 time" in browser.page_source
    screenshot(browser, "09-revised")
    revised = ProcessRewardLabel.objects.get(rollout=second, prm_version="human-flow")
    assert revised.pk == labels[second.pk].pk and revised.prm_output == [0, 2]
    assert revised.attributes["finish_reason"] == "found_error"
    assert revised.attributes["seconds_spent"] >= seconds_before
    assert LabelRevision.objects.get().prm_output == [1, 2]
