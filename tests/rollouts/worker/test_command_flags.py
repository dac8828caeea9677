"""The flags, environment and JSON summary that the worker commands share (pure: no server, no database)."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from prmsite.core.cli import add_output_json_flag, summary_write
from rollouts.worker.ai_labeller import LabellerOptions
from rollouts.worker.command_flags import (
    ENV_MODEL,
    EXTRA_BODY_NOT_JSON,
    EXTRA_BODY_NOT_OBJECT,
    MISSING_ENVIRONMENT,
    REQUIRED_ENVIRONMENT,
    WORKER_ENVIRONMENT,
    FlagError,
    add_judge_flags,
    add_pool_flags,
    extra_body_from_flag,
    labeller_options_from_flags,
    worker_environment,
)
from rollouts.worker.pool_worker import PoolWorkerOptions
from rollouts.worker.rollout_worker import WorkerOptions

ENVIRONMENT = {
    "OPENAI_API_BASE": "http://judge/v1",
    "OPENAI_API_KEY": "",
    "WEBSERVER_API_BASE": "http://server",
    "WEBSERVER_API_TOKEN": "t",
    ENV_MODEL: "",
}


@pytest.fixture
def environment(monkeypatch):
    for name in WORKER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    for name, value in ENVIRONMENT.items():
        if value:
            monkeypatch.setenv(name, value)
    return monkeypatch


def judge_flags(*args: str) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labelling_scheme_version", default="judge")
    parser.add_argument("--num_processes", type=int, default=16)
    parser.add_argument("--worker_name", default=None)
    parser.add_argument("--no_active_learning", action="store_true")
    parser.add_argument("--reference_prm_version", default=None)
    parser.add_argument("--wait", type=float, default=10.0)
    parser.add_argument("--exit_when_idle", action="store_true")
    parser.add_argument("--max_labels", type=int, default=None)
    add_judge_flags(parser)
    add_pool_flags(parser, what="labels", tool="ai_label_worker", restart="a restart sends what is left")
    add_output_json_flag(parser)
    return vars(parser.parse_args(list(args)))


def test_the_rollout_worker_and_the_labeller_extend_one_options_type_with_their_own_defaults():
    servers = {"openai_base_url": "u", "openai_api_key": "k", "webserver_url": "w", "webserver_token": "t"}
    shared, rollouts = PoolWorkerOptions(**servers), WorkerOptions(**servers)
    labels = LabellerOptions(**servers, labelling_scheme_version="judge")
    assert isinstance(rollouts, PoolWorkerOptions) and isinstance(labels, PoolWorkerOptions)
    assert (rollouts.concurrency, rollouts.batch_size) == (shared.concurrency, shared.batch_size) == (128, 256)
    assert (labels.concurrency, labels.batch_size, labels.sampling.temperature) == (16, 64, 0.0)


def test_the_environment_names_the_first_missing_server_setting(environment):
    assert worker_environment()["WEBSERVER_API_TOKEN"] == "t"
    environment.delenv(REQUIRED_ENVIRONMENT[-1])
    with pytest.raises(FlagError) as caught:
        worker_environment(prefix="al_round: ")
    assert str(caught.value) == "al_round: " + MISSING_ENVIRONMENT.format(name=REQUIRED_ENVIRONMENT[-1])


def test_extra_body_must_be_a_json_object():
    assert extra_body_from_flag(None) == {}
    assert extra_body_from_flag('{"top_k": 20}') == {"top_k": 20}
    with pytest.raises(FlagError) as caught:
        extra_body_from_flag("[1]", prefix="x: ")
    assert str(caught.value) == "x: " + EXTRA_BODY_NOT_OBJECT
    with pytest.raises(FlagError, match=EXTRA_BODY_NOT_JSON.split("{")[0]):
        extra_body_from_flag("{not json")


def test_the_labellers_options_come_from_the_judge_and_pool_flags(environment):
    options = labeller_options_from_flags(
        judge_flags("--model_name", "m", "--temperature", "0.5", "--num_processes", "3", "--spool_dir", "spool-here")
    )
    assert (options.model, options.concurrency, options.spool_dir) == ("m", 3, "spool-here")
    assert options.openai_api_key == "EMPTY" and options.webserver_url == "http://server"
    assert options.sampling.temperature == 0.5 and options.labelling_scheme_version == "judge"


def test_a_judge_seed_flag_fills_the_seed(environment):
    parser = argparse.ArgumentParser()
    add_judge_flags(parser, seed_flag="--judge_seed")
    assert parser.parse_args(["--judge_seed", "7"]).judge_seed == 7


def test_the_summary_goes_to_the_json_file_and_to_stdout_as_one_line(tmp_path):
    out = io.StringIO()
    summary_write({"status": "completed", "sent": 3}, output_json=str(tmp_path / "s" / "summary.json"), stdout=out)
    assert json.loads((tmp_path / "s" / "summary.json").read_text()) == {"sent": 3, "status": "completed"}
    assert out.getvalue() == '{"sent": 3, "status": "completed"}'
    summary_write({"status": "failed"}, output_json=None)  # neither: nothing written, nothing raised
