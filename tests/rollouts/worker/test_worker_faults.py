"""The worker as a process under faults: kill -9 and restart, the webserver going away and coming back, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.utils import timezone

from forests.models import Expansion
from rollouts.models import Rollout
from tests.factories import make_worker_token
from tests.rollouts.conftest import PROJECT_ROOT
from tests.rollouts.worker.scripted import idempotency_key_of, planted_reply, seeded_forest, verdict_reply

pytestmark = pytest.mark.slow


@pytest.fixture
def token(transactional_db, django_user_model) -> str:
    return make_worker_token(django_user_model.objects.create_user(username="fault-worker"))


def worker(server_url: str, token: str, stub, tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "OPENAI_API_BASE": stub.base_url,
        "OPENAI_API_KEY": "test",
        "WEBSERVER_API_BASE": server_url,
        "WEBSERVER_API_TOKEN": token,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    command = [sys.executable, "manage.py", "rollout_worker", "--model_name", "stub-model", "--worker_name", "w"]
    command += ["--spool_dir", str(tmp_path / "spool"), "--log_json", "--send_backoff_max_s", "0.5", *args]
    return subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def summary_of(process: subprocess.Popen, timeout: float = 120) -> tuple[int, dict]:
    out, err = process.communicate(timeout=timeout)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["event"] == "summary", err[-3000:]
    return process.returncode, lines[-1]


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_kill_9_and_restart_lose_nothing_and_store_nothing_twice(server_factory, token, stub, dataset, tmp_path):
    server = server_factory().start()
    stub.reply = verdict_reply
    stub.latency_s = 0.3
    args = ["--template_json", str(dataset), "--num_repeats", "4", "--num_processes", "3"]
    first = worker(server.url, token, stub, tmp_path, *args)
    wait_for(lambda: Rollout.objects.count() >= 6)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert Rollout.objects.count() < 24
    code, summary = summary_of(worker(server.url, token, stub, tmp_path, *args))
    assert code == 0 and summary["status"] == "completed"
    units = Counter((r.attributes["dataset_item"], r.attributes["repeat"]) for r in Rollout.objects.all())
    assert units == Counter({(i, k): 1 for i in range(6) for k in range(4)})
    keys = Counter(idempotency_key_of(r) for r in Rollout.objects.all())
    assert None not in keys and max(keys.values()) == 1


def test_rollouts_wait_in_the_spool_while_the_webserver_is_away_and_arrive_when_it_is_back(
    server_factory, token, stub, dataset, tmp_path
):
    server = server_factory().start()
    stub.reply = verdict_reply
    stub.latency_s = 0.2
    args = ["--template_json", str(dataset), "--num_repeats", "3", "--num_processes", "1"]
    process = worker(server.url, token, stub, tmp_path, *args)
    wait_for(lambda: Rollout.objects.count() >= 2)
    server.stop()
    wait_for(lambda: stub.served >= 18)  # every answer generated while the server is away
    time.sleep(1.0)
    assert Rollout.objects.count() < 18
    server.start()
    code, summary = summary_of(process)
    assert code == 0 and summary["status"] == "completed" and summary["sent"] == 18 and summary["unsent"] == 0
    assert Counter((r.attributes["dataset_item"], r.attributes["repeat"]) for r in Rollout.objects.all()) == Counter(
        {(i, k): 1 for i in range(6) for k in range(3)}
    )


def test_sigterm_finishes_or_releases_the_work_in_flight_and_exits_0(server_factory, token, stub, tmp_path):
    forest, _roots = seeded_forest("sigterm-forest", roots=6)
    server = server_factory().start()
    stub.reply = planted_reply
    stub.latency_s = 5.0
    process = worker(
        server.url,
        token,
        stub,
        tmp_path,
        "--forest_name",
        forest.name,
        "--policy",
        "repeats",
        "--num_repeats",
        "2",
        "--num_processes",
        "2",
        "--shutdown_grace_s",
        "0.5",
    )
    wait_for(lambda: stub.in_flight == 2)
    process.send_signal(signal.SIGTERM)
    code, summary = summary_of(process, timeout=60)
    assert code == 0 and summary["status"] == "stopped"
    assert not Expansion.objects.filter(available_at__gt=timezone.now()).exists()  # every lease given back
    assert Rollout.objects.count() == 0


def test_a_killed_forest_worker_is_continued_by_the_next_one(server_factory, token, stub, tmp_path):
    forest, roots = seeded_forest("restart-forest", roots=4)
    server = server_factory(GROWTH_LEASE_S="2").start()
    stub.reply = planted_reply
    stub.latency_s = 0.3
    args = ["--forest_name", forest.name, "--policy", "repeats", "--num_repeats", "3", "--num_processes", "2"]
    first = worker(server.url, token, stub, tmp_path, *args)
    wait_for(lambda: Rollout.objects.count() >= 2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, summary = summary_of(worker(server.url, token, stub, tmp_path, *args))
    assert code == 0 and summary["status"] == "completed"
    per_tree = Counter(Rollout.objects.values_list("node__tree_id", flat=True))
    assert set(per_tree) == {r.pk for r in roots} and min(per_tree.values()) >= 3
    keys = Counter(idempotency_key_of(r) for r in Rollout.objects.all())
    assert None not in keys and max(keys.values()) == 1


def test_several_os_processes_share_the_dataset_and_each_item_arrives_once(
    server_factory, token, stub, dataset, tmp_path
):
    server = server_factory().start()
    stub.reply = verdict_reply
    args = ["--template_json", str(dataset), "--num_repeats", "2", "--num_processes", "4", "--num_os_processes", "2"]
    code, summary = summary_of(worker(server.url, token, stub, tmp_path, *args))
    assert code == 0 and summary["status"] == "completed" and summary["results"] == 12 and summary["processes"] == 2
    rollouts = list(Rollout.objects.all())
    assert Counter((r.attributes["dataset_item"], r.attributes["repeat"]) for r in rollouts) == Counter(
        {(i, k): 1 for i in range(6) for k in range(2)}
    )
    assert {r.worker for r in rollouts} == {"w/p0", "w/p1"}
