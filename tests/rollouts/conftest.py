"""Helpers of the API tests. The worker, its token, its client and the servers are fixtures in tests/conftest.py."""

from __future__ import annotations

from tests.factories import rollout_fields
from tests.servers import PROJECT_ROOT, database_url_for_subprocess, free_port

__all__ = ["PROJECT_ROOT", "database_url_for_subprocess", "free_port", "rollout_body"]


def rollout_body(**fields) -> dict:
    return rollout_fields(**{"worker": "rollout-worker", **fields})
