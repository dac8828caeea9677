"""python manage.py import_rollouts --forest_name F --input rollouts.jsonl"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from forests.management.progress import Bars
from forests.rollout_files import forest_rollouts_import, rollouts_file_read
from prmsite.errors import ApplicationError
from prmsite.parsers import text_problem
from rollouts.serializers import RolloutCreateSerializer


def rollout_fields_validate(record: dict[str, Any]) -> dict[str, Any]:
    """The fields to store of one rollout of a file, checked by the rules of ``POST /rollout`` (the file names no
    forest: the one it is imported into is used, and its tree is found by the example)."""
    record = {k: v for k, v in record.items() if k not in {"forest_name", "root_id", "expansion_id"}}
    if problem := text_problem(record):
        raise ApplicationError(problem)
    serializer = RolloutCreateSerializer(data=record)
    if not serializer.is_valid():
        field, messages = next(iter(serializer.errors.items()))
        raise ApplicationError(f"{field}: {messages[0]}")
    return serializer.validated_data


class Command(BaseCommand):
    help = (
        "Store the rollouts of a JSON-lines file (as export_rollouts writes it) into a forest, all or nothing; "
        "rollouts already stored (same idempotency key) are skipped, so importing twice is harmless."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True)
        parser.add_argument("--input", required=True, help="A .jsonl file of rollouts.")

    def handle(self, *args, forest_name: str, input: str, **options) -> None:
        path = Path(input)
        if not path.is_file():
            raise CommandError(f"{input}: no such file")
        bars = Bars(self.stderr)
        try:
            records = rollouts_file_read(path, validate=rollout_fields_validate)
            result = forest_rollouts_import(
                forest_name=forest_name,
                records=records,
                on_progress=bars.callback("importing", "rollout", total=len(records)),
            )
        except ApplicationError as exc:
            raise CommandError(f"{input}: {exc.message}") from exc
        finally:
            bars.close()
        self.stderr.write(
            self.style.SUCCESS(
                f"Imported {result.created} rollouts into {forest_name} ({result.already_there} were there already)"
            )
        )
