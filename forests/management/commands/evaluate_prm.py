"""python manage.py evaluate_prm --prm_version V --reference labelled|labels:SCHEME [--forest_name F]
[--threshold 0.5] [--output_json PATH]"""

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
from rollouts.models import ProcessRewardLabel


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = (
        "ProcessBench's measure of a PRM version: for each rollout it labelled, is the first step it scores below the "
        "threshold the reference's first wrong step? Accuracy on erroneous and on correct rollouts, their harmonic "
        "mean (F1), and step-level agreement."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prm_version", required=True, help="PRM version whose labels are evaluated.")
        parser.add_argument(
            "--reference",
            required=True,
            help="labelled (first step whose exact value is 0) or labels:SCHEME (a labelling scheme's step labels).",
        )
        parser.add_argument("--forest_name", default=None, help="Only rollouts of this forest (default: all).")
        parser.add_argument(
            "--threshold",
            type=float,
            default=PRM_THRESHOLD,
            help=f"A step scored below this is judged wrong (default {PRM_THRESHOLD}).",
        )
        parser.add_argument("--output_json", default=None, help="Also write the figures to this JSON file.")

    def handle(
        self,
        *args,
        prm_version: str,
        reference: str,
        forest_name: str | None,
        threshold: float,
        output_json: str | None,
        **options,
    ) -> None:
        if not math.isfinite(threshold):
            raise CommandError("evaluate_prm: --threshold must be a finite number")
        started = time.monotonic()
        bars = Bars(self.stderr)
        try:
            forest = forest_get(name=forest_name) if forest_name else None
            labels = ProcessRewardLabel.objects.filter(prm_version=prm_version)
            if forest is not None:
                labels = labels.filter(rollout__forest=forest)
            evaluation = prm_evaluation(
                prm_version=prm_version,
                reference=reference,
                forest=forest,
                threshold=threshold,
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
        self.stdout.write(f"PRM {prm_version} against {evaluation.reference}, threshold {threshold}")
        for name, value in rows:
            self.stdout.write(f"  {name:<44} {value:>8}")
        skipped = ", ".join(f"{count} {reason}" for reason, count in figures["skipped"].items())
        summary = (
            f"evaluate_prm: {figures['num_rollouts']} rollouts in {time.monotonic() - started:.1f} s, "
            f"F1 {_figure(figures['f1'])}"
            + (f"; skipped: {skipped}" if skipped else "")
            + (f"; wrote {output_json}" if output_json else "")
        )
        self.stderr.write(self.style.SUCCESS(summary))
