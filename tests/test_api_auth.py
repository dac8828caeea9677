"""Every endpoint wants a worker token or a staff session; anonymous callers get 401."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from knox.models import AuthToken
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
    ("post", "/process_reward_label/batch"),
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
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post("/rollout", rollout_body(), format="json").status_code == 200
    assert Rollout.objects.get().worker == "rollout-worker"


def test_tokens_are_stored_hashed_and_never_in_plaintext(capsys):
    call_command("create_worker_token", "gpu-node-3")
    token = capsys.readouterr().out.strip().splitlines()[-1]
    stored = AuthToken.objects.get()
    assert stored.user.username == "gpu-node-3"
    assert token not in stored.digest and len(stored.digest) == 128  # sha512
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            assert not any(token in str(value) for row in cursor.fetchall() for value in row), table


def test_each_run_makes_another_token_and_rotate_revokes_the_others(capsys):
    tokens = []
    for args in ([], [], ["--rotate"]):
        call_command("create_worker_token", "w", *args)
        tokens.append(capsys.readouterr().out.splitlines()[-1])
    assert len(set(tokens)) == 3
    client = APIClient()
    for token, works in zip(tokens, [False, False, True], strict=True):
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        assert (client.get("/prm_adapters").status_code == 200) is works


def test_a_token_made_to_expire_stops_working(capsys):
    call_command("create_worker_token", "w", "--expires_in_days", "1")
    token = capsys.readouterr().out.splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/prm_adapters").status_code == 200
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    assert client.get("/prm_adapters").status_code == 401


@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_a_deactivated_workers_token_gets_401_everywhere(method, url, worker_user, worker_token):
    worker_user.is_active = False
    worker_user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_token}")
    assert getattr(client, method)(url).status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        b"Token \xff\xfe\xfd",
        b"Token abc\x00def",
        b"Token " + b"a" * 5000,
        b"Token ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        b"Token",
    ],
)
def test_hostile_token_headers_are_a_401_not_a_crash(header):
    client = APIClient()
    response = client.get("/prm_adapters", HTTP_AUTHORIZATION=header.decode("latin-1"))
    assert response.status_code == 401
    assert response.json()["code"] in {"authentication_failed", "not_authenticated"}


def test_create_worker_token_refuses_an_empty_name():
    with pytest.raises(CommandError):
        call_command("create_worker_token", "  ")


@pytest.mark.django_db(transaction=True)
def test_tokens_from_before_hashing_keep_working_and_their_plaintext_is_dropped(worker_user):
    migration = importlib.import_module("rollouts.migrations.0008_hashed_worker_tokens")
    key = "0123456789abcdef0123456789abcdef01234567"  # a DRF authtoken key: 40 hex characters
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, user_id integer, created date)")
        cursor.execute(
            "INSERT INTO authtoken_token (key, user_id, created) VALUES (%s, %s, '2026-01-01')", [key, worker_user.pk]
        )
    with connection.schema_editor() as editor:
        migration.hash_plaintext_tokens(apps, editor)
    assert "authtoken_token" not in connection.introspection.table_names()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/prm_adapters").status_code == 200


def test_a_token_request_reads_the_tokens_once(worker_user, worker_token):
    # Another token of the same user, expired: knox's own check loaded every token of the user on each request.
    expired, _ = AuthToken.objects.create(user=worker_user, expiry=timedelta(days=1))
    AuthToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_token}")
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/prm_adapters").status_code == 200
    token_reads = [q["sql"] for q in queries.captured_queries if AuthToken._meta.db_table in q["sql"]]
    assert len(token_reads) == 1, token_reads


def test_an_expired_token_is_deleted_when_presented(capsys):
    call_command("create_worker_token", "w", "--expires_in_days", "1")
    token = capsys.readouterr().out.splitlines()[-1]
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/prm_adapters").status_code == 401
    assert not AuthToken.objects.exists()
