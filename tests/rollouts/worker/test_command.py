"""``manage.py rollout_worker`` parses flags and says in one line what is wrong."""

from __future__ import annotations

import json
import re
import threading

import pytest
from django.core.management import CommandError, call_command

from prmsite.core.cli import FLAG_AT_LEAST_ONE
from prmsite.core.client import PrmsiteClient
from rollouts.models import Rollout
from rollouts.worker.command_flags import MISSING_ENVIRONMENT
from tests.rollouts.conftest import rollout_body


@pytest.fixture
def worker_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("WEBSERVER_API_BASE", "http://127.0.0.1:9")
    monkeypatch.setenv("WEBSERVER_API_TOKEN", "t")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --forest_name"),
        (["--forest_name", "f", "--dataset_name", "d"], "not both"),
        (["--forest_name", "f", "--num_processes", "0"], FLAG_AT_LEAST_ONE.format(flag="num_processes")),
        (["--forest_name", "f", "--api", "completions"], "needs --tokenizer"),
        (["--forest_name", "f", "--extra_body", "[1]"], "JSON object"),
        (["--template_json", "t.json", "--policy", "mc"], "applies to forest mode"),
        (["--forest_name", "f", "--num_processes", "2", "--num_os_processes", "3"], "cannot exceed"),
    ],
)
def test_bad_flags_fail_with_one_clear_line(worker_env, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("rollout_worker", *args)


def test_the_servers_must_be_named(monkeypatch):
    monkeypatch.delenv("WEBSERVER_API_TOKEN", raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("WEBSERVER_API_BASE", "http://127.0.0.1:9")
    with pytest.raises(CommandError, match=re.escape(MISSING_ENVIRONMENT.format(name="WEBSERVER_API_TOKEN"))):
        call_command("rollout_worker", "--forest_name", "f")


def test_an_unreachable_server_fails_the_run_with_one_line_and_its_summary(worker_env, tmp_path):
    summary = tmp_path / "summary.json"
    with pytest.raises(CommandError, match="cannot be reached"):
        call_command(
            "rollout_worker", "--forest_name", "f", "--model_name", "m", "--spool_dir", str(tmp_path), "--log_json",
            "--output_json", str(summary),
        )  # fmt: skip
    written = json.loads(summary.read_text())
    assert written["status"] == "failed" and "cannot be reached" in written["error"]


def test_concurrent_repeats_of_one_idempotency_key_store_one_rollout(live_api_server, worker_token):
    body = rollout_body(idempotency_key="0f" * 16)
    ids: list[int] = []

    def post():
        with PrmsiteClient(live_api_server.url, worker_token) as api:
            ids.append(api.post_rollouts([body])[0]["id"])
            ids.append(api.post_rollout(body))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 16 and len(set(ids)) == 1 and Rollout.objects.count() == 1
