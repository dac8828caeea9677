"""(a) A claimer killed with SIGKILL while it holds leases: its rollouts come back when the lease ends, to nobody
before, and every rollout ends up labelled exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

from prmsite.core.client import PrmsiteClient
from tests.faults.conftest import kill9
from tests.rollouts.conftest import rollout_body
from tests.servers import PROJECT_ROOT

LEASE_S = 4
VERSION = "prm-fault"
CLAIMER = """
import json, sys, time
from prmsite.core.client import PrmsiteClient
with PrmsiteClient() as api:
    print(json.dumps([r["id"] for r in api.get_rollouts("prm-fault", limit=int(sys.argv[1]))]), flush=True)
    time.sleep(600)
"""


def _label_until_empty(url: str, token: str, worker: str, labelled: list[int]) -> None:
    with PrmsiteClient(url, token) as api:
        while rollouts := api.get_rollouts(VERSION, limit=3, wait=1):
            for rollout in rollouts:
                body = {"rollout_id": rollout["id"], "prm_output": [0.5] * len(rollout["reasoning"])}
                api.post_process_reward_label({**body, "prm_version": VERSION, "worker": worker})
                labelled.append(rollout["id"])


def test_a_killed_claimers_rollouts_come_back_after_the_lease_and_are_labelled_once(server_factory, token):
    server = server_factory(PRM_CHECKOUT_TIMEOUT_S=str(LEASE_S)).start()
    with PrmsiteClient(server.url, token) as api:
        ids = [api.post_rollout(rollout_body(idempotency_key=f"fault-a-{i}")) for i in range(12)]
        env = {**os.environ, "WEBSERVER_API_BASE": server.url, "WEBSERVER_API_TOKEN": token}
        claimer = subprocess.Popen(
            [sys.executable, "-c", CLAIMER, "5"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        killed_holding = json.loads(claimer.stdout.readline())
        claimed_at = time.monotonic()
        kill9(claimer)
        assert len(killed_holding) == 5

        # While the dead claimer's leases are live, nobody else gets its rollouts.
        others = [r["id"] for r in api.get_rollouts(VERSION, limit=100)]
        assert sorted(others) == sorted(set(ids) - set(killed_holding))
        assert api.get_rollouts(VERSION, limit=100) == [] or time.monotonic() - claimed_at >= LEASE_S
        api.release_rollouts(VERSION, others)

    # After the lease, two labellers race for everything: each rollout is labelled once.
    time.sleep(max(0.0, LEASE_S + 0.2 - (time.monotonic() - claimed_at)))
    labelled: list[int] = []
    threads = [
        threading.Thread(target=_label_until_empty, args=(server.url, token, f"labeller-{n}", labelled))
        for n in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert Counter(labelled) == Counter(ids)
    with PrmsiteClient(server.url, token) as api:
        labels = api.get_process_reward_labels(api.get_process_reward_label_ids(VERSION))
        assert Counter(label["rollout_id"] for label in labels) == Counter(ids)
        assert api.get_rollouts(VERSION, limit=100) == []
