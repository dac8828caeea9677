"""The cost benchmark's measuring code (bench/bench_cost.py) at a tiny size, so that it cannot rot: every kind of
request is made through a live server and through the service layer, each does the work it counts, and the CPU
clocks read the processes they name."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from bench import bench_cost
from bench.bench_cost import KINDS, Api, Run, Sizes
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout
from tests.factories import make_worker_token

TINY = Sizes(
    rollouts_batch=6,
    rollout_batch_size=4,
    rollouts_single=2,
    claims_single=2,
    claims_batch=5,
    claim_batch_limit=3,
    label_batch_size=2,
    expansions_single=2,
    expansions_batch=5,
    expansion_batch_limit=2,
    downloads=2,
)
# Requests each kind makes at TINY (ceil(items / per request)).
REQUESTS = {
    "rollouts_batch": 2,
    "rollouts_single": 2,
    "claims_single": 2,
    "claims_batch": 2,
    "labels_single": 2,
    "labels_batch": 3,
    "expansions_single": 2,
    "expansions_batch": 3,
    "downloads": 2,
}
ITEMS = {
    "rollouts_batch": 6,
    "rollouts_single": 2,
    "claims_single": 2,
    "claims_batch": 5,
    "labels_single": 2,
    "labels_batch": 5,
    "expansions_single": 2,
    "expansions_batch": 5,
    "downloads": 2,
}


@pytest.fixture
def seeded(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    for side in ("http", "floor"):
        for name, roots in bench_cost.expansion_forests(Run(side, TINY)).items():
            bench_cost.seed_expansion_forest(name, roots)
    bench_cost.seed_adapter()


def test_every_kind_does_the_work_it_counts_over_http_and_in_the_floor(seeded, live_api_server):
    token = make_worker_token(get_user_model().objects.create_user(username="bench-http"))
    # The live server runs in this process's threads: its clock is this process's CPU.
    clock = lambda: bench_cost.process_tree_cpu_s(psutil.Process().pid)  # noqa: E731
    http = bench_cost.measure_http(Api(live_api_server.url, token), Run("http", TINY), clock, None)
    floor = bench_cost.measure_floor(Run("floor", TINY), None)
    for kind in KINDS:
        if http[kind.key].skipped:  # the batch label endpoint, until it is built
            assert kind.key == "labels_batch" and "404" in http[kind.key].skipped
        else:
            assert (kind.key, http[kind.key].work.requests) == (kind.key, REQUESTS[kind.key])
            assert (kind.key, http[kind.key].work.items) == (kind.key, ITEMS[kind.key])
        assert (kind.key, floor[kind.key].work.items) == (kind.key, ITEMS[kind.key])
        assert floor[kind.key].work.requests == 0
    # Every rollout stored once; every claimed rollout labelled once under its version, no lease left for those.
    assert Rollout.objects.count() == 2 * (TINY.rollouts_batch + TINY.rollouts_single)
    for side in ("http", "floor"):
        run_version = Run(side, TINY).version("claims_single")
        assert ProcessRewardLabel.objects.filter(prm_version=run_version).count() == TINY.claims_single
        assert not RolloutCheckout.objects.filter(prm_version=run_version).exists()
    floor_batch = Run("floor", TINY).version("claims_batch")
    assert ProcessRewardLabel.objects.filter(prm_version=floor_batch).count() == TINY.claims_batch
    rows = bench_cost.rows_for("SQLite", http, bench_cost._as_json(floor))
    assert len(rows) == len(KINDS) and all(row.startswith("| CPU per ") for row in rows)


def test_the_server_clock_counts_the_cpu_of_its_child_processes():
    burn = "import sys, time\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"  # it has spent 0.3 s of CPU and waits
        own = psutil.Process().cpu_times()
        tree = bench_cost.process_tree_cpu_s(psutil.Process().pid)
        assert tree - (own.user + own.system) >= 0.25
    finally:
        child.communicate("")


@pytest.mark.django_db
def test_the_database_clock_finds_this_sessions_postgresql_backend():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    found = bench_cost.postgres_backends(connection.settings_dict["NAME"])
    assert backend in found
    start = bench_cost.postgres_backends(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM generate_series(1, 3000000)")
    deadline = time.monotonic() + 5
    while bench_cost.BackendSampler.spent(start, bench_cost.postgres_backends(connection.settings_dict["NAME"])) <= 0:
        assert time.monotonic() < deadline, "the backend's CPU never grew"
        time.sleep(0.05)
