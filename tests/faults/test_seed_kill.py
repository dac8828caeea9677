"""(c) ``seed_forest`` killed with SIGKILL half-way: it seeds in one transaction, so no half forest is left, and the
same command run again seeds the whole forest."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from forests.models import Forest, Node
from tests.faults.conftest import kill9, wait_for
from tests.servers import PROJECT_ROOT, database_url_for_subprocess

ITEMS = 5000  # 2000 roots per batch (SEED_BATCH_SIZE): the kill comes after the first batch is written
CONFIG = """
import os, time
from pathlib import Path
from prmsite.core.configs.interfaces import RolloutConfig


class Config(RolloutConfig):
    rollout_config_version = "fault-v1"
    template = "Is {n} even?"
    reasoning_delimiter_pattern = r"Step"
    prediction_pattern = r"code: (\\d)"

    def get_dataset_iterator(self, split):
        marker = os.environ.get("FAULT_SEED_MARKER")
        for n in range(%(items)d):
            if marker and n == %(items)d // 2:
                Path(marker).write_text(str(n))  # half-way, inside the open transaction: wait for the kill
                time.sleep(600)
            yield {"n": n}

    def get_root_prompt(self, item):
        return f"Is {item['n']} even?"

    def get_label(self, item):
        return item["n"] %% 2
"""


def _seed(config_dir: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "seed_forest", "--dataset_config_name", "fault_seed", "--dataset_split", "train",
         "--forest_name_suffix", "killed"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_subprocess(), "EXPERIMENT_CONFIG_DIRS": str(config_dir),
             **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _a_write_transaction_is_open() -> bool:
    """Someone (the seeding process) holds an open write transaction on the test database."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        probe = sqlite3.connect(name, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state = 'idle in transaction' "
            "AND backend_xid IS NOT NULL",
            [name],
        )
        return cursor.fetchone()[0] > 0


def test_seed_forest_killed_half_way_leaves_no_forest_and_runs_again(transactional_db, tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "fault_seed.py").write_text(CONFIG % {"items": ITEMS})
    marker = tmp_path / "half-way"

    seeding = _seed(config_dir, FAULT_SEED_MARKER=str(marker))
    wait_for(lambda: marker.exists() or seeding.poll() is not None, timeout=300, what="half-way")
    assert seeding.poll() is None, seeding.communicate()[1][-2000:]
    time.sleep(0.2)
    assert _a_write_transaction_is_open()  # the first 2000 roots are written, not committed
    kill9(seeding)
    assert int(marker.read_text()) == ITEMS // 2
    assert (Forest.objects.count(), Node.objects.count()) == (0, 0)

    again = _seed(config_dir)
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    forest = Forest.objects.get()
    assert summary["forest_name"] == forest.name and summary["created"] is True
    assert Node.objects.filter(forest=forest, parent__isnull=True).count() == ITEMS == Node.objects.count()
