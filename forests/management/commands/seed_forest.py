"""python manage.py seed_forest --dataset_config_name NAME --dataset_split SPLIT [--forest_name_suffix S] [--limit N]"""

from __future__ import annotations

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from forests.models import Forest
from forests.services import forest_name_make, forest_seed
from prmsite.core.configs.loader import config_load
from prmsite.core.errors import ApplicationError


class Command(BaseCommand):
    help = (
        "Create a forest with one root per item of a dataset split, as an experiment config reads it. "
        "All or nothing: on a failure no forest is left behind. Prints a JSON object with the forest_name last."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dataset_config_name", required=True, help="Config module name, or a path to a template JSON."
        )
        parser.add_argument("--dataset_split", required=True, help="Dataset split to seed from, e.g. test.")
        parser.add_argument(
            "--forest_name_suffix", default="", help="Last part of the forest name (default: a UTC timestamp)."
        )
        parser.add_argument("--limit", type=int, default=None, help="Seed only the first N items.")
        parser.add_argument("--dataset_name", default=None, help="Read the items from here (hub name or path).")
        parser.add_argument(
            "--exist_ok",
            action="store_true",
            help="When the forest already exists, print it and succeed instead of failing (needs a suffix).",
        )

    def handle(
        self,
        *args,
        dataset_config_name: str,
        dataset_split: str,
        forest_name_suffix: str,
        limit: int | None,
        dataset_name: str | None,
        exist_ok: bool,
        **options,
    ) -> None:
        if exist_ok and not forest_name_suffix:
            raise CommandError("--exist_ok needs --forest_name_suffix (a timestamped name never exists yet)")
        try:
            config = config_load(dataset_config_name, dataset_name=dataset_name)
            if exist_ok:
                name = forest_name_make(
                    config_name=config.config_name, dataset_split=dataset_split, suffix=forest_name_suffix
                )
                forest = Forest.objects.filter(name=name).first()
                if forest is not None:
                    self.stderr.write(f"Forest {name} exists already; nothing to do.")
                    self.stdout.write(json.dumps({"forest_name": forest.name, "created": False}))
                    return
            bar: tqdm | None = None

            def progress(done: int, total: int | None) -> None:
                nonlocal bar
                if bar is None:
                    # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
                    stream = getattr(self.stderr, "_out", sys.stderr)
                    bar = tqdm(total=total, unit="item", desc="seeding", file=stream, disable=None)
                bar.update(done - bar.n)

            started = time.monotonic()
            try:
                result = forest_seed(
                    config=config,
                    dataset_split=dataset_split,
                    forest_name_suffix=forest_name_suffix,
                    limit=limit,
                    on_progress=progress,
                )
            finally:
                if bar is not None:
                    bar.close()
        except ApplicationError as exc:
            raise CommandError(f"{dataset_config_name}: {exc.message}") from exc
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"Warning: {warning}"))
        self.stderr.write(
            self.style.SUCCESS(
                f"Seeded forest {result.forest.name}: {result.trees} trees in {time.monotonic() - started:.1f} s"
            )
        )
        self.stdout.write(json.dumps({**result.summary(), "created": True}))
