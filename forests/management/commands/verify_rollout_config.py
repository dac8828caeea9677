"""python manage.py verify_rollout_config --config_name NAME --dataset_split SPLIT"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from prmsite.core.configs.loader import config_load
from prmsite.core.configs.verify import config_verify
from prmsite.core.errors import ConfigError
from prmsite.core.grading import Verdict


class Command(BaseCommand):
    help = (
        "Run an experiment config on the first item(s) of a split: print the serialized item, the root prompt and the "
        "reference answer (the label, for the label kind), what the delimiter and prediction patterns make of a sample "
        "response, the answer extracted from it and the grader's verdict against the first item's reference answer."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--config_name", required=True, help="Config module name, or a path to a template JSON.")
        parser.add_argument("--dataset_split", required=True, help="Dataset split to read, e.g. test.")
        parser.add_argument("--num_examples", type=int, default=1, help="How many items to show (default 1).")
        parser.add_argument("--sample_response", default=None, help="Response to run the patterns on.")
        parser.add_argument("--dataset_name", default=None, help="Read the items from here (hub name or path).")

    def handle(
        self,
        *args,
        config_name: str,
        dataset_split: str,
        num_examples: int,
        sample_response: str | None,
        dataset_name: str | None,
        **options,
    ) -> None:
        if num_examples < 1:
            raise CommandError("--num_examples must be at least 1")
        try:
            config = config_load(config_name, dataset_name=dataset_name)
            report = config_verify(
                config=config, dataset_split=dataset_split, num_examples=num_examples, sample_response=sample_response
            )
        except ConfigError as exc:
            raise CommandError(f"{config_name}: {exc.message}") from exc
        write = self.stdout.write
        write(self.style.MIGRATE_HEADING(f"Config {report.config_name} ({config.source_path})"))
        write(json.dumps(report.rollout_config, indent=2, ensure_ascii=False))
        for example in report.examples:
            write(self.style.MIGRATE_HEADING(f"\nItem #{example.index}: serialized item"))
            write(json.dumps(example.serialized_item, indent=2, ensure_ascii=False))
            write(self.style.MIGRATE_HEADING(f"Item #{example.index}: root prompt"))
            write(example.root_prompt)
            if example.label is not None:
                write(self.style.MIGRATE_HEADING(f"Item #{example.index}: label"))
                write(repr(example.label))
            else:
                write(
                    self.style.MIGRATE_HEADING(f"Item #{example.index}: reference answer ({report.answer_spec.kind})")
                )
                write(example.reference_answer)
        write(self.style.MIGRATE_HEADING("\nSample response"))
        write(report.sample_response)
        write(self.style.MIGRATE_HEADING(f"Steps ({len(report.steps)}, split by reasoning_delimiter_pattern)"))
        for number, step in enumerate(report.steps, start=1):
            write(f"[{number}] {step!r}")
        label_kind = report.answer_spec.kind == "label"
        if label_kind:
            write(self.style.MIGRATE_HEADING("Prediction (prediction_pattern)"))
            write(repr(report.prediction))
        source = "prediction_pattern" if config.prediction_pattern else "the last \\boxed{}"
        if report.answer_spec.kind == "math" and config.prediction_pattern:
            source += ", else the last \\boxed{}"
        write(self.style.MIGRATE_HEADING(f"Answer ({source})"))
        write(repr(report.answer))
        reference = report.examples[0].reference_answer
        write(
            self.style.MIGRATE_HEADING(f"Verdict ({report.answer_spec.kind}) against item #0's reference {reference!r}")
        )
        write(verdict_text(report.verdict))
        if not report.lossless():  # split_steps promises this; say so loudly if it ever breaks
            raise CommandError("the steps do not join back into the sample response")
        if label_kind and report.prediction is None:
            self.stderr.write(self.style.WARNING("prediction_pattern finds no integer label in the sample response"))
        elif report.answer is None:
            self.stderr.write(self.style.WARNING(f"no answer found in the sample response ({source})"))
        found = f"prediction {report.prediction!r}" if label_kind else f"answer {report.answer!r}"
        self.stdout.write(
            self.style.SUCCESS(
                f"OK: {len(report.examples)} item(s) of split {dataset_split!r}, "
                f"{len(report.steps)} steps, {found}, {verdict_text(report.verdict)}"
            )
        )


def verdict_text(verdict: Verdict) -> str:
    """``correct``, ``not correct``, or ``not correct (the reason the grader could not decide)``."""
    if verdict.correct:
        return "correct"
    return f"not correct ({verdict.reason})" if verdict.reason else "not correct"
