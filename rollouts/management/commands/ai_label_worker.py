"""``python manage.py ai_label_worker``: an LLM judge grades every step of the rollouts of a labelling scheme's queue.

    ai_label_worker --labelling_scheme_version S --model_name M [--prompt_template PATH] --num_processes N

The command only parses flags; the worker is ``rollouts.worker.labeller`` (a pure client: no database).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rollouts.worker.labeller import EXIT_OK, LabellerOptions, default_worker_name, run
from rollouts.worker.llm import APIS, SamplingParams
from rollouts.worker.verdicts import STRUCTURED_JSON_SCHEMA, STRUCTURED_OUTPUTS

ENV_MODEL = "OPENAI_MODEL_NAME"


class Command(BaseCommand):
    help = (
        "The AI step labeller: claim rollouts of a labelling scheme (active learning: those the reference PRM gets "
        "wrong first), ask an LLM judge on an OpenAI-compatible server (OPENAI_API_BASE, OPENAI_API_KEY) to grade "
        "every step 0 (not preferred), 1 (preferred) or 2 (neutral) with a short explanation, and post the grades as "
        "process reward labels of the scheme to this project's server (WEBSERVER_API_BASE, WEBSERVER_API_TOKEN)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_argument_group("what to label")
        what.add_argument(
            "--labelling_scheme_version",
            required=True,
            help="The scheme's prm_version: the queue claimed, and the prm_version of the labels posted.",
        )
        what.add_argument(
            "--reference_prm_version",
            default=None,
            help="Active learning: the PRM whose disagreement with the ground truth orders the queue (default: the "
            "server's newest adapter).",
        )
        what.add_argument("--no_active_learning", action="store_true", help="Claim the oldest rollouts first instead.")
        what.add_argument("--max_labels", type=int, default=None, help="Stop after this many labels.")
        what.add_argument(
            "--exit_when_idle", action="store_true", help="Stop when a claim comes back empty with nothing in flight."
        )
        what.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="Long-poll seconds of a claim when the queue is empty (default 10); a stop takes effect within it.",
        )

        add_judge_arguments(parser.add_argument_group("the judge"))

        running = parser.add_argument_group("running")
        running.add_argument(
            "--num_processes", type=int, default=16, help="Judge requests in flight at once (default 16)."
        )
        running.add_argument("--worker_name", default=None, help="Stored with every label (default: HOST-judge).")
        running.add_argument(
            "--spool_dir",
            default=None,
            help="Where finished labels wait until the server has them (default ~/.cache/prmsite/ai_label_worker); "
            "a restart with the same scheme and worker name sends what is left.",
        )
        running.add_argument(
            "--shutdown_grace_s",
            type=float,
            default=20.0,
            help="On SIGINT/SIGTERM, let requests in flight finish this long (default 20).",
        )
        running.add_argument(
            "--drain_timeout_s",
            type=float,
            default=600.0,
            help="At the end, try this long to store what is left in the spool (default 600).",
        )
        running.add_argument(
            "--send_backoff_max_s",
            type=float,
            default=30.0,
            help="Longest wait between two tries to store labels while the server is unreachable (default 30).",
        )
        running.add_argument(
            "--log_json",
            action="store_true",
            help="JSON lines (progress every 10 s, then the summary) on stdout instead of the progress bar.",
        )
        running.add_argument("--output_json", default=None, help="Also write the summary to this JSON file.")

    def handle(self, *args: Any, **o: Any) -> None:
        options = options_from_flags(o)
        logging.getLogger("rollouts.worker").setLevel(logging.INFO)
        for noisy in ("httpx2", "httpx", "openai"):  # one line per request otherwise
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
        streams = {"out": self.stdout, "err": getattr(self.stderr, "_out", sys.stderr)}
        if options.show_bar and not options.log_json:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                code, summary = run(options, **streams)
        else:
            code, summary = run(options, **streams)
        if o["output_json"]:
            from prmsite.core.files import json_write_atomic

            json_write_atomic(o["output_json"], summary)
        if code != EXIT_OK:
            raise CommandError(f"ai_label_worker: {summary.get('error') or 'the worker failed'}")


def add_judge_arguments(judge: Any, *, seed_flag: str = "--seed") -> None:
    """The flags of the judge (model, prompt, structured output, sampling, tries): ``al_round`` takes them too (with
    ``--judge_seed``, its ``--seed`` being the training's)."""
    judge.add_argument(
        "--model_name",
        default=None,
        help=f"Model name sent to the server (default: ${ENV_MODEL}, else the only model the server lists).",
    )
    judge.add_argument(
        "--prompt_template",
        default=None,
        help="A text file with the prompt and the fields {problem}, {steps} (required), {num_steps}, "
        "{format_instructions}, {prediction}, {ground_truth}, {correct}, {model} (default: the built-in template).",
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


def options_from_flags(o: dict[str, Any], *, command: str = "ai_label_worker") -> LabellerOptions:
    """The labeller's options from the command's flags and the environment; ``CommandError`` (its line starting with
    ``command``) for what is missing. ``al_round`` builds its judge with it too."""
    env = {
        name: os.environ.get(name, "").strip()
        for name in ("OPENAI_API_BASE", "OPENAI_API_KEY", "WEBSERVER_API_BASE", "WEBSERVER_API_TOKEN", ENV_MODEL)
    }
    for name in ("OPENAI_API_BASE", "WEBSERVER_API_BASE", "WEBSERVER_API_TOKEN"):
        if not env[name]:
            raise CommandError(f"{command}: set {name} (see .env.example)")
    if o["api"] == "completions" and not o["tokenizer"]:
        raise CommandError(f"{command}: --api completions needs --tokenizer (the judge's chat template)")
    extra_body: dict[str, Any] = {}
    if o["extra_body"]:
        try:
            extra_body = json.loads(o["extra_body"])
        except ValueError as exc:
            raise CommandError(f"{command}: --extra_body is not JSON: {exc}") from exc
        if not isinstance(extra_body, dict):
            raise CommandError(f"{command}: --extra_body must be a JSON object")
    return LabellerOptions(
        openai_base_url=env["OPENAI_API_BASE"],
        openai_api_key=env["OPENAI_API_KEY"] or "EMPTY",
        webserver_url=env["WEBSERVER_API_BASE"],
        webserver_token=env["WEBSERVER_API_TOKEN"],
        labelling_scheme_version=o["labelling_scheme_version"],
        model=o["model_name"] or env[ENV_MODEL],
        worker_name=o["worker_name"] or default_worker_name(),
        prompt_template=o["prompt_template"],
        system_prompt=o["system_prompt"],
        active_learning=not o["no_active_learning"],
        reference_prm_version=o["reference_prm_version"],
        claim_wait_s=o["wait"],
        exit_when_idle=o["exit_when_idle"],
        max_labels=o["max_labels"],
        api=o["api"],
        tokenizer=o["tokenizer"],
        structured_output=o["structured_output"],
        sampling=SamplingParams(
            temperature=o["temperature"],
            top_p=o["top_p"],
            max_tokens=o["max_tokens"],
            seed=o["seed"],
            extra_body=extra_body,
        ),
        answer_attempts=o["answer_attempts"],
        concurrency=o["num_processes"],
        request_timeout_s=o["request_timeout_s"],
        max_attempts=o["max_attempts"],
        spool_dir=o["spool_dir"],
        shutdown_grace_s=o["shutdown_grace_s"],
        drain_timeout_s=o["drain_timeout_s"],
        send_backoff_max_s=o["send_backoff_max_s"],
        log_json=o["log_json"],
    )
