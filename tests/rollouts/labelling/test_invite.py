"""Staff invite a labeller in one step: the account (no usable password, in the labellers group) and a one-time,
expiring link where the labeller chooses a password and lands on the labelling pages."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.tokens import default_token_generator
from django.test import Client
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from rollouts.labelling import invite
from rollouts.labelling.access import LABEL_PERMISSION
from tests.rollouts.labelling.conftest import make_labeller

pytestmark = pytest.mark.django_db

INVITE_URL = reverse("labelling:invite")
NEW_PASSWORD = "Quiet-harbour-lantern-42"
User = get_user_model()


def send_invite(client, username="bea", **fields):
    return client.post(INVITE_URL, {"username": username, "email": "", "first_name": "", "last_name": "", **fields})


def link_of(response) -> str:
    match = re.search(r'class="invite-link"[^>]*value="([^"]+)"', response.content.decode())
    assert match, "the page shows no invitation link"
    return html.unescape(match.group(1)).removeprefix("http://testserver")


def set_password(link: str, password: str = NEW_PASSWORD, again: str | None = None):
    """Follow the link in a fresh browser and post the password; the browser and the answer to the post."""
    browser = Client()
    opened = browser.get(link)
    if opened.status_code != 302:
        return browser, opened
    # The token leaves the address before the form is shown (no Referer leaks it).
    assert link.split("/")[-2] not in opened["Location"]
    form = browser.get(opened["Location"])
    assert form.status_code == 200
    posted = browser.post(
        opened["Location"], {"new_password1": password, "new_password2": password if again is None else again}
    )
    return browser, posted


def test_staff_invite_a_labeller_in_one_step(staff_client):
    page = staff_client.get(INVITE_URL)
    assert page.status_code == 200
    response = send_invite(staff_client, email="bea@example.org", first_name="Bea", last_name="Ng")
    assert response.status_code == 200
    user = User.objects.get(username="bea")
    assert (user.email, user.first_name, user.last_name) == ("bea@example.org", "Bea", "Ng")
    assert not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == [invite.LABELLERS_GROUP]
    assert user.has_perm(LABEL_PERMISSION) and not user.is_staff
    days = f"{settings.LABELLER_INVITE_TIMEOUT_S / 86400:g}"
    assert invite.INVITED.format(username="bea", days=days) in response.content.decode()
    assert link_of(response).startswith("/label/welcome/")
    assert response["Cache-Control"].startswith("max-age=0")  # the link is not kept by any cache


def test_the_link_sets_the_password_once_and_logs_the_labeller_in(staff_client):
    link = link_of(send_invite(staff_client))
    browser, posted = set_password(link)
    assert posted.status_code == 302 and posted["Location"] == reverse("labelling:schemes")
    user = User.objects.get(username="bea")
    assert user.check_password(NEW_PASSWORD)
    landing = browser.get(posted["Location"])
    assert landing.status_code == 200 and landing.wsgi_request.user == user
    assert invite.WELCOME.format(username="bea") in landing.content.decode()
    # Used once: the same link, in this browser or another, no longer works.
    for client in (browser, Client()):
        again = client.get(link)
        assert again.status_code == 400
        assert html.escape(invite.LINK_INVALID, quote=False) in again.content.decode()
    assert User.objects.get(username="bea").check_password(NEW_PASSWORD)


def test_an_expired_link_is_refused(staff_client, monkeypatch):
    link = link_of(send_invite(staff_client))
    browser = Client()
    opened = browser.get(link)
    assert opened.status_code == 302
    later = datetime.now() + timedelta(seconds=settings.LABELLER_INVITE_TIMEOUT_S + 60)
    monkeypatch.setattr(invite.InviteTokenGenerator, "_now", lambda self: later)
    for response in (
        Client().get(link),
        browser.get(opened["Location"]),
        browser.post(opened["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}),
    ):
        assert response.status_code == 400
        assert invite.LINK_EXPIRED in response.content.decode()
    assert not User.objects.get(username="bea").has_usable_password()


def test_a_link_made_just_now_is_accepted_after_the_timeout_is_lengthened(staff_client, settings, monkeypatch):
    link = link_of(send_invite(staff_client))
    later = datetime.now() + timedelta(seconds=settings.LABELLER_INVITE_TIMEOUT_S + 60)
    monkeypatch.setattr(invite.InviteTokenGenerator, "_now", lambda self: later)
    settings.LABELLER_INVITE_TIMEOUT_S *= 2
    assert Client().get(link).status_code == 302


def test_a_wrong_token_is_refused(staff_client):
    link = link_of(send_invite(staff_client))
    send_invite(staff_client, username="cy")
    bea, cy = User.objects.get(username="bea"), User.objects.get(username="cy")
    uid, token = link.split("/")[-3:-1]
    cy_uid = urlsafe_base64_encode(force_bytes(cy.pk))
    tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
    wrong = [
        reverse("labelling:welcome", kwargs={"uidb64": uid, "token": tampered}),
        reverse("labelling:welcome", kwargs={"uidb64": cy_uid, "token": token}),  # bea's token for cy
        reverse("labelling:welcome", kwargs={"uidb64": uid, "token": "set-password"}),  # no token in the session
        reverse("labelling:welcome", kwargs={"uidb64": "sample", "token": token}),
        # A password-reset token is no invitation: the tokens are salted apart.
        reverse("labelling:welcome", kwargs={"uidb64": uid, "token": default_token_generator.make_token(bea)}),
    ]
    for url in wrong:
        response = Client().get(url)
        assert response.status_code == 400, url
        assert html.escape(invite.LINK_INVALID, quote=False) in response.content.decode()
    assert not any(u.has_usable_password() for u in User.objects.filter(username__in=["bea", "cy"]))


def test_the_link_works_only_for_an_active_account_without_a_password(staff_client):
    link = link_of(send_invite(staff_client))
    user = User.objects.get(username="bea")
    user.is_active = False
    user.save()
    assert Client().get(link).status_code == 400
    user.is_active = True
    user.save()
    assert Client().get(link).status_code == 302
    # An account with a password (say, set by staff in the admin) is no longer invited.
    user.set_password("Another-long-password-7")
    user.save()
    assert Client().get(link).status_code == 400


def test_the_password_is_checked_by_the_validators(staff_client):
    link = link_of(send_invite(staff_client))
    for password, again in (("password", None), ("12345678901", None), (NEW_PASSWORD, NEW_PASSWORD + "x")):
        _, posted = set_password(link, password, again)
        assert posted.status_code == 200
        assert 'role="alert"' in posted.content.decode()
    assert not User.objects.get(username="bea").has_usable_password()
    _, posted = set_password(link)
    assert posted.status_code == 302


@pytest.mark.parametrize("taken", ["ann", "ANN"])
def test_an_existing_user_name_is_refused(staff_client, taken):
    ann = make_labeller("ann")
    response = send_invite(staff_client, username=taken, email="x@example.org")
    assert response.status_code == 400
    assert html.escape(invite.USERNAME_TAKEN.format(username=taken), quote=True) in response.content.decode()
    assert list(User.objects.filter(username__iexact="ann")) == [ann]
    assert User.objects.get(username="ann").email == ""


@pytest.mark.parametrize("username", ["", "has space", "a/b", "x" * 151])
def test_a_user_name_that_cannot_be_one_is_refused(staff_client, username):
    before = User.objects.count()
    response = send_invite(staff_client, username=username)
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert User.objects.count() == before


def test_nothing_is_made_without_the_labellers_group(staff_client):
    Group.objects.filter(name=invite.LABELLERS_GROUP).delete()
    response = send_invite(staff_client)
    assert response.status_code == 400
    assert invite.NO_GROUP.replace('"', "&quot;") in response.content.decode()
    assert not User.objects.filter(username="bea").exists()


def test_only_staff_who_may_add_users_invite(client, django_user_model):
    assert client.get(INVITE_URL)["Location"].startswith(reverse("labelling:login"))
    assert send_invite(client).status_code == 302
    client.force_login(make_labeller("ann"))
    assert client.get(INVITE_URL).status_code == 403
    assert send_invite(client).status_code == 403
    clerk = django_user_model.objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    client.force_login(clerk)
    assert client.get(INVITE_URL).status_code == 403
    assert send_invite(client).status_code == 403
    assert not User.objects.filter(username="bea").exists()


def test_the_invitation_needs_the_csrf_token(staff_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff_user)
    assert send_invite(browser).status_code == 403
    assert not User.objects.filter(username="bea").exists()


def test_the_invitation_is_linked_from_the_admin_and_the_scheme_list(staff_client):
    for url in (reverse("admin:auth_user_changelist"), reverse("admin:rollouts_labellingscheme_changelist")):
        assert f'href="{INVITE_URL}"' in staff_client.get(url).content.decode()
    assert f'href="{INVITE_URL}"' in staff_client.get(reverse("labelling:schemes")).content.decode()
