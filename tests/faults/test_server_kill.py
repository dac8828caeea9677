"""(b) The web server killed with SIGKILL (every uvicorn process at once) and restarted, twice, while a rollout_worker
generates against the stub OpenAI server: nothing generated is lost or stored twice. The worker keeps finished
rollouts in its spool while the server is away and sends them with their idempotency keys, so a batch whose answer
was lost in the kill is stored once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from rollouts.models import Rollout
from tests.faults.conftest import wait_for
from tests.rollouts.worker.scripted import verdict_reply
from tests.rollouts.worker.test_worker_faults import summary_of, worker

pytestmark = pytest.mark.slow  # two server starts: about 15 s alone, 30 s on a loaded machine

ITEMS, REPEATS = 6, 4


def test_the_web_server_killed_twice_mid_run_loses_and_doubles_nothing(server_factory, token, stub, dataset, tmp_path):
    server = server_factory().start()
    stub.reply = verdict_reply
    stub.latency_s = 0.3
    args = ["--template_json", str(dataset), "--num_repeats", str(REPEATS), "--num_processes", "3"]
    process = worker(server.url, token, stub, tmp_path, *args)
    outages = []
    for stored_before_kill in (3, 10):
        wait_for(lambda n=stored_before_kill: Rollout.objects.count() >= n, timeout=300, what="rollouts")
        server.kill9()
        served = stub.served
        wait_for(
            lambda s=served: stub.served >= min(s + 2, ITEMS * REPEATS) or process.poll() is not None,
            timeout=300,
            what="generations while the server is away",
        )
        time.sleep(0.5)  # sends fail meanwhile
        outages.append((Rollout.objects.count(), stub.served))
        server.start()
    code, summary = summary_of(process, timeout=600)
    assert code == 0 and summary["status"] == "completed", summary
    stored, generated = outages[0]
    assert stored < generated, outages  # the first outage came mid-run: rollouts were generated while it lasted
    rollouts = list(Rollout.objects.all())
    assert len(rollouts) == stub.served == ITEMS * REPEATS == summary["sent"]
    assert Counter((r.attributes["dataset_item"], r.attributes["repeat"]) for r in rollouts) == Counter(
        {(i, k): 1 for i in range(ITEMS) for k in range(REPEATS)}
    )
    keys = Counter(r.idempotency_key for r in rollouts)
    assert None not in keys and max(keys.values()) == 1
    assert summary["unsent"] == 0
