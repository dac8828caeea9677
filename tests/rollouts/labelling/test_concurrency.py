"""People on the labelling pages and API workers claim one scheme's queue at the same time, against a live server:
no rollout is handed to two callers while K = 1, none twice to one caller while K = 2, and every rollout ends with
exactly K labels from K different labellers. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import pytest
import requests
from django.contrib.auth import get_user_model

from prmsite.core.client import PrmsiteClient
from rollouts.models import ProcessRewardLabel
from tests.factories import make_rollout, make_worker_token
from tests.rollouts.labelling.conftest import PASSWORD, form_data, make_labeller, make_scheme

VERSION = "human-race"
ROLLOUTS = 24
PEOPLE = 3
WORKERS = 3
JUDGE_S = 0.05


def person(base: str, username: str, handed: list[tuple[str, int]], start: threading.Barrier) -> None:
    """Log in on the labelling pages, then take and label rollouts until the queue has nothing for this person."""
    with requests.Session() as session:
        session.get(f"{base}/label/login/", timeout=30).raise_for_status()
        login = session.post(
            f"{base}/label/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            allow_redirects=False,
            timeout=30,
        )
        assert login.status_code == 302, login.text[:500]
        start.wait()
        answer = session.post(
            f"{base}/label/{VERSION}/next/",
            data={"csrfmiddlewaretoken": session.cookies["csrftoken"]},
            allow_redirects=False,
            timeout=60,
        )
        while True:
            assert answer.status_code == 302, answer.text[:500]
            match = re.search(r"/rollouts/(\d+)/$", answer.headers["Location"])
            if match is None:
                return  # back on the scheme page: nothing left for this person
            rollout_id = int(match.group(1))
            handed.append((username, rollout_id))
            page = session.get(f"{base}/label/{VERSION}/rollouts/{rollout_id}/", timeout=60)
            assert page.status_code == 200
            visit = re.search(r'name="visit" value="([^"]*)"', page.text).group(1)
            data = form_data([1, -1], visit=visit)
            data["csrfmiddlewaretoken"] = session.cookies["csrftoken"]
            answer = session.post(
                f"{base}/label/{VERSION}/rollouts/{rollout_id}/", data=data, allow_redirects=False, timeout=60
            )


def worker(base: str, token: str, name: str, handed: list[tuple[str, int]], start: threading.Barrier) -> None:
    """An API worker (an AI judge): claim two at a time and label them, until the queue has nothing for it."""
    with PrmsiteClient(base, token, backoff_initial=0.05, backoff_max=0.5) as api:
        start.wait()
        while batch := api.get_rollouts(VERSION, limit=2):
            for rollout in batch:
                handed.append((name, rollout["id"]))
                time.sleep(JUDGE_S)  # a judge takes a moment per rollout too
                api.post_process_reward_label(
                    {"rollout_id": rollout["id"], "prm_output": [1, 1], "prm_version": VERSION, "worker": name}
                )


def run_everyone(base: str) -> list[tuple[str, int]]:
    handed: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(PEOPLE + WORKERS)
    jobs = []
    for i in range(PEOPLE):
        make_labeller(f"person-{i}")
        jobs.append((person, (base, f"person-{i}", handed, start)))
    for i in range(WORKERS):
        user = get_user_model().objects.create_user(username=f"judge-{i}")
        jobs.append((worker, (base, make_worker_token(user), f"judge-{i}", handed, start)))

    def run(target, args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
            start.abort()  # nobody waits for a thread that failed before the start

    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    return handed


@pytest.mark.django_db(transaction=True)
def test_people_and_api_workers_never_get_the_same_rollout_while_it_is_leased(live_api_server):
    make_scheme(VERSION, labels_per_rollout=1)
    ids = [make_rollout(reasoning=["a", "b"]).pk for _ in range(ROLLOUTS)]
    handed = run_everyone(live_api_server.url)
    doubled = [i for i, n in Counter(rollout_id for _, rollout_id in handed).items() if n > 1]
    assert doubled == [], f"handed out twice: {doubled}"
    assert sorted(rollout_id for _, rollout_id in handed) == sorted(ids)
    per_rollout = Counter(ProcessRewardLabel.objects.filter(prm_version=VERSION).values_list("rollout_id", flat=True))
    assert per_rollout == dict.fromkeys(ids, 1)
    assert {who for who, _ in handed} & {f"person-{i}" for i in range(PEOPLE)}, "no person got a rollout"


@pytest.mark.django_db(transaction=True)
def test_with_k_labellers_each_rollout_gets_k_different_ones_from_people_and_workers(live_api_server):
    make_scheme(VERSION, labels_per_rollout=2)
    ids = [make_rollout(reasoning=["a", "b"]).pk for _ in range(ROLLOUTS)]
    handed = run_everyone(live_api_server.url)
    assert [pair for pair, n in Counter(handed).items() if n > 1] == [], "a rollout went twice to one caller"
    assert Counter(rollout_id for _, rollout_id in handed) == dict.fromkeys(ids, 2)
    labellers: dict[int, list[str]] = {}
    for rollout_id, labelled_by in ProcessRewardLabel.objects.filter(prm_version=VERSION).values_list(
        "rollout_id", "labelled_by"
    ):
        labellers.setdefault(rollout_id, []).append(labelled_by)
    assert set(labellers) == set(ids)
    assert all(len(names) == 2 == len(set(names)) for names in labellers.values())
