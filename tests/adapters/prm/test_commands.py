"""train_prm and prm_label_worker as users run them, against a live test server: train from a stepwise file, upload,
label the server's rollouts (one reward per step), stop on SIGTERM; and the one-line failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from adapters.prm.synthetic import synthetic_rows
from prmsite.core.client import PrmsiteClient
from tests.adapters.prm.conftest import EVAL_FRACTION, TINY_TRAINING, write_jsonl

ROOT = Path(__file__).resolve().parents[3]


def _training_flags(**overrides) -> list[str]:
    values = {**TINY_TRAINING, "eval_fraction": EVAL_FRACTION, "device": "cpu", **overrides}
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def _run(command: str, *args: str) -> tuple[dict, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


@pytest.fixture
def server(live_api_server, worker_token, monkeypatch):
    """A live server, its address and a worker token in the environment (as the commands read them), and a client."""
    monkeypatch.setenv("WEBSERVER_API_BASE", live_api_server.url)
    monkeypatch.setenv("WEBSERVER_API_TOKEN", worker_token)
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        yield client


def _post_rollouts(client: PrmsiteClient, rows: list[dict]) -> dict[int, dict]:
    posted = {}
    for row in rows:
        body = {
            "model": "tiny",
            "example": row["prompt"],
            "reasoning": row["completions"],
            "prediction": 1 if all(v > 0.5 for v in row["values"]) else 0,
            "ground_truth": 1,
            "worker": "rollout-worker",
        }
        posted[client.post_rollout(body)] = row
    return posted


def test_train_upload_and_label_the_servers_rollouts_end_to_end(server, tiny_base, soft_rows, tmp_path):
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", soft_rows)
    summary, log = _run(
        "train_prm", "--base_model", str(tiny_base), "--prm_version", "prm-e2e", "--dataset", str(dataset),
        *_training_flags(), "--output_dir", str(tmp_path / "adapter"), "--output_json", str(tmp_path / "train.json"),
        "--worker", "trainer-1",
    )  # fmt: skip
    assert summary == json.loads((tmp_path / "train.json").read_text())
    assert summary["uploaded"] and summary["server_path"].endswith(".zip")
    assert summary["data"]["source"] == f"dataset {dataset}"
    assert summary["data"]["examples"] == len(soft_rows)
    assert summary["eval"]["step_accuracy"] >= 0.85
    assert "Trained prm-e2e on" in log and "ProcessBench F1" in log
    [info] = server.list_prm_adapters()
    assert (info["prm_version"], info["base_model"], info["worker"]) == ("prm-e2e", str(tiny_base), "trainer-1")
    assert (info["sha256"], info["size"]) == (summary["sha256"], summary["size"])

    rows = synthetic_rows(prompts=10, rollouts_per_prompt=2, seed=7)
    posted = _post_rollouts(server, rows)
    result, log = _run(
        "prm_label_worker", "--prm_version", "prm-e2e", "--device", "cpu", "--batch_size", "4", "--claim_size", "6",
        "--wait", "0", "--exit_when_idle", "--worker", "gpu-0", "--output_json", str(tmp_path / "label.json"),
    )  # fmt: skip
    assert result == json.loads((tmp_path / "label.json").read_text())
    total_steps = sum(len(row["completions"]) for row in rows)
    assert (result["labelled"], result["steps"], result["claimed"]) == (len(rows), total_steps, len(rows))
    assert (result["skipped"], result["refused"], result["ended_by"]) == (0, 0, "idle")
    assert f"prm_label_worker prm-e2e: labelled {len(rows)} rollouts" in log

    labels = server.get_process_reward_labels(server.get_process_reward_label_ids("prm-e2e"))
    assert sorted(label["rollout_id"] for label in labels) == sorted(posted)
    right = 0
    for label in labels:
        row = posted[label["rollout_id"]]
        assert (label["prm_version"], label["worker"]) == ("prm-e2e", "gpu-0")
        assert len(label["prm_output"]) == len(row["completions"])
        assert all(0.0 < value < 1.0 for value in label["prm_output"])
        right += sum((value >= 0.5) == good for value, good in zip(label["prm_output"], row["labels"], strict=True))
    assert right / total_steps >= 0.85  # the PRM the worker loaded is the trained one


def test_train_prm_keeps_the_adapter_local_with_no_upload_and_needs_no_server(tiny_base, soft_rows, tmp_path,
                                                                              monkeypatch):  # fmt: skip
    monkeypatch.delenv("WEBSERVER_API_BASE", raising=False)
    monkeypatch.delenv("WEBSERVER_API_TOKEN", raising=False)
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", soft_rows[:60])
    summary, _ = _run(
        "train_prm", "--base_model", str(tiny_base), "--prm_version", "local", "--dataset", str(dataset),
        *_training_flags(epochs=1), "--output_dir", str(tmp_path / "local"), "--no_upload", "--hard_targets",
        "--neutral_weight", "0.5", "--lr_scheduler", "cosine", "--warmup_ratio", "0.1",
    )  # fmt: skip
    assert (summary["uploaded"], summary["server_path"]) == (False, None)
    assert Path(summary["zip"]) == tmp_path / "local.zip"
    assert summary["settings"]["hard_targets"] is True
    assert summary["settings"]["lr_scheduler"] == "cosine"
    assert (tmp_path / "local" / "adapter_model.safetensors").is_file()


def test_train_prm_weights_steps_by_confidence_from_the_exports_columns(tiny_base, soft_rows, tmp_path, monkeypatch):
    monkeypatch.delenv("WEBSERVER_API_BASE", raising=False)
    rows = [
        {**row, "counts": [4] * len(row["labels"]), "ci95_lows": [0.2] * len(row["labels"]),
         "ci95_highs": [0.6] * len(row["labels"])}
        for row in soft_rows[:40]
    ]  # fmt: skip
    rows[0] = {**rows[0], "counts": None, "ci95_lows": None, "ci95_highs": None}  # a person's labels: confidence 1
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", rows)
    summary, _ = _run(
        "train_prm", "--base_model", str(tiny_base), "--prm_version", "confident", "--dataset", str(dataset),
        *_training_flags(epochs=1), "--output_dir", str(tmp_path / "confident"), "--no_upload",
        "--weight_by_confidence",
    )  # fmt: skip
    assert summary["settings"]["weight_by_confidence"] is True
    # Every step at confidence 1 - 0.4 = 0.6 but those of the first row (1), in the rows training kept.
    assert 0.6 <= summary["data"]["confidence_mean"] < 0.7
    assert (tmp_path / "confident" / "adapter_model.safetensors").is_file()


def test_train_prm_refuses_a_prm_version_the_server_has_before_training(server, tiny_base, soft_rows, tmp_path,
                                                                        adapter_zip):  # fmt: skip
    server.upload_prm_adapter("prm-taken", base_model="other", worker="someone", data=adapter_zip)
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", soft_rows[:20])
    with pytest.raises(CommandError, match="prm_version 'prm-taken' already has an adapter on the server"):
        call_command(
            "train_prm", "--base_model", str(tiny_base), "--prm_version", "prm-taken", "--dataset", str(dataset),
            "--output_dir", str(tmp_path / "never"), stdout=StringIO(), stderr=StringIO(),
        )  # fmt: skip
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "/nowhere/stepwise.jsonl"], "train_prm: no such file or folder: /nowhere/stepwise.jsonl"),
        (["--dataset", "DATA", "--base_model", "/nowhere/model.gguf"], r"train_prm: --base_model /nowhere/model\.gguf"),
        (["--dataset", "DATA", "--step_tag", " "], "train_prm: base model .*: The step tag ' ' encodes to no token"),
        (["--dataset", "DATA", "--epochs", "0"], "train_prm: --epochs must be at least 1"),
        (
            ["--dataset", "DATA", "--weight_by_confidence"],
            r"train_prm: .*stepwise\.jsonl lacks the column\(s\) \['counts', 'ci95_lows', 'ci95_highs'\] that "
            "--weight_by_confidence reads",
        ),
    ],
)
def test_train_prm_fails_with_one_line_saying_why(args, message, tiny_base, soft_rows, tmp_path):
    dataset = write_jsonl(tmp_path / "stepwise.jsonl", soft_rows[:20])
    args = [str(dataset) if a == "DATA" else a for a in args]
    base = [] if "--base_model" in args else ["--base_model", str(tiny_base)]
    with pytest.raises(CommandError, match=message) as caught:
        call_command("train_prm", *base, "--prm_version", "v", *args, "--no_upload", "--output_dir",
                     str(tmp_path / "out"), stdout=StringIO(), stderr=StringIO())  # fmt: skip
    assert "\n" not in str(caught.value)


def test_prm_label_worker_names_the_known_versions_when_its_own_is_missing(server, adapter_zip):
    server.upload_prm_adapter("prm-v1", base_model="tiny", worker="trainer", data=adapter_zip)
    with pytest.raises(CommandError, match=r"no adapter for prm_version 'prm-v2' \(latest: prm-v1\)"):
        call_command("prm_label_worker", "--prm_version", "prm-v2", stdout=StringIO(), stderr=StringIO())


def test_train_prm_on_the_servers_labels_of_a_labelling_scheme(server, tiny_base, tmp_path):
    rows = synthetic_rows(prompts=40, rollouts_per_prompt=2, seed=3)
    posted = _post_rollouts(server, rows)
    for rollout_id, row in posted.items():
        codes = [int(good) for good in row["labels"]]
        codes[0] = 2 if rollout_id % 5 == 0 else codes[0]  # a few neutral verdicts
        server.post_process_reward_label(
            {"rollout_id": rollout_id, "prm_output": codes, "prm_version": "judge-v1", "worker": "judge"}
        )
    summary, _ = _run(
        "train_prm", "--base_model", str(tiny_base), "--prm_version", "prm-from-judge", "--labelling_scheme_version",
        "judge-v1", *_training_flags(), "--output_dir", str(tmp_path / "judge"), "--no_upload",
    )  # fmt: skip
    assert summary["data"]["source"] == "labelling_scheme_version judge-v1"
    assert summary["data"]["examples"] == len(rows)
    neutral = sum(1 for rollout_id in posted if rollout_id % 5 == 0)
    assert summary["data"]["trained_steps"] == sum(len(r["completions"]) for r in rows) - neutral
    assert summary["eval"]["step_accuracy"] >= 0.8


def test_sigterm_stops_the_worker_after_its_batch_and_exits_0_with_a_summary(server, trained_soft, tiny_base,
                                                                             tmp_path):  # fmt: skip
    server.upload_prm_adapter("prm-sig", base_model=str(tiny_base), worker="trainer", data=trained_soft.result.zip_path)
    posted = _post_rollouts(server, synthetic_rows(prompts=3, rollouts_per_prompt=1, seed=11))
    stderr = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "prm_label_worker", "--prm_version", "prm-sig", "--device", "cpu", "--wait", "1"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(server.get_process_reward_label_ids("prm-sig")) < len(posted):
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker labelled nothing within 120 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        stderr.close()
    log = (tmp_path / "worker.log").read_text()
    assert process.returncode == 0, log
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["labelled"], summary["ended_by"]) == (len(posted), "stop")
    assert "SIGTERM: stopping after the batch in hand" in log
    assert f"prm_label_worker prm-sig: labelled {len(posted)} rollouts" in log
