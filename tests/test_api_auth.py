"""Every endpoint wants a worker token or a staff session; anonymous callers get 401."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from rollouts.models import Rollout
from tests.rollouts.conftest import rollout_body

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/rollout?prm_version=v"),
    ("post", "/rollout"),
    ("get", "/process_reward_labels?prm_version=v"),
    ("get", "/process_reward_label?keys=[1]"),
    ("post", "/process_reward_label"),
    ("get", "/prm_adapters"),
    ("get", "/prm_adapter?prm_version=v"),
    ("post", "/prm_adapter?prm_version=v&base_model=b&worker=w"),
]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_anonymous_callers_get_401_with_a_json_reason(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["detail"]


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_a_wrong_token_gets_401(method, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert getattr(client, method)(url).status_code == 401


def test_a_logged_in_non_staff_user_without_token_is_refused(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="someone", password="a-long-test-password"))
    assert client.get("/prm_adapters").status_code == 403


def test_a_staff_session_may_use_the_api(staff_client):
    assert staff_client.get("/rollout?prm_version=v").status_code == 200


def test_create_worker_token_prints_a_working_token_last(capsys):
    call_command("create_worker_token", "gpu-node-3")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert Token.objects.get(key=token).user.username == "gpu-node-3"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/rollout", rollout_body(), format="json").status_code == 200
    assert Rollout.objects.get().worker == "rollout-worker"


def test_create_worker_token_twice_prints_the_same_token_and_rotate_replaces_it(capsys):
    call_command("create_worker_token", "w")
    first = capsys.readouterr().out.splitlines()[-1]
    call_command("create_worker_token", "w")
    assert capsys.readouterr().out.splitlines()[-1] == first
    call_command("create_worker_token", "w", "--rotate")
    rotated = capsys.readouterr().out.splitlines()[-1]
    assert rotated != first
    assert list(Token.objects.values_list("key", flat=True)) == [rotated]


def test_create_worker_token_refuses_an_empty_name():
    with pytest.raises(CommandError):
        call_command("create_worker_token", "  ")
