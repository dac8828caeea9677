"""Many long-polls against the production server (issue 17, item 6): clients that leave while long-polling never keep
leases on rollouts posted meanwhile, and unrelated requests keep being answered while hundreds of long-polls wait.

The server runs with a deliberately small PostgreSQL pool whose waits time out quickly, as the issue's server did once
its 100 connections were all held: on PostgreSQL the long-polls' claim attempts then took every connection, unrelated
requests and the give-backs of clients that had left failed, and those clients kept their leases (6 of 39)."""

from __future__ import annotations

import contextlib
import time

import requests

from rollouts.models import RolloutCheckout
from tests.factories import make_worker_token
from tests.prmsite.test_serving import open_long_poll
from tests.rollouts.conftest import rollout_body

POLLS = 120  # per side: leaving and staying
ROLLOUTS = 20


def test_clients_that_leave_keep_no_leases_and_others_are_answered_meanwhile(server_factory, django_user_model):
    tokens = {
        name: make_worker_token(django_user_model.objects.create_user(name)) for name in ("leaver", "stayer", "poster")
    }
    server = server_factory(WEBSERVER_WORKERS="2", DATABASE_POOL_MAX_SIZE="2", DATABASE_POOL_TIMEOUT_S="1").start()
    poster = requests.Session()
    poster.headers["Authorization"] = f"Token {tokens['poster']}"
    staying = [open_long_poll(server.url, tokens["stayer"], wait=60) for _ in range(POLLS)]
    leaving = [open_long_poll(server.url, tokens["leaver"], wait=60) for _ in range(POLLS)]
    try:
        time.sleep(1)  # every long-poll has made its first attempt and waits
        answered = 0
        for _ in range(10):
            with contextlib.suppress(requests.RequestException):
                answered += poster.get(f"{server.url}/prm_adapters", timeout=30).status_code == 200
        for sock in leaving:
            sock.close()
        posted = []
        for _ in range(ROLLOUTS):  # while the leavers' last attempts may still be running
            response = poster.post(f"{server.url}/rollout", json=rollout_body(), timeout=30)
            if response.status_code == 200:
                posted.append(response.json())
            with contextlib.suppress(requests.RequestException):
                answered += poster.get(f"{server.url}/prm_adapters", timeout=30).status_code == 200
        assert len(posted) == ROLLOUTS
        assert answered == 10 + ROLLOUTS  # nothing unrelated failed or waited 30 s
        # Every rollout goes to a long-poll that stayed: none stays with a client that left.
        deadline = time.monotonic() + 60
        while RolloutCheckout.objects.filter(claimed_by="stayer").count() < ROLLOUTS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not RolloutCheckout.objects.filter(claimed_by="leaver").exists()
        assert RolloutCheckout.objects.filter(claimed_by="stayer").count() == ROLLOUTS
    finally:
        for sock in staying + leaving:
            sock.close()
