"""python manage.py import_gold --labelling_scheme_version human-v1 --input gold.jsonl

Each line: ``{"rollout_id": 12, "ratings": [1, 1, -1]}`` (-1 / 0 / +1, null for an unrated step) or
``{"rollout_id": 12, "prm_output": [1, 1, 0]}`` (a label's codes: 0 wrong, 1 right, 2 neutral). All or nothing: the
first bad line is named by its number and nothing is stored. The last line printed is a JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prmsite.core.errors import NotFoundError
from rollouts.labelling.gold import GoldError, gold_import
from rollouts.labelling.selectors import scheme_get


class Command(BaseCommand):
    help = (
        "Mark rollouts of a labelling scheme as gold items (known answers mixed into labellers' queues) from a "
        "JSON-lines file of expected ratings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--labelling_scheme_version", required=True, help="The labelling scheme's prm_version.")
        parser.add_argument("--input", required=True, help="JSON-lines file: rollout_id with ratings or prm_output.")

    def handle(self, *args, **options) -> None:
        try:
            scheme = scheme_get(prm_version=options["labelling_scheme_version"])
        except NotFoundError as exc:
            raise CommandError(exc.message) from exc
        path = Path(options["input"])
        try:
            with path.open(encoding="utf-8") as handle:
                result = gold_import(scheme=scheme, lines=handle)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path} is not UTF-8 text: nothing was imported.") from exc
        except GoldError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(json.dumps(result.summary()))
