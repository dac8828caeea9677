"""`make demo` end to end at a tiny size, on a database of its own (issue 12). Slow, and skipped unless the llama.cpp
environment is built (`make demo` builds .venv-llama; LLAMA_PYTHON names another one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.rollouts.worker.test_real_model import LLAMA_PYTHON
from tests.servers import PROJECT_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LLAMA_PYTHON.exists(), reason=f"no llama.cpp server environment at {LLAMA_PYTHON}"),
]


def test_the_demo_runs_every_stage_and_ends_with_its_summary(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_"))},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
        "HF_HOME": str(tmp_path / "hf"),
    }
    output = tmp_path / "demo-output"
    args = ["--llama_python", str(LLAMA_PYTHON), "--output_dir", str(output), "--epochs", "1"]
    args += ["--max_rollouts_per_tree", "2", "--max_forest_tokens", "2500"]
    result = subprocess.run(
        [sys.executable, "manage.py", "demo", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Accuracy (share of trees answered right" in result.stdout
    assert "ProcessBench F1" in result.stdout and "liar_demo-test-demo" in result.stdout
    summary = json.loads((output / "summary.json").read_text())
    assert len(summary["stages"]) == 10 and summary["new_rollouts"] > 0
    for name in ("beam_labelled.json", "beam_labelled.png", "stepwise.jsonl", "beam_prm.json", "evaluate_prm.json"):
        assert (output / name).stat().st_size > 0
    # Again: the forest and the PRM are reused, nothing fails.
    again = subprocess.run(
        [sys.executable, "manage.py", "demo", *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in json.loads((output / "summary.json").read_text())["stages"][6]["note"]
