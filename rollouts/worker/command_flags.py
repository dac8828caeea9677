"""What the worker commands share: their common flags, the environment they read, the options they build from both,
how they log, and how they write their JSON summary.

The commands (``rollout_worker``, ``ai_label_worker``, ``prm_label_worker``, ``train_prm``, ``export_preferences``,
``al_round``) only parse flags and call one service or worker; what is the same between them is written here once.
Pure: argparse, no Django. A problem with the flags raises :class:`FlagError` (one line, starting with the command's
name where the command asks for it); a command turns it into a ``CommandError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from rollouts.worker.ai_labeller import LabellerOptions, default_worker_name
from rollouts.worker.llm import APIS, SamplingParams
from rollouts.worker.verdicts import STRUCTURED_JSON_SCHEMA, STRUCTURED_OUTPUTS

ENV_MODEL = "OPENAI_MODEL_NAME"
ENV_OPENAI_BASE = "OPENAI_API_BASE"
ENV_OPENAI_KEY = "OPENAI_API_KEY"
ENV_WEBSERVER_BASE = "WEBSERVER_API_BASE"
ENV_WEBSERVER_TOKEN = "WEBSERVER_API_TOKEN"  # noqa: S105 (a variable's name)
WORKER_ENVIRONMENT = (ENV_OPENAI_BASE, ENV_OPENAI_KEY, ENV_WEBSERVER_BASE, ENV_WEBSERVER_TOKEN, ENV_MODEL)
REQUIRED_ENVIRONMENT = (ENV_OPENAI_BASE, ENV_WEBSERVER_BASE, ENV_WEBSERVER_TOKEN)
NOISY_LOGGERS = ("httpx2", "httpx", "openai")  # one line per request otherwise

MISSING_ENVIRONMENT = "set {name} (see .env.example)"
EXTRA_BODY_NOT_JSON = "--extra_body is not JSON: {error}"
EXTRA_BODY_NOT_OBJECT = "--extra_body must be a JSON object"


class FlagError(ValueError):
    """The flags or the environment cannot make a run (one line for the user)."""


# --- flags -----------------------------------------------------------------------------------------------------------


def add_model_name_flag(group: Any) -> None:
    group.add_argument(
        "--model_name",
        default=None,
        help=f"Model name sent to the server (default: ${ENV_MODEL}, else the only model the server lists).",
    )


def add_pool_flags(group: Any, *, what: str, tool: str, restart: str) -> None:
    """The flags of a pool worker's spool, stop and report: ``what`` the results are called ("rollouts", "labels"),
    ``tool`` names the default spool folder, ``restart`` says what a restart sends."""
    group.add_argument(
        "--spool_dir",
        default=None,
        help=f"Where finished {what} wait until the server has them (default ~/.cache/prmsite/{tool}); {restart}.",
    )
    group.add_argument(
        "--shutdown_grace_s",
        type=float,
        default=20.0,
        help="On SIGINT/SIGTERM, let requests in flight finish this long (default 20).",
    )
    group.add_argument(
        "--drain_timeout_s",
        type=float,
        default=600.0,
        help="At the end, try this long to store what is left in the spool (default 600).",
    )
    group.add_argument(
        "--send_backoff_max_s",
        type=float,
        default=30.0,
        help=f"Longest wait between two tries to store {what} while the server is unreachable (default 30).",
    )
    group.add_argument(
        "--log_json",
        action="store_true",
        help="JSON lines (progress every 10 s, then the summary) on stdout instead of the progress bar.",
    )


def add_judge_flags(judge: Any, *, seed_flag: str = "--seed") -> None:
    """The flags of the AI judge (model, prompt, structured output, sampling, tries): ``ai_label_worker`` and
    ``al_round`` (with ``--judge_seed``, its ``--seed`` being the training's)."""
    add_model_name_flag(judge)
    judge.add_argument(
        "--prompt_template",
        default=None,
        help="A text file with the prompt and the fields {problem}, {steps} (required), {num_steps}, "
        "{format_instructions}, {prediction}, {ground_truth}, {final_answer}, {correct}, {model} (default: the "
        "built-in template).",
    )
    judge.add_argument("--system_prompt", default=None, help="A system message sent before the prompt.")
    judge.add_argument(
        "--structured_output",
        choices=STRUCTURED_OUTPUTS,
        default=STRUCTURED_JSON_SCHEMA,
        help="How to ask for the verdicts' JSON schema: json_schema (OpenAI's response_format; vLLM, SGLang, "
        "llama.cpp and Ollama take it too), structured_outputs (vLLM >= 0.10.2's extra_body), guided_json "
        "(vLLM before 0.12), none (the prompt only). Answers are parsed tolerantly in every mode.",
    )
    judge.add_argument(
        "--api",
        choices=APIS,
        default="chat",
        help="chat (default) or completions (the prompt rendered with --tokenizer's chat template).",
    )
    judge.add_argument(
        "--tokenizer",
        default=None,
        help="Hub name or local folder of the judge's tokenizer, for --api completions.",
    )
    judge.add_argument(
        "--temperature", type=float, default=0.0, help="Default 0 (the same answer for the same rollout)."
    )
    judge.add_argument("--top_p", type=float, default=None)
    judge.add_argument("--max_tokens", type=int, default=None, help="Longest answer (default: the server's).")
    judge.add_argument(seed_flag, dest="seed" if seed_flag == "--seed" else seed_flag[2:], type=int, default=None,
                       help="The judge's sampling seed.")  # fmt: skip
    judge.add_argument(
        "--extra_body", default=None, help="JSON object of server-specific parameters, e.g. '{\"top_k\": 20}'."
    )
    judge.add_argument(
        "--answer_attempts",
        type=int,
        default=3,
        help="Answers asked per rollout (default 3): an unusable one is asked again with what is wrong with it; "
        "after the last, the rollout is released.",
    )
    judge.add_argument(
        "--max_attempts",
        type=int,
        default=8,
        help="Tries per request (timeouts, connection errors, 429 and 5xx are retried with back-off).",
    )
    judge.add_argument("--request_timeout_s", type=float, default=600.0)


# --- options from flags and environment ------------------------------------------------------------------------------


def worker_environment(*, prefix: str = "") -> dict[str, str]:
    """The servers' addresses, key, token and model name from the environment; ``FlagError`` (its line starting with
    ``prefix``) naming the first required one that is unset."""
    env = {name: os.environ.get(name, "").strip() for name in WORKER_ENVIRONMENT}
    for name in REQUIRED_ENVIRONMENT:
        if not env[name]:
            raise FlagError(prefix + MISSING_ENVIRONMENT.format(name=name))
    return env


def extra_body_from_flag(value: str | None, *, prefix: str = "") -> dict[str, Any]:
    """``--extra_body``'s JSON object (``{}`` when not given)."""
    if not value:
        return {}
    try:
        extra_body = json.loads(value)
    except ValueError as exc:
        raise FlagError(prefix + EXTRA_BODY_NOT_JSON.format(error=exc)) from exc
    if not isinstance(extra_body, dict):
        raise FlagError(prefix + EXTRA_BODY_NOT_OBJECT)
    return extra_body


def pool_options_from_flags(o: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """The :class:`~rollouts.worker.pool_worker.PoolWorkerOptions` fields that every worker command takes the same
    way from its flags and the environment (the sampling and the worker name excepted)."""
    return {
        "openai_base_url": env[ENV_OPENAI_BASE],
        "openai_api_key": env[ENV_OPENAI_KEY] or "EMPTY",
        "webserver_url": env[ENV_WEBSERVER_BASE],
        "webserver_token": env[ENV_WEBSERVER_TOKEN],
        "model": o["model_name"] or env[ENV_MODEL],
        "api": o["api"],
        "tokenizer": o["tokenizer"],
        "concurrency": o["num_processes"],
        "request_timeout_s": o["request_timeout_s"],
        "max_attempts": o["max_attempts"],
        "spool_dir": o["spool_dir"],
        "shutdown_grace_s": o["shutdown_grace_s"],
        "drain_timeout_s": o["drain_timeout_s"],
        "send_backoff_max_s": o["send_backoff_max_s"],
        "log_json": o["log_json"],
    }


def labeller_options_from_flags(o: dict[str, Any], *, command: str = "ai_label_worker") -> LabellerOptions:
    """The AI labeller's options from the flags of :func:`add_judge_flags` and :func:`add_pool_flags` and the
    environment; ``FlagError`` (its line starting with ``command``) for what is missing."""
    prefix = f"{command}: "
    env = worker_environment(prefix=prefix)
    if o["api"] == "completions" and not o["tokenizer"]:
        raise FlagError(f"{prefix}--api completions needs --tokenizer (the judge's chat template)")
    extra_body = extra_body_from_flag(o["extra_body"], prefix=prefix)
    return LabellerOptions(
        **pool_options_from_flags(o, env),
        labelling_scheme_version=o["labelling_scheme_version"],
        worker_name=o["worker_name"] or default_worker_name(),
        prompt_template=o["prompt_template"],
        system_prompt=o["system_prompt"],
        active_learning=not o["no_active_learning"],
        reference_prm_version=o["reference_prm_version"],
        claim_wait_s=o["wait"],
        exit_when_idle=o["exit_when_idle"],
        max_labels=o["max_labels"],
        structured_output=o["structured_output"],
        sampling=SamplingParams(
            temperature=o["temperature"],
            top_p=o["top_p"],
            max_tokens=o["max_tokens"],
            seed=o["seed"],
            extra_body=extra_body,
        ),
        answer_attempts=o["answer_attempts"],
    )


# --- logging and the summary -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_logging(*, bar: bool) -> Iterator[None]:
    """The workers' log lines at INFO, the HTTP libraries' per-request lines off; with a progress ``bar``, log lines
    are written above it instead of through it."""
    logging.getLogger("rollouts.worker").setLevel(logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with logging_redirect_tqdm() if bar else contextlib.nullcontext():
        yield
