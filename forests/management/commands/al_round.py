"""python manage.py al_round --forest_name F --labelling_scheme_version S --base_model B [--prm_version V] …

One round of the active-learning loop: AI labels (active learning) → train a PRM → label with it → measure, then the
round's metrics beside the previous round's. See ``forests.active_learning.round``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from adapters.prm.errors import PRMError
from adapters.prm.inference_worker import LabelWorkerSettings
from adapters.prm.inference_worker import default_worker_name as prm_worker_name
from adapters.prm.training import TrainSettings
from forests.active_learning.comparison import comparison_table
from forests.active_learning.round import TRAIN_SOURCES, Round, RoundError, RoundSettings
from forests.active_learning.state import StateError
from forests.metrics.beam import Aggregation
from forests.metrics.search import parse_num_beam_values
from prmsite.core.cli import FLAG_AT_LEAST_ONE, add_output_json_flag, summary_write
from prmsite.core.domain import PRM_THRESHOLD
from prmsite.core.errors import ApplicationError
from rollouts.worker.command_flags import FlagError, add_judge_flags, labeller_options_from_flags, worker_logging

JUDGE_DEFAULTS = {
    "worker_name": None,
    "no_active_learning": False,
    "wait": 0.0,
    "exit_when_idle": True,
    "shutdown_grace_s": 20.0,
    "drain_timeout_s": 600.0,
    "send_backoff_max_s": 30.0,
    "log_json": False,
    "spool_dir": None,
}


class Command(BaseCommand):
    help = (
        "One round of the active-learning loop on a forest: the AI judge labels the scheme's queue (active learning "
        "against the previous round's PRM), a new PRM is trained on the scheme's labels (or on the forest's "
        "Monte-Carlo values) and uploaded, it labels every rollout, and beam search and evaluate_prm measure it. "
        "Prints the round's metrics next to the previous round's; the rounds are kept in --state_dir."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--forest_name", required=True, help="The forest the round is measured on.")
        parser.add_argument(
            "--labelling_scheme_version", required=True, help="The scheme the judge labels and the PRM learns from."
        )
        parser.add_argument("--base_model", required=True, help="Hub name, local model folder or .gguf of the PRM.")
        parser.add_argument(
            "--prm_version", default=None, help="The new PRM's version (default: FOREST-rN, N the round's number)."
        )
        parser.add_argument(
            "--state_dir",
            default="al_rounds",
            help="Where the rounds are kept: STATE_DIR/FOREST.json, and each round's adapter (default al_rounds).",
        )
        add_output_json_flag(parser, help="Also write this round's record to this JSON file.")

        label = parser.add_argument_group("stage 1: AI labels (ai_label_worker)")
        label.add_argument(
            "--skip_ai_labels",
            action="store_true",
            help="No judge: train on the labels the scheme has (people's, an earlier run's).",
        )
        label.add_argument("--max_labels", type=int, default=None, help="Labels to add this round (default: all).")
        label.add_argument(
            "--reference_prm_version",
            default=None,
            help="Active learning's reference PRM (default: the previous round's, else the newest adapter).",
        )
        label.add_argument("--num_processes", type=int, default=16, help="Judge requests in flight (default 16).")
        label.add_argument("--judge_worker_name", default=None, help="Worker name on the labels (default: HOST-judge).")
        add_judge_flags(label, seed_flag="--judge_seed")

        train = parser.add_argument_group("stage 2: training (train_prm)")
        train.add_argument(
            "--train_on",
            choices=TRAIN_SOURCES,
            default="labels",
            help="labels: the scheme's labels on the server (default); forest: a stepwise export of the forest with "
            "its soft Monte-Carlo values.",
        )
        train.add_argument("--epochs", type=int, default=1)
        train.add_argument("--lr", type=float, default=1e-4)
        train.add_argument("--lora_r", type=int, default=8)
        train.add_argument("--lora_alpha", type=float, default=16.0)
        train.add_argument("--batch_size", type=int, default=8, help="Rollouts per training step.")
        train.add_argument("--max_length", type=int, default=1024)
        train.add_argument("--seed", type=int, default=0)
        train.add_argument("--eval_fraction", type=float, default=0.1, help="Share of prompts held out.")
        train.add_argument(
            "--neutral_weight", type=float, default=0.0, help="Loss weight of neutral steps (0: skipped)."
        )
        train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (training and labelling).")
        train.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16.")

        prm = parser.add_argument_group("stage 3: labelling with the PRM (prm_label_worker)")
        prm.add_argument("--label_batch_size", type=int, default=8, help="Rollouts per forward pass.")

        measure = parser.add_argument_group("stage 4: measuring (beam_search, evaluate_prm)")
        measure.add_argument("--num_beam_values", default="1,5", help="Numbers of beams (default 1,5).")
        measure.add_argument(
            "--aggregation",
            default=Aggregation.LAST.value,
            choices=[a.value for a in Aggregation],
            help="Default last.",
        )
        measure.add_argument(
            "--reference",
            default="labelled",
            help="evaluate_prm's reference: labelled (exact values, default), labels (the scheme's labels) or "
            "labels:SCHEME.",
        )
        measure.add_argument(
            "--threshold",
            type=float,
            default=PRM_THRESHOLD,
            help=f"A step scored below it is wrong (default {PRM_THRESHOLD}).",
        )
        measure.add_argument("--save", action="store_true", help="Also show the search figures on the forest's page.")

    def handle(self, *args: Any, **o: Any) -> None:
        settings = self._settings(o)
        started = time.monotonic()
        try:
            with worker_logging(bar=False):
                runner = Round(
                    settings,
                    log=self.stderr.write,
                    # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
                    err=getattr(self.stderr, "_out", sys.stderr),
                    labeller_out=self.stderr,
                )
                record, previous = runner.run()
        except (RoundError, StateError, ApplicationError) as exc:
            raise CommandError(f"al_round: {getattr(exc, 'message', None) or exc}") from exc
        except ValueError as exc:  # no server address or token
            raise CommandError(f"al_round: {exc}") from exc
        summary_write(record, output_json=o["output_json"])
        against = f"round {previous['round']} (prm {previous['prm_version']})" if previous else "no earlier round"
        self.stdout.write(
            f"al_round {settings.forest_name}: round {record['round']} (prm {record['prm_version']}) against {against}"
        )
        self.stdout.write(comparison_table(record, previous))
        self.stderr.write(
            self.style.SUCCESS(
                f"al_round {settings.forest_name}: round {record['round']} completed in "
                f"{time.monotonic() - started:.1f} s; rounds kept in {runner.state.path}"
            )
        )

    def _settings(self, o: dict[str, Any]) -> RoundSettings:
        try:
            beams = tuple(parse_num_beam_values(o["num_beam_values"]))
        except ValueError as exc:
            raise CommandError(f"al_round: {exc}") from exc
        for name in ("label_batch_size", "num_processes"):
            if o[name] < 1:
                raise CommandError("al_round: " + FLAG_AT_LEAST_ONE.format(flag=name))
        reference = o["reference"]
        if reference not in ("labelled", "labels") and not reference.startswith("labels:"):
            raise CommandError("al_round: --reference must be labelled, labels or labels:SCHEME")
        labeller = None
        if not o["skip_ai_labels"]:
            flags = {**JUDGE_DEFAULTS, **o, "worker_name": o["judge_worker_name"], "seed": o["judge_seed"]}
            try:
                labeller = labeller_options_from_flags(flags, command="al_round")
            except FlagError as exc:
                raise CommandError(str(exc)) from exc
        train = TrainSettings(
            base_model=o["base_model"],
            prm_version="-",  # the round's
            output_dir=Path("-"),  # the round's
            epochs=o["epochs"],
            lr=o["lr"],
            lora_r=o["lora_r"],
            lora_alpha=o["lora_alpha"],
            batch_size=o["batch_size"],
            max_length=o["max_length"],
            seed=o["seed"],
            device=o["device"],
            dtype=o["dtype"],
            eval_fraction=o["eval_fraction"],
            neutral_weight=o["neutral_weight"],
        )
        try:
            train.check()
        except PRMError as exc:
            raise CommandError(f"al_round: {exc}") from exc
        return RoundSettings(
            forest_name=o["forest_name"],
            labelling_scheme_version=o["labelling_scheme_version"],
            train=train,
            labeller=labeller,
            prm_version=o["prm_version"],
            state_dir=Path(o["state_dir"]).expanduser(),
            reference_prm_version=o["reference_prm_version"],
            train_on=o["train_on"],
            prm_label=LabelWorkerSettings(
                prm_version="-",
                device=o["device"],
                dtype=o["dtype"],
                batch_size=o["label_batch_size"],
                worker=prm_worker_name(),
            ),
            num_beam_values=beams,
            aggregation=o["aggregation"],
            reference=reference,
            threshold=o["threshold"],
            save_search_report=o["save"],
        )
