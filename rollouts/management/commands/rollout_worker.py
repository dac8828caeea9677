"""``python manage.py rollout_worker``: generate rollouts with an OpenAI-compatible server and post them.

Dataset mode (spec/rollout-generator.md)::

    rollout_worker --model_name M --template_json T.json --dataset_name D --num_processes 128 --num_repeats 16

Forest mode (spec/preference-dataset.md, "Populating the Forest")::

    rollout_worker --forest_name F --num_processes 128 [--policy repeats|mc|omega …]

The command only parses flags; the worker is ``rollouts.worker.rollout_worker``, run by
``rollouts.worker.rollout_processes`` (a pure client: no database).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prmsite.core.cli import FLAG_AT_LEAST_ONE, add_output_json_flag, summary_write
from prmsite.core.growth import POLICIES, POLICY_HELP
from rollouts.worker.command_flags import (
    FlagError,
    add_model_name_flag,
    add_pool_flags,
    extra_body_from_flag,
    pool_options_from_flags,
    worker_environment,
    worker_logging,
)
from rollouts.worker.llm import APIS, SamplingParams
from rollouts.worker.pool_worker import EXIT_OK
from rollouts.worker.rollout_processes import run
from rollouts.worker.rollout_worker import DatasetSpec, WorkerOptions, default_worker_name


class Command(BaseCommand):
    help = (
        "Generate rollouts with an OpenAI-compatible server (OPENAI_API_BASE, OPENAI_API_KEY) and post them to this "
        "project's server (WEBSERVER_API_BASE, WEBSERVER_API_TOKEN): every dataset item x --num_repeats "
        "(--template_json, --dataset_name), or what a forest's growth policy asks for (--forest_name)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_argument_group("what to generate")
        add_model_name_flag(mode)
        mode.add_argument(
            "--template_json",
            help="Dataset mode: the rollout template JSON (template, "
            "reasoning_delimiter_pattern, prediction_pattern, rollout_config_version, optional "
            "dataset_name, label_field, label_map). Forest mode: take the patterns from it.",
        )
        mode.add_argument(
            "--dataset_name",
            help="Dataset mode: a hub name or a local path (file, folder, "
            "save_to_disk folder; {split} allowed), as seed_forest reads it.",
        )
        mode.add_argument(
            "--dataset_split",
            default=None,
            help="Dataset mode: the split (default: the template's dataset_split, else train).",
        )
        mode.add_argument("--forest_name", help="Forest mode: grow this forest as its growth policy decides.")
        mode.add_argument(
            "--num_processes",
            type=int,
            default=128,
            help="Generation requests in flight at once (default 128), in one asyncio loop per OS process.",
        )
        mode.add_argument(
            "--num_repeats",
            type=int,
            default=None,
            help="Rollouts per item (dataset mode, default "
            "1) or per root before branching (forest mode, default: the stored plan's, else 4).",
        )

        growth = parser.add_argument_group("forest growth (stored on the forest; other values need --replan)")
        growth.add_argument(
            "--policy",
            choices=POLICIES,
            default=None,
            help="; ".join(f"{name}: {text}" for name, text in POLICY_HELP.items())
            + ". Default mc (repeats, then mc).",
        )
        growth.add_argument(
            "--completions_per_step",
            type=int,
            default=None,
            help="mc: rollouts through each step; omega: completions per probe (default 8).",
        )
        growth.add_argument(
            "--estimate",
            choices=("hard", "soft"),
            default=None,
            help="adaptive: hard (a step is good once a completion from it is correct; bad after "
            "--max_completions_per_step without one) or soft (stop at --precision). Default hard.",
        )
        growth.add_argument(
            "--precision",
            type=float,
            default=None,
            help="adaptive, soft: stop once a step's 95%% Wilson interval is narrower than this (default 0.2).",
        )
        growth.add_argument(
            "--max_completions_per_step",
            type=int,
            default=None,
            help="adaptive: most rollouts through a step (default 8).",
        )
        growth.add_argument(
            "--round_size", type=int, default=None, help="adaptive: completions asked of a step at a time (default 2)."
        )
        growth.add_argument(
            "--max_branch_depth",
            type=int,
            default=None,
            help="mc: branch from steps down to this depth only (default: all).",
        )
        growth.add_argument(
            "--skip_uniform_trees",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="Do not branch trees whose first --num_repeats rollouts are all right or all wrong.",
        )
        growth.add_argument(
            "--max_children_per_node", type=int, default=None, help="Do not branch from a node with this many children."
        )
        growth.add_argument("--max_rollouts_per_tree", type=int, default=None, help="Ask no tree for more rollouts.")
        growth.add_argument(
            "--max_forest_tokens", type=int, default=None, help="Stop once the forest's rollouts used this many tokens."
        )
        growth.add_argument(
            "--replan", action="store_true", help="Replace the forest's stored growth options with the ones given."
        )
        growth.add_argument(
            "--wait_for_work",
            action="store_true",
            help="Keep polling when the policy has nothing left to grow (for forests that others keep seeding).",
        )
        growth.add_argument("--reasoning_delimiter_pattern", default=None, help="Override the stored pattern.")
        growth.add_argument("--prediction_pattern", default=None, help="Override the stored pattern.")

        gen = parser.add_argument_group("generation")
        gen.add_argument(
            "--api",
            choices=APIS,
            default="chat",
            help="chat: chat completions; a partial answer is "
            "continued with vLLM's continue_final_message. completions: the completions API with the "
            "prompt rendered by --tokenizer's chat template (servers without continue_final_message).",
        )
        gen.add_argument(
            "--tokenizer",
            default=None,
            help="Hub name or local folder of the model's tokenizer (its chat template), for --api completions.",
        )
        gen.add_argument("--temperature", type=float, default=None)
        gen.add_argument("--top_p", type=float, default=None)
        gen.add_argument("--max_tokens", type=int, default=None)
        gen.add_argument("--seed", type=int, default=None, help="Base seed; each request gets its own seed from it.")
        gen.add_argument(
            "--n",
            type=int,
            default=1,
            help="Answers per request (default 1); the rollout counts stay the same, requests carry up to n of them.",
        )
        gen.add_argument("--stop", action="append", default=None, help="A stop string (repeatable).")
        gen.add_argument(
            "--extra_body",
            default=None,
            help='JSON object of server-specific parameters, e.g. \'{"top_k": 20, "min_p": 0.05}\' for vLLM.',
        )
        gen.add_argument("--request_timeout_s", type=float, default=600.0)
        gen.add_argument(
            "--max_attempts",
            type=int,
            default=8,
            help="Tries per request (timeouts, connection "
            "errors, 429, 5xx are retried with exponential back-off and jitter).",
        )

        run_group = parser.add_argument_group("running")
        run_group.add_argument("--worker_name", default=None, help="Stored with every rollout (default: host name).")
        run_group.add_argument(
            "--num_os_processes",
            type=int,
            default=1,
            help="Split --num_processes over this many OS processes (default 1).",
        )
        run_group.add_argument("--batch_size", type=int, default=256, help="Rollouts per POST /rollout/batch.")
        add_pool_flags(
            run_group, what="rollouts", tool="rollout_worker", restart="a restart with the same flags continues there"
        )
        add_output_json_flag(run_group)

    def handle(self, *args: Any, **o: Any) -> None:
        options = self._options(o)
        with worker_logging(bar=options.show_bar and not options.log_json):
            code, summary = run(options)
        summary_write(summary, output_json=o["output_json"])
        if code != EXIT_OK:
            raise CommandError(summary.get("error") or "the worker failed")

    def _options(self, o: dict[str, Any]) -> WorkerOptions:
        forest, template, dataset = o["forest_name"], o["template_json"], o["dataset_name"]
        if forest and dataset:
            raise CommandError("give --forest_name (forest mode) or --dataset_name (dataset mode), not both")
        if not forest and not template:
            raise CommandError("give --forest_name (forest mode), or --template_json and --dataset_name (dataset mode)")
        for name in ("num_processes", "n", "num_os_processes", "batch_size", "max_attempts"):
            if o[name] is None or o[name] < 1:
                raise CommandError(FLAG_AT_LEAST_ONE.format(flag=name))
        if o["num_os_processes"] > o["num_processes"]:
            raise CommandError("--num_os_processes cannot exceed --num_processes")
        if o["api"] == "completions" and not o["tokenizer"]:
            raise CommandError("--api completions needs --tokenizer (the model's chat template)")
        try:
            extra_body = extra_body_from_flag(o["extra_body"])
            env = worker_environment()
        except FlagError as exc:
            raise CommandError(str(exc)) from exc
        growth = {
            key: o[flag]
            for key, flag in (
                ("policy", "policy"),
                ("num_repeats", "num_repeats"),
                ("completions_per_step", "completions_per_step"),
                ("max_branch_depth", "max_branch_depth"),
                ("skip_uniform", "skip_uniform_trees"),
                ("max_children_per_node", "max_children_per_node"),
                ("max_rollouts_per_tree", "max_rollouts_per_tree"),
                ("max_forest_tokens", "max_forest_tokens"),
                ("estimate", "estimate"),
                ("precision", "precision"),
                ("max_completions_per_step", "max_completions_per_step"),
                ("round_size", "round_size"),
            )
            if o[flag] is not None
        }
        if not forest and set(growth) - {"num_repeats"}:
            raise CommandError(f"--{next(iter(set(growth) - {'num_repeats'}))} applies to forest mode (--forest_name)")
        if o["num_repeats"] is not None and o["num_repeats"] < (0 if forest else 1):
            raise CommandError(FLAG_AT_LEAST_ONE.format(flag="num_repeats"))
        spec = None
        if not forest:
            split = o["dataset_split"] or _template_split(template) or "train"
            spec = DatasetSpec(template_json=template, dataset_name=dataset, dataset_split=split)
        return WorkerOptions(
            **pool_options_from_flags(o, env),
            worker_name=o["worker_name"] or default_worker_name(),
            forest_name=forest,
            dataset=spec,
            num_repeats=o["num_repeats"] if forest else (o["num_repeats"] or 1),
            growth=growth,
            replan=o["replan"],
            wait_for_work=o["wait_for_work"],
            reasoning_delimiter_pattern=o["reasoning_delimiter_pattern"]
            or (_template_key(template, "reasoning_delimiter_pattern") if forest and template else None),
            prediction_pattern=o["prediction_pattern"]
            or (_template_key(template, "prediction_pattern") if forest and template else None),
            sampling=SamplingParams(
                temperature=o["temperature"],
                top_p=o["top_p"],
                max_tokens=o["max_tokens"],
                seed=o["seed"],
                stop=o["stop"],
                extra_body=extra_body,
            ),
            n=o["n"],
            batch_size=o["batch_size"],
            processes=o["num_os_processes"],
        )


def _template(path: str) -> dict[str, Any]:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--template_json {path!r} cannot be read: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"--template_json {path!r} must hold a JSON object")
    return data


def _template_split(path: str) -> str | None:
    value = _template(path).get("dataset_split")
    return value if isinstance(value, str) and value else None


def _template_key(path: str, key: str) -> str | None:
    value = _template(path).get(key)
    return value if isinstance(value, str) and value else None
