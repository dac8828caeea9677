"""The typed client: every rollout and label call over real HTTP, and its retry policy against a server that fails."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from prmsite.core.client import KEYS_PER_REQUEST, PrmsiteAPIError, PrmsiteClient
from rollouts.models import ProcessRewardLabel, Rollout
from tests.factories import make_label, make_rollout
from tests.rollouts.conftest import free_port, rollout_body


@pytest.fixture
def live_client(live_api_server, worker_token) -> Iterator[PrmsiteClient]:
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        yield client


def test_client_round_trip_of_rollouts_and_labels(live_client):
    rollout_id = live_client.post_rollout(rollout_body(temperature=0.2))
    assert Rollout.objects.get(pk=rollout_id).attributes == {"temperature": 0.2}
    [rollout] = live_client.get_rollouts("v1", limit=5)
    graded = {"answer": "0", "correct": True, "verdict_reason": ""}
    assert rollout == {**rollout_body(temperature=0.2), "id": rollout_id, **graded}
    assert live_client.get_rollouts_by_ids([rollout_id]) == [rollout]
    assert live_client.get_rollouts("v1", wait=0.5) == []
    label = {"rollout_id": rollout_id, "prm_output": [0.8, 0.3], "prm_version": "v1", "worker": "gpu-0"}
    label_id = live_client.post_process_reward_label(label)
    assert live_client.post_process_reward_label(label) == label_id
    assert live_client.get_process_reward_label_ids("v1") == [label_id]
    assert live_client.get_process_reward_labels([label_id]) == [{**label, "id": label_id, "explanations": None}]


def test_client_fetches_many_labels_in_several_requests(live_client):
    rollout = make_rollout()
    ids = [make_label(rollout, worker=f"w{i}").pk for i in range(KEYS_PER_REQUEST + 7)]
    labels = live_client.get_process_reward_labels(list(reversed(ids)))
    assert [label["id"] for label in labels] == list(reversed(ids))


def test_client_active_learning_parameters_reach_the_server(live_client):
    agree = make_rollout(prediction=1, ground_truth=1)
    disagree = make_rollout(prediction=1, ground_truth=1)
    make_label(agree, "ref", prm_output=[0.5, 0.9], final_reward=0.9)
    make_label(disagree, "ref", prm_output=[0.5, 0.1], final_reward=0.1)
    claimed = live_client.get_rollouts("lab", active_learning=True, reference_prm_version="ref")
    assert [r["id"] for r in claimed] == [disagree.pk, agree.pk]


def test_client_raises_the_servers_json_on_a_4xx(live_client):
    with pytest.raises(PrmsiteAPIError) as caught:
        live_client.post_process_reward_label({"rollout_id": 999, "prm_output": [1], "prm_version": "v", "worker": "w"})
    assert caught.value.status_code == 404
    assert "999" in caught.value.body["detail"]
    assert not ProcessRewardLabel.objects.exists()


def test_client_reads_address_and_token_from_the_environment(live_api_server, worker_token, monkeypatch):
    monkeypatch.setenv("WEBSERVER_API_BASE", live_api_server.url + "/")
    monkeypatch.setenv("WEBSERVER_API_TOKEN", worker_token)
    with PrmsiteClient() as client:
        assert client.get_process_reward_label_ids("v") == []


def test_client_without_address_or_token_says_which_variable_to_set(monkeypatch):
    monkeypatch.delenv("WEBSERVER_API_BASE", raising=False)
    monkeypatch.delenv("WEBSERVER_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="WEBSERVER_API_BASE"):
        PrmsiteClient()
    with pytest.raises(ValueError, match="WEBSERVER_API_TOKEN"):
        PrmsiteClient("http://127.0.0.1:1")


def test_a_wrong_token_raises_401(live_api_server):
    with PrmsiteClient(live_api_server.url, "wrong") as client, pytest.raises(PrmsiteAPIError) as caught:
        client.list_prm_adapters()
    assert caught.value.status_code == 401


# --- retries against a scripted server ------------------------------------------------------------------------------


@contextmanager
def scripted_server(script: Callable[[int, BaseHTTPRequestHandler], tuple[int, object]], bodies: list | None = None):
    """A local HTTP server answering the n-th request (from 0) with ``script(n, handler)``; yields (url, calls).
    JSON request bodies are appended to ``bodies`` when given."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                raw = self.rfile.read(length)
                if bodies is not None:
                    bodies.append(json.loads(raw))
            calls.append(f"{self.command} {self.path}")
            status, body = script(len(calls) - 1, self)
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on this answer (a read timeout): that is what the test wanted

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def fast_client(url: str, **kwargs) -> PrmsiteClient:
    return PrmsiteClient(url, "token", backoff_initial=0.01, backoff_max=0.05, **kwargs)


def test_5xx_answers_are_retried_until_the_server_recovers():
    with scripted_server(lambda n, _: (503, {"detail": "busy"}) if n < 2 else (200, 42)) as (url, calls):
        assert fast_client(url).post_process_reward_label({"rollout_id": 1}) == 42
    assert len(calls) == 3


def test_retries_stop_after_max_attempts_and_raise_the_last_answer():
    with (
        scripted_server(lambda n, _: (500, {"detail": "boom"})) as (url, calls),
        pytest.raises(PrmsiteAPIError) as caught,
    ):
        fast_client(url, max_attempts=4).get_process_reward_label_ids("v")
    assert len(calls) == 4
    assert caught.value.status_code == 500
    assert caught.value.body == {"detail": "boom"}


def test_4xx_answers_are_not_retried():
    with (
        scripted_server(lambda n, _: (400, {"prm_output": ["bad"]})) as (url, calls),
        pytest.raises(PrmsiteAPIError) as caught,
    ):
        fast_client(url).post_process_reward_label({"rollout_id": 1})
    assert len(calls) == 1
    assert caught.value.body == {"prm_output": ["bad"]}


def test_post_rollout_is_retried_with_the_same_idempotency_key_even_after_a_500():
    keys: list[str] = []

    def script(n, handler):
        return (500, {"detail": "boom"}) if n == 0 else (200, 7)

    with scripted_server(script, bodies=keys) as (url, calls):
        assert fast_client(url).post_rollout(rollout_body()) == 7
    assert len(calls) == 2
    assert keys[0]["idempotency_key"] == keys[1]["idempotency_key"] and len(keys[0]["idempotency_key"]) == 32
    with scripted_server(lambda n, _: (200, 8), bodies=keys) as (url, _calls):
        assert fast_client(url).post_rollout(rollout_body(idempotency_key="mine")) == 8
    assert keys[-1]["idempotency_key"] == "mine"


def slow_first(n: int, _handler, answer: object = ()) -> tuple[int, object]:
    """The first answer comes after the client's read timeout; later ones at once."""
    if n == 0:
        time.sleep(0.6)
    return 200, list(answer) if isinstance(answer, tuple) else answer


def test_read_timeouts_are_retried_except_for_claims():
    with scripted_server(slow_first) as (url, calls):
        assert fast_client(url, read_timeout=0.2).get_process_reward_label_ids("v") == []
    assert len(calls) == 2
    with scripted_server(lambda n, handler: slow_first(n, handler, 5)) as (url, calls):
        assert fast_client(url, read_timeout=0.2).post_rollout(rollout_body()) == 5  # safe: the same key
    assert len(calls) == 2
    # A claim that timed out may have leased rollouts: it is not repeated (no pile of long-polls and leases).
    with scripted_server(slow_first) as (url, calls), pytest.raises(requests.Timeout):
        fast_client(url, read_timeout=0.2).get_rollouts("v")
    assert len(calls) == 1


def test_a_claim_is_retried_when_a_proxy_says_the_server_was_not_reached_but_not_after_a_500():
    with scripted_server(lambda n, _: (503, {}) if n == 0 else (200, [])) as (url, calls):
        assert fast_client(url).get_rollouts("v") == []
    assert len(calls) == 2
    with (
        scripted_server(lambda n, _: (500, {"detail": "boom"})) as (url, calls),
        pytest.raises(PrmsiteAPIError),
    ):
        fast_client(url).get_rollouts("v")
    assert len(calls) == 1


def test_a_claim_is_retried_when_the_connection_is_refused():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(requests.ConnectionError):
        fast_client(url, max_attempts=3).get_rollouts("v")


def test_connection_errors_are_retried_then_raised():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = fast_client(url, max_attempts=3)
    attempts = []
    send = client.session.request

    def counted(*args, **kwargs):
        attempts.append(args[:2])
        return send(*args, **kwargs)

    client.session.request = counted
    with pytest.raises(requests.ConnectionError):
        client.list_prm_adapters()
    assert len(attempts) == 3


def test_client_releases_what_it_claimed(live_client):
    ids = [live_client.post_rollout(rollout_body(example=f"e{i}")) for i in range(3)]
    claimed = [r["id"] for r in live_client.get_rollouts("v1", limit=2)]
    assert live_client.release_rollouts("v1", claimed) == 2
    assert live_client.release_rollouts("v1", []) == 0
    assert [r["id"] for r in live_client.get_rollouts("v1", limit=5)] == ids


def test_client_reads_many_rollouts_by_id_in_several_requests(live_client):
    ids = [make_rollout(example=f"e{i}").pk for i in range(KEYS_PER_REQUEST + 3)]
    assert [r["id"] for r in live_client.get_rollouts_by_ids(ids[::-1])] == ids[::-1]


# --- labels in batches --------------------------------------------------------------------------------------------


def test_client_posts_labels_in_batches_and_answers_in_order(live_client, live_api_server):
    rollouts = [make_rollout() for _ in range(5)]
    make_label(rollouts[3], "v1", worker="someone-else")
    labels = [{"rollout_id": r.pk, "prm_output": [0.5, 0.5], "prm_version": "v1", "worker": "gpu-0"} for r in rollouts]
    labels.append({**labels[0]})  # the same label again: the same id
    labels.append({**labels[1], "prm_output": [0.1]})  # wrong length
    requests_seen = []
    send = live_client.session.request

    def counted(method, url, **kwargs):
        requests_seen.append((method, url.removeprefix(live_api_server.url)))
        return send(method, url, **kwargs)

    live_client.session.request = counted
    results = live_client.post_process_reward_labels(labels, batch_size=3)
    assert requests_seen == [("POST", "/process_reward_label/batch")] * 3
    stored = {label.rollout_id: label.pk for label in ProcessRewardLabel.objects.filter(worker="gpu-0")}
    assert [results[i] for i in (0, 1, 2, 4)] == [{"id": stored[rollouts[i].pk]} for i in (0, 1, 2, 4)]
    assert results[3]["status"] == 409 and results[3]["code"] == "already_labelled"
    assert results[5] == {"id": stored[rollouts[0].pk]}
    assert results[6]["status"] == 422
    assert live_client.label_batches is True
    assert live_client.post_process_reward_labels([]) == []


def test_label_batches_are_cut_by_bytes_too(live_client):
    rollout = make_rollout(reasoning=["a"])
    labels = [
        {
            "rollout_id": rollout.pk,
            "prm_output": [1],
            "prm_version": "v1",
            "worker": f"w{i}",
            "explanations": ["x" * 900],
        }
        for i in range(4)
    ]
    bodies = []
    send = live_client.session.request

    def counted(method, url, **kwargs):
        bodies.append(kwargs["json"])
        return send(method, url, **kwargs)

    live_client.session.request = counted
    results = live_client.post_process_reward_labels(labels, max_bytes=2000)
    assert [len(body["labels"]) for body in bodies] == [2, 2]
    assert results[0] == {"id": ProcessRewardLabel.objects.get(worker="w0").pk}
    assert [r.get("code") for r in results[1:]] == ["already_labelled"] * 3


def label_batch_script(single_answers: dict[int, tuple[int, object]]):
    """A server without POST /process_reward_label/batch (404 there, as an older prmsite answers); single posts are
    answered from ``single_answers`` by rollout id."""

    def script(n, handler):
        if handler.path == "/process_reward_label/batch":
            return 404, {"detail": "Not found.", "code": "not_found"}
        return single_answers[last_body[-1]["rollout_id"]]

    last_body: list = []
    return script, last_body


def test_against_an_older_server_labels_go_one_by_one_with_the_same_result_shape():
    conflict = {"detail": "already", "code": "already_labelled", "id": 3}
    unknown = {"detail": "No rollout with id 2.", "code": "not_found", "rollout_id": 2}
    script, bodies = label_batch_script({1: (200, 11), 2: (404, unknown), 3: (409, conflict), 4: (200, 14)})
    labels = [{"rollout_id": i, "prm_output": [1], "prm_version": "v", "worker": "w"} for i in (1, 2, 3)]
    with scripted_server(script, bodies=bodies) as (url, calls):
        client = fast_client(url)
        results = client.post_process_reward_labels(labels)
        assert results == [{"id": 11}, {**unknown, "status": 404}, {**conflict, "status": 409}]
        assert client.label_batches is False
        # Remembered: the next labels go one by one without asking for the batch path again.
        assert client.post_process_reward_labels([{**labels[0], "rollout_id": 4}]) == [{"id": 14}]
    assert calls == [
        "POST /process_reward_label/batch",
        *["POST /process_reward_label"] * 4,
    ]


def test_single_posts_raise_what_a_batch_would_raise():
    script, bodies = label_batch_script({1: (403, {"detail": "no", "code": "permission_denied"})})
    with (
        scripted_server(script, bodies=bodies) as (url, _calls),
        pytest.raises(PrmsiteAPIError) as caught,
    ):
        fast_client(url).post_process_reward_labels([{"rollout_id": 1, "prm_output": [1]}])
    assert caught.value.status_code == 403
    # A 404 without a rollout id is the path's: the base URL is wrong, not the label.
    script, bodies = label_batch_script({1: (404, {"detail": "Not found.", "code": "not_found"})})
    with scripted_server(script, bodies=bodies) as (url, _calls), pytest.raises(PrmsiteAPIError):
        fast_client(url).post_process_reward_labels([{"rollout_id": 1, "prm_output": [1]}])


def test_a_label_batch_is_retried_after_a_5xx_and_split_when_refused_for_its_size():
    sizes: list[int] = []

    def script(n, handler):
        labels = bodies[-1]["labels"]
        sizes.append(len(labels))
        if n == 0:
            return 503, {"detail": "busy"}
        if len(labels) > 2:
            return 400, {"detail": "At most 2 labels per batch.", "code": "invalid"}
        return 200, {"results": [{"id": label["rollout_id"]} for label in labels]}

    bodies: list = []
    labels = [{"rollout_id": i, "prm_output": [1], "prm_version": "v", "worker": "w"} for i in range(1, 6)]
    with scripted_server(script, bodies=bodies) as (url, _calls):
        results = fast_client(url).post_process_reward_labels(labels)
    assert results == [{"id": i} for i in range(1, 6)]
    assert sizes == [5, 5, 2, 3, 1, 2]


def test_a_lone_label_refused_whole_is_answered_as_its_refusal():
    def script(n, handler):
        labels = bodies[-1]["labels"]
        if any(label["rollout_id"] == 2 for label in labels):
            return 413, {"detail": "too large", "code": "too_large"}
        return 200, {"results": [{"id": label["rollout_id"]} for label in labels]}

    bodies: list = []
    with scripted_server(script, bodies=bodies) as (url, _calls):
        results = fast_client(url).post_process_reward_labels([{"rollout_id": i} for i in (1, 2, 3)])
    assert results == [{"id": 1}, {"detail": "too large", "code": "too_large", "status": 413}, {"id": 3}]
    assert [len(body["labels"]) for body in bodies] == [3, 1, 2, 1, 1]
