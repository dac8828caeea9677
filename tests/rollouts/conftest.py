"""Fixtures of the API tests: a worker with a token, and clients speaking as it."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


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


def rollout_body(**fields) -> dict:
    body = {
        "model": "tiny-model",
        "example": "Is the sky green?",
        "reasoning": ["Step 1: look up. ", "Verdict: False (code: 0)"],
        "prediction": 0,
        "ground_truth": 0,
        "worker": "rollout-worker",
    }
    body.update(fields)
    return body
