"""No rollout is handed to two callers for one prm_version while its lease is live: many concurrent claimers against
a live server (threads against the live test server; threads against the production server's worker processes),
every rollout labelled exactly once."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import requests
from django.contrib.auth import get_user_model

from prmsite.core.client import PrmsiteClient
from rollouts.models import ProcessRewardLabel, Rollout
from tests.factories import make_rollout, make_worker_token

PRM_VERSION = "prm-concurrency"


def new_token(name: str) -> str:
    return make_worker_token(get_user_model().objects.create_user(username=name))


def claim_and_label_everything(base_url: str, token: str, *, claimers: int, limit: int) -> list[int]:
    """Run ``claimers`` threads, each claiming and labelling until the queue is empty; return every id handed out."""
    handed: list[int] = []
    handed_lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(claimers)

    def claimer(index: int) -> None:
        try:
            with PrmsiteClient(base_url, token, backoff_initial=0.05, backoff_max=0.5) as api:
                start.wait()
                while batch := api.get_rollouts(PRM_VERSION, limit=limit):
                    with handed_lock:
                        handed.extend(r["id"] for r in batch)
                    for rollout in batch:
                        api.post_process_reward_label(
                            {
                                "rollout_id": rollout["id"],
                                "prm_output": [0.5] * len(rollout["reasoning"]),
                                "prm_version": PRM_VERSION,
                                "worker": f"claimer-{index}",
                            }
                        )
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return handed


def assert_each_labelled_exactly_once(rollout_ids: list[int], handed: list[int]) -> None:
    duplicates = [i for i, n in Counter(handed).items() if n > 1]
    assert duplicates == [], f"handed out more than once: {duplicates}"
    assert sorted(handed) == sorted(rollout_ids)
    per_rollout = Counter(
        ProcessRewardLabel.objects.filter(prm_version=PRM_VERSION).values_list("rollout_id", flat=True)
    )
    assert set(per_rollout) == set(rollout_ids)
    assert set(per_rollout.values()) == {1}


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_on_the_live_server_label_every_rollout_exactly_once(live_api_server):
    rollout_ids = [make_rollout(reasoning=["a", "b", "c"]).pk for _ in range(120)]
    handed = claim_and_label_everything(live_api_server.url, new_token("claimer"), claimers=12, limit=3)
    assert_each_labelled_exactly_once(rollout_ids, handed)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_on_the_production_server_label_every_rollout_exactly_once(production_server):
    rollout_ids = [make_rollout(reasoning=["a", "b"]).pk for _ in range(300)]
    handed = claim_and_label_everything(production_server, new_token("claimer"), claimers=24, limit=4)
    assert_each_labelled_exactly_once(rollout_ids, handed)
    assert Rollout.objects.count() == 300


@pytest.mark.django_db(transaction=True)
def test_the_production_server_serves_the_api_and_refuses_anonymous_callers(production_server):
    assert requests.get(f"{production_server}/rollout?prm_version=v", timeout=10).status_code == 401
    headers = {"Authorization": f"Token {new_token('smoke')}"}
    response = requests.get(f"{production_server}/rollout?prm_version=v", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.django_db(transaction=True)
def test_the_same_label_posted_concurrently_is_stored_once(production_server):
    rollout = make_rollout()
    token = new_token("labeller")
    label = {"rollout_id": rollout.pk, "prm_output": [1, 0], "prm_version": "lab-v1", "worker": "labeller-0"}
    answers: list[int] = []
    barrier = threading.Barrier(12)

    def post() -> None:
        with PrmsiteClient(production_server, token) as api:
            barrier.wait()
            answers.append(api.post_process_reward_label(label))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 12
    assert set(answers) == set(ProcessRewardLabel.objects.values_list("id", flat=True))
    assert ProcessRewardLabel.objects.count() == 1
