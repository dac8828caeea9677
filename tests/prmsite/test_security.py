"""Issue 13, item 6: security headers on every answer, no inline script anywhere a browser runs ours, and logins
throttled (the admin's and the labellers')."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password-9"


@pytest.mark.parametrize("url", ["/admin/login/", "/forests/", "/label/login/", "/api/docs/", "/rollout?prm_version=v"])
def test_every_answer_carries_the_security_headers(staff_client, url):
    response = staff_client.get(url, HTTP_ACCEPT="text/html")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_the_api_docs_run_no_inline_script(staff_client):
    html = staff_client.get("/api/docs/").content.decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attributes and not body.strip() for attributes, body in scripts)


def login(client: Client, url: str, username: str, password: str):
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("url", ["/admin/login/", "/label/login/"])
def test_logins_are_locked_after_five_failures_even_with_the_right_password(django_user_model, settings, url):
    django_user_model.objects.create_user(username="ann", password=PASSWORD, is_staff=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, url, "ann", "wrong-guess").status_code == 200  # the form again, with its error
    assert login(client, url, "ann", "wrong-guess").status_code == 429  # the fifth failure locks the pair out
    locked = login(client, url, "ann", PASSWORD)
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another user from the same address is not locked out by ann's failures.
    django_user_model.objects.create_user(username="bob", password=PASSWORD, is_staff=True)
    assert login(Client(), url, "bob", PASSWORD).status_code == 302
    call_command("axes_reset")  # what staff run to unlock (or wait ADMIN_LOGIN_COOLOFF_MIN)
    assert login(client, url, "ann", PASSWORD).status_code == 302


def test_a_successful_login_clears_earlier_failures(django_user_model, settings):
    django_user_model.objects.create_user(username="ann", password=PASSWORD, is_staff=True)
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "/admin/login/", "ann", "wrong")
    assert login(client, "/admin/login/", "ann", PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "/admin/login/", "ann", "wrong")
    assert login(client, "/admin/login/", "ann", PASSWORD).status_code == 302
