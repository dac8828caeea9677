"""``manage.py ai_label_worker`` as users run it: flags, the JSON summary, one-line failures, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from prmsite.core.cli import FLAG_AT_LEAST_ONE
from rollouts.models import ProcessRewardLabel, RolloutCheckout
from tests.rollouts.conftest import PROJECT_ROOT
from tests.rollouts.worker.test_ai_labeller import SCHEME, synthetic_rollouts
from tests.stub_openai import judge_reply


@pytest.fixture
def judge_env(live_api_server, worker_token, stub, monkeypatch, tmp_path):
    env = {
        "OPENAI_API_BASE": stub.base_url,
        "OPENAI_API_KEY": "test",
        "WEBSERVER_API_BASE": live_api_server.url,
        "WEBSERVER_API_TOKEN": worker_token,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stub.reply = judge_reply
    return env


def test_the_command_labels_the_queue_and_writes_its_summary(judge_env, stub, tmp_path):
    rollouts = synthetic_rollouts(4)
    out = StringIO()
    call_command(
        "ai_label_worker", "--labelling_scheme_version", SCHEME, "--model_name", "stub-model", "--num_processes", "2",
        "--exit_when_idle", "--wait", "0", "--log_json", "--spool_dir", str(tmp_path / "spool"),
        "--worker_name", "judge-cli", "--output_json", str(tmp_path / "summary.json"), stdout=out, stderr=StringIO(),
    )  # fmt: skip
    events = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    assert events[0]["event"] == "start" and events[0]["labelling_scheme_version"] == SCHEME
    assert events[0]["structured_output"] == "json_schema" and events[0]["prompt_template"] == "the default template"
    summary = events[-1]
    assert summary["event"] == "summary" and summary["status"] == "completed" and summary["sent"] == 4
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["sent"] == 4 and written["status"] == "completed"
    assert ProcessRewardLabel.objects.filter(prm_version=SCHEME, worker="judge-cli").count() == len(rollouts)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt_template", "/nowhere/judge.txt"], "--prompt_template /nowhere/judge.txt: cannot be read"),
        (["--num_processes", "0"], "ai_label_worker: " + FLAG_AT_LEAST_ONE.format(flag="num_processes")),
        (["--max_labels", "0", "--answer_attempts", "0"], "--answer_attempts must be at least 1; --max_labels must be"),
        (["--api", "completions"], "ai_label_worker: --api completions needs --tokenizer"),
        (["--extra_body", "[1]"], "ai_label_worker: --extra_body must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_flags_fail_with_one_line(judge_env, args, message, tmp_path):
    with pytest.raises(CommandError, match=message) as caught:
        call_command("ai_label_worker", "--labelling_scheme_version", SCHEME, "--spool_dir", str(tmp_path), *args,
                     stdout=StringIO(), stderr=StringIO())  # fmt: skip
    assert "\n" not in str(caught.value)


def test_a_template_without_the_steps_is_refused(judge_env, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("Grade {problem}.")
    with pytest.raises(CommandError, match=r"ai_label_worker: --prompt_template .*t\.txt lacks \{steps\}"):
        call_command("ai_label_worker", "--labelling_scheme_version", SCHEME, "--prompt_template", str(template),
                     stdout=StringIO(), stderr=StringIO())  # fmt: skip


def test_the_servers_must_be_named(monkeypatch):
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    with pytest.raises(CommandError, match="ai_label_worker: set OPENAI_API_BASE"):
        call_command("ai_label_worker", "--labelling_scheme_version", SCHEME, stdout=StringIO(), stderr=StringIO())


def test_sigterm_lets_the_requests_in_flight_go_releases_them_and_exits_0(judge_env, stub, tmp_path):
    synthetic_rollouts(6)
    stub.latency_s = 5.0  # the judge is slow: the grace period (0.5 s) ends first
    env = {**os.environ, **judge_env, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "manage.py", "ai_label_worker", "--labelling_scheme_version", SCHEME,
               "--model_name", "stub-model", "--num_processes", "2", "--shutdown_grace_s", "0.5", "--wait", "1",
               "--log_json", "--spool_dir", str(tmp_path / "spool")]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while stub.in_flight < 2:
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()[-3000:]
            time.sleep(0.05)
        assert RolloutCheckout.objects.filter(prm_version=SCHEME, expires_at__gt=timezone.now()).count() == 2
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    summary = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    assert process.returncode == 0, err[-3000:]
    assert summary["event"] == "summary" and summary["status"] == "stopped" and summary["released"] == 2
    assert not RolloutCheckout.objects.filter(prm_version=SCHEME, expires_at__gt=timezone.now()).exists()
    assert not ProcessRewardLabel.objects.exists()
