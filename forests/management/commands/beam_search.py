"""python manage.py beam_search --forest_name F --num_beam_values 1,5 --value_function_option labelled
[--aggregation last] [--output_json PATH] [--plot PATH] [--save]"""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from forests.metrics.beam import Aggregation
from forests.metrics.plot import search_plot
from forests.metrics.search import MAX_BEAM_VALUES, MAX_NUM_BEAMS, format_report, parse_num_beam_values
from forests.models import Node
from forests.search_reports import forest_search_report
from forests.selectors import forest_get
from forests.services import forest_search_report_save
from prmsite.core.dataset_files import ExportError, write_atomic
from prmsite.core.errors import ApplicationError
from prmsite.core.progress import Bars


class Command(BaseCommand):
    help = (
        "Accuracy of beam search over a grown forest for each number of beams N, beside the baselines on the same "
        "trees (random rollout, majority vote, best-of-N, weighted best-of-N, oracle), with 95% intervals."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True, help="Forest to search.")
        parser.add_argument(
            "--num_beam_values",
            default="1,5",
            help=f"Numbers of beams, comma-separated (default 1,5): at most {MAX_BEAM_VALUES} values, each from 1 to "
            f"{MAX_NUM_BEAMS}.",
        )
        parser.add_argument(
            "--value_function_option",
            default="labelled",
            help="labelled (exact values from the ground truth), prm:VERSION (a PRM's step scores) or labels:SCHEME "
            "(a labelling scheme's step labels). Default labelled.",
        )
        parser.add_argument(
            "--aggregation",
            default=Aggregation.LAST.value,
            choices=[a.value for a in Aggregation],
            help="How a beam's score aggregates the values of its nodes below the root (default last).",
        )
        parser.add_argument("--output_json", default=None, help="Also write the figures to this JSON file.")
        parser.add_argument(
            "--plot",
            default=None,
            help="Also draw accuracy against N to this file (SVG when it ends in .svg, else PNG).",
        )
        parser.add_argument(
            "--save",
            action="store_true",
            help="Also keep the report on the forest (shown on its page and compared with its other reports).",
        )

    def handle(
        self,
        *args,
        forest_name: str,
        num_beam_values: str,
        value_function_option: str,
        aggregation: str,
        output_json: str | None,
        plot: str | None,
        save: bool,
        **options,
    ) -> None:
        try:
            beams = parse_num_beam_values(num_beam_values)
        except ValueError as exc:
            raise CommandError(f"beam_search: {exc}") from exc
        started = time.monotonic()
        bars = Bars(self.stderr)
        try:
            forest = forest_get(name=forest_name)
            reading = bars.callback("reading nodes", "node", Node.objects.filter(forest=forest).count())
            report = forest_search_report(
                forest=forest,
                num_beam_values=beams,
                value_function_option=value_function_option,
                aggregation=aggregation,
                on_rows=reading,
            )
            bars.close()
            figures = report.as_dict()
            if output_json:
                write_atomic(output_json, (json.dumps(figures, indent=2) + "\n").encode())
            if plot:
                write_atomic(plot, search_plot([figures], fmt="svg" if plot.lower().endswith(".svg") else "png"))
            if save:
                kept = forest_search_report_save(forest=forest, report=figures)
        except (ApplicationError, ExportError) as exc:
            raise CommandError(f"beam_search: {getattr(exc, 'message', exc)}") from exc
        finally:
            bars.close()
        self.stdout.write(format_report(report))
        best = max(report.results, key=lambda r: -1 if r.accuracy is None else r.accuracy)
        summary = (
            f"beam_search: {report.num_trees} trees of {forest.name} in {time.monotonic() - started:.1f} s; "
            f"best N={best.num_beams}"
            + (f" at {best.accuracy:.3f}" if best.accuracy is not None else "")
            + "".join(f"; wrote {path}" for path in (output_json, plot) if path)
            + (f"; kept as search report #{kept.pk} of the forest" if save else "")
        )
        self.stderr.write(self.style.SUCCESS(summary))
