"""python manage.py export_rollouts --forest_name F --output rollouts.jsonl"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from forests.rollout_files import forest_rollouts_export, rollouts_file_write
from forests.selectors import forest_get
from prmsite.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Write a forest's rollouts as JSON lines in the POST /rollout format (with idempotency keys), for "
        "import_rollouts on this or another server."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--forest_name", required=True)
        parser.add_argument("--output", required=True, help="The .jsonl file to write (replaced whole).")

    def handle(self, *args, forest_name: str, output: str, **options) -> None:
        try:
            forest = forest_get(name=forest_name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        count = rollouts_file_write(forest_rollouts_export(forest=forest), Path(output))
        self.stderr.write(self.style.SUCCESS(f"Wrote {count} rollouts of forest {forest.name} to {output}"))
