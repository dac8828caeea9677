"""python manage.py export_consensus --prm_version human-v1 --output consensus.jsonl [--mc] [--versions judge-v1,...]
[--rule steps|first_error] [--min_labels K] [--format jsonl|parquet|hf_disk]
[--gold_min_accuracy X [--gold_min_answers N]] [--adjudicated_first]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prmsite.core.errors import NotFoundError
from rollouts.labelling.consensus import RULE_STEPS, RULES
from rollouts.labelling.exports import ConsensusOptions, consensus_export
from rollouts.labelling.gold import GOLD_MIN_ANSWERS_DEFAULT
from rollouts.labelling.selectors import scheme_get
from rollouts.labelling.stepwise import FORMATS, ExportError


class Command(BaseCommand):
    help = (
        "Write the consensus set of a labelling scheme (the steps where its labels agree with the chosen sources) "
        "as a stepwise dataset: prompt, completions, labels and metadata columns."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prm_version", required=True, help="The labelling scheme's version.")
        parser.add_argument("--output", required=True, help="File to write (a folder for --format hf_disk).")
        parser.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default), parquet, hf_disk.")
        parser.add_argument("--mc", action="store_true", help="The forest's Monte-Carlo values must agree too.")
        parser.add_argument(
            "--versions", default="", help="Comma-separated versions whose labels must agree too (an AI judge's …)."
        )
        parser.add_argument("--rule", choices=RULES, default=RULE_STEPS, help="steps (default) or first_error.")
        parser.add_argument(
            "--min_labels", type=int, default=None, help="Labels of the scheme a rollout needs (default: its K)."
        )
        parser.add_argument(
            "--gold_min_accuracy",
            type=float,
            default=None,
            help="Leave out the labels of labellers whose gold step accuracy (0 to 1) is below this.",
        )
        parser.add_argument(
            "--gold_min_answers",
            type=int,
            default=GOLD_MIN_ANSWERS_DEFAULT,
            help=f"... over at least this many gold answers (default {GOLD_MIN_ANSWERS_DEFAULT}; fewer: kept).",
        )
        parser.add_argument(
            "--adjudicated_first",
            action="store_true",
            help="A rollout staff adjudicated exports the adjudicated label in place of its labels' consensus.",
        )

    def handle(self, *args, **options) -> None:
        try:
            scheme = scheme_get(prm_version=options["prm_version"])
        except NotFoundError as exc:
            raise CommandError(exc.message) from exc
        try:
            consensus = ConsensusOptions(
                mc=options["mc"],
                versions=tuple(v.strip() for v in options["versions"].split(",") if v.strip()),
                rule=options["rule"],
                min_labels=options["min_labels"],
                gold_min_accuracy=options["gold_min_accuracy"],
                gold_min_answers=options["gold_min_answers"],
                adjudicated_first=options["adjudicated_first"],
            )
            tally = consensus_export(scheme=scheme, options=consensus, output=options["output"], fmt=options["format"])
        except (ExportError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if tally.labellers_left_out:
            self.stdout.write(
                f"left out below the gold accuracy: {', '.join(tally.labellers_left_out)} ({tally.labels_left_out} "
                "labels)"
            )
        for _key, text, n in tally.skipped_described():
            self.stdout.write(f"left out: {n} ({text})")
        if options["adjudicated_first"]:
            self.stdout.write(f"from an adjudicated label: {tally.adjudicated}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{tally.records} records ({tally.steps} steps) of {tally.rollouts} labelled rollouts written to "
                f"{options['output']}"
            )
        )
