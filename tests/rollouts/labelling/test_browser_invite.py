"""Inviting a labeller in a real headless browser: staff open *Invite a labeller* from the admin's user list, make the
account and copy its link; the scheme's admin page (its forests chosen by search, under the site's CSP) works; the
labeller opens the link in another browser session, chooses a password and lands on the labelling pages."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from rollouts.labelling import invite
from tests.browser import requires_chromium, screenshot, wait_for
from tests.factories import make_forest
from tests.rollouts.labelling.conftest import labellers_group, make_scheme

pytestmark = [requires_chromium, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-staff-password-7"
LABELLER_PASSWORD = "Quiet-harbour-lantern-42"


def test_staff_invite_a_labeller_who_sets_a_password_in_a_browser(browser, live_server, django_user_model):
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    labellers_group()  # a transactional test's flush empties the tables the migrations filled
    django_user_model.objects.create_user(username="staff", password=PASSWORD, is_staff=True, is_superuser=True)
    scheme = make_scheme()
    make_forest("scope-forest")
    base = live_server.url

    browser.get(f"{base}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("staff")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(browser, lambda d: d.current_url == f"{base}/admin/", "the admin did not let staff in")

    browser.get(f"{base}/admin/auth/user/")
    browser.find_element(By.CSS_SELECTOR, ".object-tools a[href='/label/invite/']").click()
    wait_for(browser, lambda d: d.find_elements(By.NAME, "username"), "the invite form did not open")
    browser.find_element(By.NAME, "username").send_keys("bea")
    browser.find_element(By.NAME, "email").send_keys("bea@example.org")
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    field = wait_for(browser, lambda d: d.find_element(By.CSS_SELECTOR, "input.invite-link"), "no invitation link")
    link = field.get_attribute("value")
    assert link.startswith(f"{base}/label/welcome/")
    screenshot(browser, "labelling", "invite-1-link")

    # The scheme's page: the forests widget is the admin's search box (its script ran under the CSP).
    browser.get(f"{base}/admin/rollouts/labellingscheme/{scheme.pk}/change/")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".select2-container"), "the forests search is dead")
    screenshot(browser, "labelling", "invite-2-scheme-admin")

    # The labeller, in a session of their own.
    browser.delete_all_cookies()
    browser.get(link)
    wait_for(browser, lambda d: d.find_elements(By.NAME, "new_password1"), "the link did not ask for a password")
    assert "/set-password/" in browser.current_url  # the token left the address
    browser.find_element(By.NAME, "new_password1").send_keys(LABELLER_PASSWORD)
    browser.find_element(By.NAME, "new_password2").send_keys(LABELLER_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_for(browser, lambda d: d.current_url == f"{base}/label/", "the labeller did not land on the labelling pages")
    assert invite.WELCOME.format(username="bea") in browser.page_source
    assert scheme.title in browser.page_source
    screenshot(browser, "labelling", "invite-3-welcome")
    assert get_user_model().objects.get(username="bea").check_password(LABELLER_PASSWORD)
