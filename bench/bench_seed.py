"""Seeding 100,000 items: forest_seed (reading a jsonl with datasets, prompts, labels, provenance) against the floor,
a raw ``bulk_create`` of the same root rows into the same SQLite database.

Runs on a scratch SQLite file in a temporary folder (never the project's database), offline (HF_HUB_OFFLINE=1).
``BENCH_SEED_ITEMS`` changes the number of items. Prints Markdown rows ``| benchmark | figure | floor | ratio |``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ITEMS = int(os.environ.get("BENCH_SEED_ITEMS", "100000"))
LABELS = ["true", "mostly-true", "half-true", "barely-true", "false", "pants-fire"]


def setup(tmp: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    os.environ["HF_HOME"] = str(tmp / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    os.environ["DJANGO_LOG_LEVEL"] = "WARNING"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def write_dataset(path: Path) -> None:
    with path.open("w") as f:
        for i in range(ITEMS):
            row = {
                "id": f"b{i}",
                "statement": f"Statement number {i}: the council approved {i % 97} new parks in district {i % 13}.",
                "label": LABELS[i % 6],
                "speaker": f"speaker {i % 311}",
            }
            f.write(json.dumps(row) + "\n")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_seed_") as tmp_name:
        tmp = Path(tmp_name)
        setup(tmp)
        from django.db import transaction
        from django.db.models import F

        from forests.models import Forest, Node, text_sha256
        from forests.services import SEED_BATCH_SIZE, forest_delete, forest_seed
        from prmsite.core.configs.loader import config_load

        data = tmp / "liar_{split}.jsonl"
        write_dataset(tmp / "liar_test.jsonl")
        config = config_load("liar", dataset_name=str(data))

        def floor(run: int) -> float:
            # The same rows the service writes, built beforehand: only the inserts (and the tree_id update) are timed.
            items = list(config.get_dataset_iterator("test"))
            prompts = [config.get_root_prompt(item) for item in items]
            rows = [
                (p, text_sha256(p), config.get_label(item), config.serialize_dataset_item(item))
                for p, item in zip(prompts, items, strict=True)
            ]
            started = time.perf_counter()
            with transaction.atomic():
                forest = Forest.objects.create(name=f"floor-{run}")
                Node.objects.bulk_create(
                    [
                        Node(forest=forest, depth=0, text=p, text_sha256=h, ground_truth=g, serialized_item=s)
                        for p, h, g, s in rows
                    ],
                    batch_size=SEED_BATCH_SIZE,
                )
                Node.objects.filter(forest=forest, depth=0).update(tree=F("id"))
            elapsed = time.perf_counter() - started
            forest_delete(forest=forest)
            return elapsed

        def seed(suffix: str) -> float:
            started = time.perf_counter()
            result = forest_seed(config=config, dataset_split="test", forest_name_suffix=suffix)
            elapsed = time.perf_counter() - started
            assert result.trees == ITEMS
            forest_delete(forest=result.forest)
            return elapsed

        cold = seed("cold")  # includes datasets' one-off jsonl -> arrow conversion
        floors = [floor(1)]
        warm = seed("warm")
        floors.append(floor(2))
        warm = min(warm, seed("warm2"))
        base = min(floors)
        print(
            f"{ITEMS} items; floor runs {', '.join(f'{f:.2f}' for f in floors)} s; cold {cold:.2f} s; warm {warm:.2f} s"
        )
        print("| benchmark | figure | floor | ratio |")
        print("| --- | --- | --- | --- |")
        print(
            f"| forest_seed {ITEMS:,} items, first read of the jsonl (datasets builds its arrow cache) "
            f"| {cold:.2f} s | {base:.2f} s | {cold / base:.2f}x |"
        )
        print(f"| forest_seed {ITEMS:,} items, dataset cached | {warm:.2f} s | {base:.2f} s | {warm / base:.2f}x |")


if __name__ == "__main__":
    main()
