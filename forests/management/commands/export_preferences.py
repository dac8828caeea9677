"""python manage.py export_preferences --forest_name F --output PATH [--format jsonl|parquet|hf_disk]
[--kind pairs|stepwise|math_shepherd|openrlhf|processbench|tree] [--min_margin X] [--output_json SUMMARY.json] [...]"""

from __future__ import annotations

import dataclasses
import time

from django.core.management.base import BaseCommand, CommandError

from forests.exports import export_options, preferences_export
from forests.metrics.export.names import DEFAULT_PLACEHOLDER, KINDS
from forests.metrics.export.options import PLACEHOLDER_MAX_CHARS
from forests.metrics.preferences import PATH_MODES, PATHS_DISTINCT
from forests.models import Node
from forests.selectors import forest_get
from prmsite.core.cli import add_output_json_flag, summary_write
from prmsite.core.dataset_files import FORMATS
from prmsite.core.errors import ApplicationError
from prmsite.core.progress import Bars


class Command(BaseCommand):
    help = (
        "Export a forest's synthetic preferences or step-level data with `datasets` (loads back with load_dataset / "
        "load_from_disk): pairs for TRL's DPO and reward trainers, stepwise for PRM trainers, Math-Shepherd, "
        "OpenRLHF, ProcessBench, or whole trees. Deterministic order, no duplicates, written to a temporary path "
        "and renamed into place."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True, help="Forest to export.")
        parser.add_argument("--output", required=True, help="File to write (a folder for --format hf_disk).")
        parser.add_argument("--format", default="jsonl", choices=FORMATS, help="Default jsonl.")
        parser.add_argument("--kind", default="pairs", choices=KINDS, help="Default pairs.")
        parser.add_argument(
            "--min_margin",
            type=float,
            default=0.0,
            help="pairs: keep a pair only when chosen's value exceeds rejected's by at least this (default 0).",
        )
        parser.add_argument(
            "--max_pairs_per_node",
            type=int,
            default=None,
            help="pairs: at most this many pairs per node, largest margins first (default: all).",
        )
        parser.add_argument(
            "--neutral_pairs",
            action="store_true",
            help="pairs: also pair siblings of equal value, marked preference 2 (neutral).",
        )
        parser.add_argument(
            "--paths",
            default=PATHS_DISTINCT,
            choices=PATH_MODES,
            help="Path-based kinds: one record per distinct path (distinct, default) or one per rollout (rollouts).",
        )
        parser.add_argument(
            "--threshold",
            type=float,
            default=0.0,
            help="A step is good (True, '+', not an error) when its value is above this (default 0: some correct "
            "rollout passes through it).",
        )
        parser.add_argument(
            "--soft_labels", action="store_true", help="stepwise: labels are the values (floats) instead of bools."
        )
        parser.add_argument(
            "--placeholder_token",
            default=DEFAULT_PLACEHOLDER,
            help=f"openrlhf: the token after each step (default {DEFAULT_PLACEHOLDER}; at most "
            f"{PLACEHOLDER_MAX_CHARS} characters, no control characters).",
        )
        parser.add_argument(
            "--value_function_option",
            default="labelled",
            help="Values to export: labelled (default), prm:VERSION or labels:SCHEME.",
        )
        add_output_json_flag(parser)

    def handle(
        self,
        *args,
        forest_name: str,
        output: str,
        format: str,
        kind: str,
        min_margin: float,
        max_pairs_per_node: int | None,
        neutral_pairs: bool,
        paths: str,
        threshold: float,
        soft_labels: bool,
        placeholder_token: str,
        value_function_option: str,
        output_json: str | None = None,
        **options,
    ) -> None:
        started = time.monotonic()
        bars = Bars(self.stderr)
        try:
            # Every option is checked here, by the validator the admin's download uses (ExportOptions).
            export = export_options(
                kind=kind,
                paths=paths,
                min_margin=min_margin,
                max_pairs_per_node=max_pairs_per_node,
                neutral_pairs=neutral_pairs,
                threshold=threshold,
                soft_labels=soft_labels,
                placeholder_token=placeholder_token,
            )
            forest = forest_get(name=forest_name)
            summary = preferences_export(
                forest=forest,
                output=output,
                fmt=format,
                options=export,
                value_function_option=value_function_option,
                on_rows=bars.callback("reading nodes", "node", Node.objects.filter(forest=forest).count()),
                on_progress=bars.callback("exporting", "tree"),
            )
        except ApplicationError as exc:
            raise CommandError(f"export_preferences: {exc.message}") from exc
        finally:
            bars.close()
        summary_write(dataclasses.asdict(summary), output_json=output_json)
        self.stderr.write(self.style.SUCCESS(f"{summary.line()} in {time.monotonic() - started:.1f} s"))
