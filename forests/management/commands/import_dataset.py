"""python manage.py import_dataset --format prm800k|processbench|math_shepherd|stepwise --input PATH
[--forest_name_suffix S] [--labelling_scheme_version V] [--answer_kind KIND] [--chosen_only] [--output_json F]"""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from forests.dataset_import import DEFAULT_ANSWER_KIND, dataset_import
from prmsite.core.cli import add_output_json_flag, summary_write
from prmsite.core.errors import ApplicationError
from prmsite.core.grading import ANSWER_KINDS
from prmsite.core.progress import Bars
from prmsite.core.step_datasets import FORMATS


class Command(BaseCommand):
    help = (
        "Import a step-labelled dataset (PRM800K, ProcessBench, Math-Shepherd, or a stepwise export) from a "
        "JSON-lines, JSON or Parquet file: a forest with one tree per problem, and its step labels as the labels "
        "of a labelling scheme. Every record is checked before anything is written (a bad one is named by its "
        "line), then everything is written in one transaction; importing the same file again adds nothing. The "
        "last line of output is a JSON object with forest_name, labelling_scheme_version, rollouts and labels."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--format", required=True, choices=FORMATS, help="The dataset's format.")
        parser.add_argument("--input", required=True, help="A .jsonl, .json or .parquet file.")
        parser.add_argument(
            "--forest_name_suffix",
            default="",
            help="Last part of the forest name <format>-<file stem>-<suffix> (default: the first 12 hex digits of "
            "the file's sha256, so importing the same file again finds the same forest).",
        )
        parser.add_argument(
            "--labelling_scheme_version",
            default=None,
            help="prm_version of the labelling scheme the step labels go to (default <format>-<file stem>; created "
            "when missing).",
        )
        parser.add_argument(
            "--answer_kind",
            default=DEFAULT_ANSWER_KIND,
            choices=ANSWER_KINDS,
            help=f"How the forest's answers are graded (default {DEFAULT_ANSWER_KIND}).",
        )
        parser.add_argument(
            "--chosen_only",
            action="store_true",
            help="prm800k: leave out the completions the labeller did not choose (default: each becomes a branch).",
        )
        add_output_json_flag(parser)

    def handle(
        self,
        *args,
        format: str,
        input: str,
        forest_name_suffix: str,
        labelling_scheme_version: str | None,
        answer_kind: str,
        chosen_only: bool,
        output_json: str | None = None,
        **options,
    ) -> None:
        path = Path(input)
        if not path.is_file():
            raise CommandError(f"{input}: no such file")
        started = time.monotonic()
        bars = Bars(self.stderr)
        try:
            result = dataset_import(
                path=path,
                fmt=format,
                forest_name_suffix=forest_name_suffix,
                labelling_scheme_version=labelling_scheme_version,
                answer_kind=answer_kind,
                alternatives=not chosen_only,
                on_check=bars.callback("checking", "B", total=path.stat().st_size),
                on_progress=bars.callback("importing", "path"),
            )
        except ApplicationError as exc:
            raise CommandError(f"{input}: {exc.message}") from exc
        except OSError as exc:
            raise CommandError(f"{input}: cannot be read ({exc.strerror or exc})") from exc
        finally:
            bars.close()
        self.stderr.write(
            self.style.SUCCESS(
                f"Imported {result.paths} paths of {result.problems} problems into forest {result.forest_name} "
                f"({result.rollouts} rollouts and {result.labels} labels of {result.labelling_scheme_version} new) "
                f"in {time.monotonic() - started:.1f} s"
            )
        )
        summary_write(result.summary(), output_json=output_json, stdout=self.stdout)
