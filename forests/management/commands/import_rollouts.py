"""python manage.py import_rollouts --forest_name F --input rollouts.jsonl"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from forests.intake_serializers import RolloutCreateSerializer
from forests.models import Forest
from forests.rollout_files import IMPORT_BATCH_SIZE, forest_rollouts_import, rollouts_file_check, rollouts_file_fields
from forests.selectors import FOREST_NOT_FOUND
from prmsite.core.errors import ApplicationError
from prmsite.core.progress import Bars
from prmsite.parsers import text_problem


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
        "Store the rollouts of a JSON-lines file (as export_rollouts writes it) into a forest. Every line is checked "
        "first (a bad one stops the import with its line number, before anything is stored), then the rollouts are "
        "stored in short transactions; rollouts already stored (same idempotency key) are skipped, so importing "
        "twice, or again after an interrupted import, stores each rollout once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True)
        parser.add_argument("--input", required=True, help="A .jsonl file of rollouts.")
        parser.add_argument(
            "--batch_size",
            type=int,
            default=IMPORT_BATCH_SIZE,
            help=f"Rollouts stored per transaction (default {IMPORT_BATCH_SIZE}).",
        )

    def handle(self, *args, forest_name: str, input: str, batch_size: int, **options) -> None:
        path = Path(input)
        if not path.is_file():
            raise CommandError(f"{input}: no such file")
        if not Forest.objects.filter(name=forest_name).exists():
            raise CommandError(FOREST_NOT_FOUND.format(name=forest_name))
        # A line may be as large as a body POST /rollout accepts: a rollout the API stored is exported within it.
        reading = {
            "forest_name": forest_name,
            "validate": rollout_fields_validate,
            "max_line_bytes": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        }
        bars = Bars(self.stderr)
        try:
            total = rollouts_file_check(
                path, **reading, on_bytes=bars.callback("checking", "B", total=path.stat().st_size)
            )
            result = forest_rollouts_import(
                forest_name=forest_name,
                records=rollouts_file_fields(path, **reading),
                batch_size=batch_size,
                on_progress=bars.callback("importing", "rollout", total=total),
            )
        except ApplicationError as exc:
            raise CommandError(f"{input}: {exc.message}") from exc
        except OSError as exc:
            raise CommandError(f"{input}: cannot be read ({exc.strerror or exc})") from exc
        finally:
            bars.close()
        self.stderr.write(
            self.style.SUCCESS(
                f"Imported {result.created} rollouts into {forest_name} ({result.already_there} were there already), "
                f"in {result.batches} transactions of up to {batch_size}"
            )
        )
