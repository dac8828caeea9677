"""Fixtures of the active-learning round: the session's tiny model (built in code) and a stub judge."""

from __future__ import annotations

import pytest

from tests.adapters.prm.conftest import tiny_base  # noqa: F401 - a fixture, shared with the PRM tests
from tests.stub_openai import StubOpenAI


@pytest.fixture
def stub():
    with StubOpenAI() as server:
        yield server
