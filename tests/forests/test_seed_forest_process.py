"""`python manage.py seed_forest` as a user runs it: a separate process, JSON on the last line of stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from forests.models import Forest, Node
from tests.forests.conftest import LIAR_ROWS, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def manage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url(), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.django_db(transaction=True)
def test_the_command_prints_the_forest_name_as_json_on_its_last_line(liar_file):
    result = manage(
        "seed_forest", "--dataset_config_name", "liar", "--dataset_split", "test",
        "--forest_name_suffix", "proc", "--dataset_name", str(liar_file),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["forest_name"] == "liar-test-proc"
    assert Node.objects.filter(forest__name="liar-test-proc", depth=0).count() == len(LIAR_ROWS)
    assert "Seeded forest liar-test-proc: 5 trees" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_failing_process_exits_non_zero_with_one_line_and_leaves_nothing(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [*LIAR_ROWS, {"statement": "x", "label": "unknown"}])
    result = manage(
        "seed_forest", "--dataset_config_name", "liar", "--dataset_split", "test", "--dataset_name", str(path)
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "CommandError: liar: item #5: LIAR label 'unknown' is not one of "
        "false, half-true, mostly-true, true, barely-true, pants-fire"
    )
    assert not Forest.objects.exists()
