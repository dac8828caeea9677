"""(d) ``train_prm`` and ``prm_label_worker`` killed with SIGKILL mid-run, against the production server.

train_prm killed while it trains leaves no adapter on the server and no output folder or zip (they are written whole,
then renamed), and runs again to completion; killed as soon as its zip is in place (the upload in flight), the
server holds the whole adapter or none, and no partial upload in its storage. prm_label_worker killed while it
labels: the rollouts it held come back when their lease ends, and a second run labels every rollout exactly once.
A tiny Llama built from a config in code; no hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from adapters.prm.synthetic import synthetic_rows, tiny_base_model_save
from prmsite.core.client import PrmsiteClient
from rollouts.models import ProcessRewardLabel
from tests.adapters.prm.conftest import EVAL_FRACTION, TINY_TRAINING, write_jsonl
from tests.faults.conftest import kill9, wait_for
from tests.servers import PROJECT_ROOT

pytestmark = pytest.mark.slow

LEASE_S = 4
ROLLOUTS = 60


class Command:
    """A management command as a process, its stderr collected by a thread (a full pipe would block it)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err: list[str] = []
        self.reader = threading.Thread(target=lambda: self.err.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.err) or self.process.poll() is not None

    def summary(self, timeout: float = 1200) -> dict:
        out = self.process.stdout.read()
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        assert self.process.returncode == 0, "".join(self.err)[-3000:]
        return json.loads(out.strip().splitlines()[-1])


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_train_prm_and_prm_label_worker_killed_mid_run(server_factory, token, tmp_path):
    media = tmp_path / "media"
    server = server_factory(PRM_CHECKOUT_TIMEOUT_S=str(LEASE_S), DJANGO_MEDIA_ROOT=str(media)).start()
    hf_home = tmp_path / "hf-home"
    env = {
        **os.environ, "WEBSERVER_API_BASE": server.url, "WEBSERVER_API_TOKEN": token, "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_DATASETS_CACHE": str(hf_home / "datasets"),
    }  # fmt: skip
    base = tiny_base_model_save(tmp_path / "tiny-base")
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", synthetic_rows(prompts=40, rollouts_per_prompt=2, seed=1))
    runs = tmp_path / "runs"
    flags = {**TINY_TRAINING, "epochs": 2, "eval_fraction": EVAL_FRACTION, "device": "cpu"}
    flags = [part for name, value in flags.items() for part in (f"--{name}", str(value))]

    def train(version: str) -> Command:
        return Command(
            env, "train_prm", "--base_model", str(base), "--prm_version", version, "--dataset", str(dataset),
            *flags, "--output_dir", str(runs / version), "--worker", "trainer",
        )  # fmt: skip

    api = PrmsiteClient(server.url, token)
    # 1. Killed while it trains: nothing on the server, no output folder or zip; the same command runs again.
    first = train("prm-a")
    wait_for(lambda: first.saw("held out before training"), timeout=600, what="training to start")
    assert first.process.poll() is None, "".join(first.err)[-3000:]
    kill9(first.process)
    assert api.list_prm_adapters() == []
    assert not (runs / "prm-a").exists() and not (runs / "prm-a.zip").exists()
    assert _files(media) == []
    summary = train("prm-a").summary()
    assert summary["uploaded"] and summary["prm_version"] == "prm-a"
    [listed] = api.list_prm_adapters()
    assert listed["sha256"] == hashlib.sha256((runs / "prm-a.zip").read_bytes()).hexdigest()

    # 2. Killed once its zip is in place, the upload in flight or about to be: the whole adapter or none.
    second = train("prm-b")
    wait_for(lambda: (runs / "prm-b.zip").exists() or second.process.poll() is not None, timeout=900, what="the zip")
    kill9(second.process)
    # A body that arrived whole is still being checked and stored; one cut short never reaches the view. Either
    # way the spool goes: wait for it, then the server holds the whole adapter or none.
    wait_for(lambda: not any("/." in f"/{name}" for name in _files(media)), timeout=300, what="the spool to go")
    listed = {info["prm_version"]: info for info in api.list_prm_adapters()}
    if "prm-b" in listed:
        local = hashlib.sha256((runs / "prm-b.zip").read_bytes()).hexdigest()
        assert listed["prm-b"]["sha256"] == local
        assert hashlib.sha256(api.download_prm_adapter("prm-b")).hexdigest() == local
    assert all(name.endswith(".zip") for name in _files(media)) and len(_files(media)) == len(listed)
    assert {"adapter_config.json", "adapter_model.safetensors", "prm_config.json"} <= set(_files(runs / "prm-a"))

    # 3. prm_label_worker killed while it labels: its leases come back, a second run labels each rollout once.
    rows = synthetic_rows(prompts=ROLLOUTS // 2, rollouts_per_prompt=2, seed=7)
    bodies = [
        {"model": "tiny", "example": row["prompt"], "reasoning": row["completions"], "prediction": 1,
         "ground_truth": 1, "worker": "rollout-worker", "idempotency_key": f"prm-kill-{i}"}
        for i, row in enumerate(rows)
    ]  # fmt: skip
    ids = [result["id"] for result in api.post_rollouts(bodies)]
    label_flags = ["--prm_version", "prm-a", "--device", "cpu", "--batch_size", "2", "--claim_size", "2"]
    labeller = Command(env, "prm_label_worker", *label_flags, "--wait", "1", "--post_threads", "1", "--worker", "gpu-a")
    labels = ProcessRewardLabel.objects.filter(prm_version="prm-a")
    wait_for(lambda: labels.count() >= 4 or labeller.process.poll() is not None, timeout=600, what="labels")
    kill9(labeller.process)
    killed_at = time.monotonic()
    done_by_first = labels.count()
    assert 4 <= done_by_first < len(ids)
    summary = Command(
        env, "prm_label_worker", *label_flags, "--wait", str(LEASE_S + 3), "--exit_when_idle", "--worker", "gpu-b"
    ).summary()
    assert time.monotonic() - killed_at >= LEASE_S  # it waited for the dead worker's leases to come back
    assert Counter(labels.values_list("rollout_id", flat=True)) == Counter(ids)
    assert summary["labelled"] == len(ids) - done_by_first and summary["skipped"] == 0
    assert api.get_rollouts("prm-a", limit=1000) == []
    api.close()
