"""python manage.py evaluate_prm --prm_version V --reference labelled|labels:SCHEME [--forest_name F]
[--threshold 0.5 | --tune_threshold_on SUBSET] [--output_json PATH]"""

from __future__ import annotations

import json
import math
import time

from django.core.management.base import BaseCommand, CommandError

from forests.prm_evaluation import prm_evaluation
from forests.selectors import forest_get
from prmsite.core.dataset_files import ExportError, write_atomic
from prmsite.core.domain import PRM_THRESHOLD
from prmsite.core.errors import ApplicationError
from prmsite.core.progress import Bars
from rollouts.models import LabellingScheme, ProcessRewardLabel

NO_SUBSET = "(none)"  # rollouts whose tree's item names no subset


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = (
        "ProcessBench's measure of a PRM version: for each rollout it labelled, is the first step it scores below the "
        "threshold the reference's first wrong step? Accuracy on erroneous and on correct rollouts, their harmonic "
        "mean (F1), and step-level agreement; the same per subset (the subset or source field of the tree's item) with "
        "the mean of the subsets' F1, ProcessBench's headline."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prm_version", required=True, help="PRM version whose labels are evaluated.")
        parser.add_argument(
            "--reference",
            required=True,
            help="labelled (first step whose exact value is 0) or labels:SCHEME (a labelling scheme's step labels).",
        )
        parser.add_argument("--forest_name", default=None, help="Only rollouts of this forest (default: all).")
        threshold = parser.add_mutually_exclusive_group()
        threshold.add_argument(
            "--threshold",
            type=float,
            default=None,
            help=f"A step scored below this is judged wrong (default {PRM_THRESHOLD}).",
        )
        threshold.add_argument(
            "--tune_threshold_on",
            default=None,
            metavar="SUBSET",
            help="Instead of --threshold: the score value that maximises this subset's F1, applied to every subset "
            "(ProcessBench's protocol for PRMs that output scores).",
        )
        parser.add_argument("--output_json", default=None, help="Also write the figures to this JSON file.")

    def handle(
        self,
        *args,
        prm_version: str,
        reference: str,
        forest_name: str | None,
        threshold: float | None,
        tune_threshold_on: str | None,
        output_json: str | None,
        **options,
    ) -> None:
        if threshold is None:
            threshold = PRM_THRESHOLD
        if not math.isfinite(threshold):
            raise CommandError("evaluate_prm: --threshold must be a finite number")
        started = time.monotonic()
        bars = Bars(self.stderr)
        try:
            forest = forest_get(name=forest_name) if forest_name else None
            labels = ProcessRewardLabel.objects.filter(prm_version=prm_version)
            if forest is not None:
                labels = labels.filter(rollout__forest=forest)
            # A labelling scheme's version holds step label codes, read as their values (as the PRM comparison page
            # reads a labels:S source); a PRM's holds scores.
            codes = LabellingScheme.objects.filter(prm_version=prm_version).exists()
            evaluation = prm_evaluation(
                codes=codes,
                prm_version=prm_version,
                reference=reference,
                forest=forest,
                threshold=threshold,
                tune_threshold_on=tune_threshold_on,
                on_labels=bars.callback("reading labels", "label", labels.count()),
            )
            bars.close()
            figures = evaluation.as_dict()
            if figures["num_rollouts"] == 0:
                where = f" in forest {forest_name}" if forest_name else ""
                raise ApplicationError(f"no rollout{where} has both a label of {prm_version!r} and a reference")
            if output_json:
                write_atomic(output_json, (json.dumps(figures, indent=2) + "\n").encode())
        except (ApplicationError, ExportError) as exc:
            raise CommandError(f"evaluate_prm: {getattr(exc, 'message', exc)}") from exc
        finally:
            bars.close()
        rows = [
            ("rollouts evaluated", str(figures["num_rollouts"])),
            ("erroneous (reference has a first error)", str(figures["num_erroneous"])),
            ("correct (reference: every step right)", str(figures["num_correct"])),
            ("accuracy on erroneous rollouts", _figure(figures["error_accuracy"])),
            ("accuracy on correct rollouts", _figure(figures["correct_accuracy"])),
            ("F1 (harmonic mean)", _figure(figures["f1"])),
            (f"step-level agreement ({figures['num_steps']} steps)", _figure(figures["step_agreement"])),
        ]
        tuned = figures["threshold_tuned_on"]
        how = f" (tuned on subset {tuned}, best of {figures['tuned_candidates']} score values)" if tuned else ""
        self.stdout.write(f"PRM {prm_version} against {evaluation.reference}, threshold {figures['threshold']}{how}")
        for name, value in rows:
            self.stdout.write(f"  {name:<44} {value:>8}")
        named = any(row["subset"] is not None for row in figures["subsets"])
        if named:
            self._subset_table(figures)
        skipped = ", ".join(f"{count} {reason}" for reason, count in figures["skipped"].items())
        summary = (
            f"evaluate_prm: {figures['num_rollouts']} rollouts in {time.monotonic() - started:.1f} s, "
            f"F1 {_figure(figures['f1'])}"
            + (f", mean subset F1 {_figure(figures['mean_subset_f1'])}" if named else "")
            + (f"; threshold {figures['threshold']} tuned on {tuned}" if tuned else "")
            + (f"; skipped: {skipped}" if skipped else "")
            + (f"; wrote {output_json}" if output_json else "")
        )
        self.stderr.write(self.style.SUCCESS(summary))

    def _subset_table(self, figures: dict) -> None:
        """ProcessBench's table: each subset's accuracies and F1, then the mean of the subsets' F1."""
        width = max(len("subset"), *(len(row["subset"] or NO_SUBSET) for row in figures["subsets"]))
        columns = ("rollouts", "erroneous", "correct", "error acc", "correct acc", "F1")
        self.stdout.write(f"  {'subset':<{width}} " + " ".join(f"{c:>11}" for c in columns))
        for row in figures["subsets"]:
            cells = (
                str(row["num_rollouts"]),
                str(row["num_erroneous"]),
                str(row["num_correct"]),
                _figure(row["error_accuracy"]),
                _figure(row["correct_accuracy"]),
                _figure(row["f1"]),
            )
            self.stdout.write(f"  {row['subset'] or NO_SUBSET:<{width}} " + " ".join(f"{c:>11}" for c in cells))
        mean = _figure(figures["mean_subset_f1"])  # under the F1 column
        self.stdout.write(f"  {'F1, mean over subsets (ProcessBench average)':<{width + 5 * 12}} {mean:>11}")
