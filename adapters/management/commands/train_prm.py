"""python manage.py train_prm --base_model PATH_OR_NAME --prm_version NEW
(--dataset PATH | --labelling_scheme_version S) [--epochs --lr --lora_r --lora_alpha --batch_size --max_length --seed …]
[--weight_by_confidence]
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from adapters.prm.errors import PRMError
from adapters.prm.format import (
    DEFAULT_BAD_TOKEN,
    DEFAULT_GOOD_TOKEN,
    DEFAULT_PROMPT_SEPARATOR,
    DEFAULT_STEP_TAG,
    StepTagFormat,
)
from adapters.prm.training import LR_SCHEDULERS, TrainSettings, metrics_line
from adapters.prm.training_run import train_prm_run
from prmsite.core.cli import add_output_json_flag, summary_write
from prmsite.core.client import PrmsiteAPIError, PrmsiteClient


def _escapes(value: str) -> str:
    """``\\n`` and ``\\t`` typed on a command line mean a newline and a tab."""
    return value.replace("\\n", "\n").replace("\\t", "\t")


def _default_output_dir(prm_version: str) -> Path:
    return Path("prm_adapters") / (re.sub(r"[^A-Za-z0-9._-]+", "_", prm_version).strip("._") or "adapter")


class Command(BaseCommand):
    help = (
        "Train a process reward model: a LoRA adapter (peft) on a causal LM that reads the +/- token probabilities at "
        "a tag after every step, on a stepwise export (--dataset) or the server's labels (--labelling_scheme_version), "
        "with hard or soft targets. Reports held-out loss, step accuracy and ProcessBench F1, saves the adapter "
        "(safetensors) and uploads it as --prm_version. The last line of output is a JSON summary."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--base_model", required=True, help="Hub name, local model folder, or a .gguf file.")
        parser.add_argument("--prm_version", required=True, help="Version name of the new PRM (a new one).")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--dataset", help="A stepwise export: .jsonl, .parquet or a save_to_disk folder.")
        source.add_argument(
            "--labelling_scheme_version", help="Train on the server's labels of this labelling scheme (hard labels)."
        )
        parser.add_argument("--dataset_split", default=None, help="Split of a save_to_disk DatasetDict.")
        training = parser.add_argument_group("training")
        training.add_argument("--epochs", type=int, default=1)
        training.add_argument("--lr", type=float, default=1e-4, help="Peak learning rate (AdamW). Default 1e-4.")
        training.add_argument("--lr_scheduler", choices=LR_SCHEDULERS, default="linear", help="After the warm-up.")
        training.add_argument("--warmup_ratio", type=float, default=0.0, help="Share of the steps warming up.")
        training.add_argument("--weight_decay", type=float, default=0.0)
        training.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping; 0 turns it off.")
        training.add_argument("--batch_size", type=int, default=8, help="Rollouts per forward pass.")
        training.add_argument("--gradient_accumulation_steps", type=int, default=1)
        training.add_argument("--eval_batch_size", type=int, default=None, help="Default: --batch_size.")
        training.add_argument("--max_length", type=int, default=1024, help="Tokens per training sequence.")
        training.add_argument("--seed", type=int, default=0, help="Seeds the split, the order and the LoRA init.")
        training.add_argument("--eval_fraction", type=float, default=0.1, help="Share of prompts held out.")
        training.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
        training.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16.")
        training.add_argument("--gradient_checkpointing", action="store_true", help="Less memory, more compute.")
        lora = parser.add_argument_group("LoRA")
        lora.add_argument("--lora_r", type=int, default=8)
        lora.add_argument("--lora_alpha", type=float, default=16.0)
        lora.add_argument("--lora_dropout", type=float, default=0.0)
        lora.add_argument(
            "--lora_target_modules", default="all-linear", help="all-linear, or module names: q_proj,v_proj"
        )
        labels = parser.add_argument_group("labels")
        labels.add_argument(
            "--neutral_weight",
            type=float,
            default=0.0,
            help="Loss weight of neutral steps (label code 2) towards 0.5; 0 (default) skips them.",
        )
        labels.add_argument("--hard_targets", action="store_true", help="Round soft labels to 0/1 at 0.5 for training.")
        labels.add_argument(
            "--weight_by_confidence",
            action="store_true",
            help=(
                "Weight each step's loss by 1 - the width of its value's 95%% interval (the export's counts, "
                "ci95_lows, ci95_highs; 1 for a step without completions), scaled to average 1. Needs --dataset."
            ),
        )
        fmt = parser.add_argument_group("step-tag format")
        fmt.add_argument(
            "--step_tag", default=DEFAULT_STEP_TAG, help=f"After every step (default {DEFAULT_STEP_TAG!r})."
        )
        fmt.add_argument("--good_token", default=DEFAULT_GOOD_TOKEN, help="One token: the step is good.")
        fmt.add_argument("--bad_token", default=DEFAULT_BAD_TOKEN, help="One token: the step is bad.")
        fmt.add_argument(
            "--prompt_separator", default=DEFAULT_PROMPT_SEPARATOR, help="Between the prompt and the first step."
        )
        output = parser.add_argument_group("output")
        output.add_argument("--output_dir", default=None, help="Adapter folder (default prm_adapters/PRM_VERSION).")
        output.add_argument("--overwrite", action="store_true", help="Replace an existing --output_dir.")
        output.add_argument("--no_upload", action="store_true", help="Keep the adapter local.")
        output.add_argument("--worker", default=None, help="Uploader name (default: this host's name).")
        add_output_json_flag(output)

    def handle(self, *args, **options) -> None:
        settings = TrainSettings(
            base_model=options["base_model"],
            prm_version=options["prm_version"],
            output_dir=Path(options["output_dir"] or _default_output_dir(options["prm_version"])),
            epochs=options["epochs"],
            lr=options["lr"],
            lora_r=options["lora_r"],
            lora_alpha=options["lora_alpha"],
            lora_dropout=options["lora_dropout"],
            lora_target_modules=options["lora_target_modules"],
            batch_size=options["batch_size"],
            eval_batch_size=options["eval_batch_size"],
            gradient_accumulation_steps=options["gradient_accumulation_steps"],
            max_length=options["max_length"],
            seed=options["seed"],
            device=options["device"],
            dtype=options["dtype"],
            eval_fraction=options["eval_fraction"],
            lr_scheduler=options["lr_scheduler"],
            warmup_ratio=options["warmup_ratio"],
            weight_decay=options["weight_decay"],
            max_grad_norm=options["max_grad_norm"],
            gradient_checkpointing=options["gradient_checkpointing"],
            neutral_weight=options["neutral_weight"],
            hard_targets=options["hard_targets"],
            weight_by_confidence=options["weight_by_confidence"],
            format=StepTagFormat(
                step_tag=_escapes(options["step_tag"]),
                good_token=_escapes(options["good_token"]),
                bad_token=_escapes(options["bad_token"]),
                prompt_separator=_escapes(options["prompt_separator"]),
            ),
            overwrite=options["overwrite"],
        )
        upload = not options["no_upload"]
        needs_server = upload or options["labelling_scheme_version"] is not None
        client = None
        try:
            if needs_server:
                try:
                    client = PrmsiteClient()
                except ValueError as exc:
                    hint = "; or keep the adapter local with --no_upload" if options["dataset"] is not None else ""
                    raise PRMError(f"{str(exc).rstrip('.')}{hint}") from exc
            summary = train_prm_run(
                settings,
                dataset=options["dataset"],
                dataset_split=options["dataset_split"],
                labelling_scheme_version=options["labelling_scheme_version"],
                client=client,
                upload=upload,
                worker=options["worker"] or socket.gethostname(),
                # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
                progress_file=getattr(self.stderr, "_out", sys.stderr),
                log=self.stderr.write,
            )
        except PRMError as exc:
            raise CommandError(f"train_prm: {exc}") from exc
        except PrmsiteAPIError as exc:
            raise CommandError(f"train_prm: the server refused: {exc}") from exc
        finally:
            if client is not None:
                client.close()
        held_out = f"; held out: {metrics_line(summary['eval'])}" if summary.get("eval") else ""
        where = f"uploaded ({summary['server_path']})" if summary["uploaded"] else f"kept at {summary['zip']}"
        self.stderr.write(
            self.style.SUCCESS(
                f"Trained {settings.prm_version} on {summary['data']['train_examples_used']} examples in "
                f"{summary['train']['seconds']:.1f} s{held_out}; {where}"
            )
        )
        summary_write(summary, output_json=options["output_json"], stdout=self.stdout)
