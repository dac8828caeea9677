"""A real headless browser for end-to-end tests: Debian's chromium, driven by Selenium through Debian's chromedriver
(no tool downloads a browser or a driver; `.ci/run` installs both). Tests using the ``browser`` fixture skip, with
the reason, where they are absent. Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.servers import PROJECT_ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1366,900",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
WAIT_S = 20

requires_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
)


def chromium(profile: Path) -> Iterator:
    """A headless chromium (a Selenium driver) with a fresh profile; quit at the end."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in requirements-dev.txt")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message)


def screenshot(driver, folder: str, name: str) -> None:
    (ARTIFACTS / folder).mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / folder / f"{name}.png"))


def admin_login(driver, base: str, path: str, *, username: str, password: str) -> None:
    """Log in through the admin's login page with ``next`` = ``path`` (a path of the site at ``base``), and wait
    until the login has led there."""
    from selenium.webdriver.common.by import By  # deferred: selenium is optional (the tests skip without it)

    driver.get(f"{base}/admin/login/?{urlencode({'next': path})}")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for(driver, lambda d: d.current_url == f"{base}{path}", f"the login did not lead to {base}{path}")
