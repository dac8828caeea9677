"""Shared fixtures. The same suite runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="PostgreSQL only (DATABASE_URL=postgres://…)")
    if connection.vendor != "postgresql":
        for item in items:
            if "requires_postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="a-long-test-password", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def worker_user(django_user_model):
    return django_user_model.objects.create_user(username="worker-1")


@pytest.fixture
def worker_token(worker_user) -> str:
    return Token.objects.create(user=worker_user).key


@pytest.fixture
def api(worker_token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_token}")
    return client
