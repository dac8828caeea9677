"""The rollout worker against a real model: SmolLM2-135M-Instruct served by llama.cpp's OpenAI-compatible server, as
`make demo` serves it (issue 12). Slow, and skipped unless the llama.cpp environment is built (`make demo` builds it
into .venv-llama; LLAMA_PYTHON names another one). The default test run never depends on it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from forests.services import forest_seed
from prmsite.core.configs.loader import config_load
from prmsite.core.steps import split_steps
from prmsite.demo import MODEL_ALIAS, gguf_of_wheel
from rollouts.models import Rollout
from rollouts.worker.llm import SamplingParams
from tests.rollouts.worker.test_rollout_worker import options, run_worker
from tests.servers import PROJECT_ROOT, free_port

LLAMA_PYTHON = Path(os.environ.get("LLAMA_PYTHON") or PROJECT_ROOT / ".venv-llama" / "bin" / "python")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not LLAMA_PYTHON.exists(),
        reason=f"no llama.cpp server environment at {LLAMA_PYTHON} (built by `make demo`; or set LLAMA_PYTHON)",
    ),
]


@pytest.fixture(scope="module")
def gguf() -> Path:
    return gguf_of_wheel(LLAMA_PYTHON)


@pytest.fixture
def llama_server(gguf, tmp_path):
    port = free_port()
    log = (tmp_path / "llama.log").open("w")
    server = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS]
    process = subprocess.Popen(
        [*server, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "llama.log").read_text()[-2000:]
            try:
                if requests.get(f"{base}/models", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the llama.cpp server did not start"
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_the_worker_grows_a_forest_with_a_real_model_through_the_completions_api(
    live_api_server, worker_token, llama_server, gguf, tmp_path
):
    config = config_load("liar_demo")
    forest = forest_seed(config=config, dataset_split="test", forest_name_suffix="real", limit=3).forest

    opts = options(
        live_api_server,
        worker_token,
        SimpleNamespace(base_url=llama_server),
        tmp_path,
        model=MODEL_ALIAS,
        forest_name=forest.name,
        api="completions",
        tokenizer=str(gguf),
        growth={"policy": "mc", "num_repeats": 2, "completions_per_step": 2, "max_branch_depth": 1},
        sampling=SamplingParams(temperature=0.8, max_tokens=96, seed=1),
        concurrency=2,
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["refused"] == 0 and summary["unsent"] == 0
    rollouts = list(Rollout.objects.filter(forest=forest))
    assert len(rollouts) >= 6  # 3 trees x 2 repeats, and branches
    pattern = config.reasoning_delimiter_pattern
    for rollout in rollouts:
        assert rollout.attributes["usage"]["completion_tokens"] > 0
        assert rollout.attributes["finish_reason"] in {"stop", "length"}
        if rollout.growth.stage == "repeats":  # a whole generation, split as generated
            assert split_steps("".join(rollout.reasoning), pattern) == rollout.reasoning
        else:  # a branch: the tree's existing steps, then the continuation, which adds a node at least
            assert rollout.node.depth == len(rollout.reasoning)
    stages = set(Rollout.objects.filter(forest=forest).values_list("growth__stage", flat=True))
    assert stages == {"repeats", "mc"}
