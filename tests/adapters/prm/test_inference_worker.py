"""The PRM inference controller's loop against an in-memory queue: one reward per step for every claimed rollout, 409s
counted as labelled elsewhere, a stop that finishes the batch in hand and releases the rest, failures that give back
what was not posted, and an adapter download that must match its listed sha256."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections import deque

import pytest

from adapters.prm.errors import PRMError
from adapters.prm.inference_worker import LabelWorkerSettings, adapter_fetch, adapter_info_get, label_loop
from prmsite.core.client import PrmsiteAPIError, PrmsiteClient
from rollouts.models import ProcessRewardLabel
from tests.rollouts.conftest import rollout_body


def _rollout(rollout_id: int, steps: int) -> dict:
    return {
        "id": rollout_id,
        "example": f"prompt {rollout_id}",
        "reasoning": [f"step {i}\n" for i in range(steps)],
        "prediction": 1,
        "ground_truth": 1,
        "model": "m",
        "worker": "w",
    }


class FakeQueue:
    """The claim, label and release calls of ``PrmsiteClient`` over a list of rollouts."""

    def __init__(self, rollouts: list[dict], *, refusals: dict[int, tuple[int, str]] | None = None) -> None:
        self.queue = deque(rollouts)
        self.refusals = refusals or {}
        self.posted: list[dict] = []
        self.released: list[int] = []
        self.claims: list[int] = []
        self.batches: list[int] = []  # labels per POST /process_reward_label/batch
        self.lock = threading.Lock()

    def get_rollouts(self, prm_version, *, limit, wait):
        with self.lock:
            claimed = [self.queue.popleft() for _ in range(min(limit, len(self.queue)))]
            self.claims.append(len(claimed))
            return claimed

    def post_process_reward_labels(self, labels):
        """As ``PrmsiteClient`` answers: one result per label, a refusal with its status; a 5xx raises."""
        with self.lock:
            self.batches.append(len(labels))
            results = []
            for label in labels:
                status, code = self.refusals.get(label["rollout_id"], (200, ""))
                if status >= 500:
                    raise PrmsiteAPIError(method="POST", url="/process_reward_label/batch", status_code=status,
                                          body={"detail": "no", "code": code})  # fmt: skip
                if status >= 400:
                    results.append({"detail": "no", "code": code, "status": status})
                    continue
                self.posted.append(label)
                results.append({"id": len(self.posted)})
            return results

    def release_rollouts(self, prm_version, ids):
        with self.lock:
            self.released += ids
            return len(ids)


class FakeScorer:
    """Rewards 0.1, 0.2, … per step; ``on_call(n)`` runs before the n-th batch is scored (1-based)."""

    def __init__(self, on_call=None) -> None:
        self.batches: list[int] = []
        self.on_call = on_call

    def score(self, rollouts):
        self.batches.append(len(rollouts))
        if self.on_call is not None:
            self.on_call(len(self.batches))
        return [[round(0.1 * (i + 1), 1) for i in range(len(steps))] for _prompt, steps in rollouts]


def _settings(**changes) -> LabelWorkerSettings:
    return LabelWorkerSettings(**{"prm_version": "prm-v1", "worker": "gpu-0", "wait": 0.0, "exit_when_idle": True,
                                  **changes})  # fmt: skip


def test_every_claimed_rollout_gets_one_reward_per_step_and_an_empty_claim_ends_an_idle_run():
    rollouts = [_rollout(i, steps=1 + i % 4) for i in range(1, 11)]
    queue = FakeQueue(rollouts)
    scorer = FakeScorer()
    summary = label_loop(scorer, queue, _settings(batch_size=3, claim_size=4), stop=threading.Event())
    by_id = {label["rollout_id"]: label for label in queue.posted}
    assert sorted(by_id) == list(range(1, 11))
    for rollout in rollouts:
        label = by_id[rollout["id"]]
        assert label["prm_output"] == [round(0.1 * (i + 1), 1) for i in range(len(rollout["reasoning"]))]
        assert (label["prm_version"], label["worker"]) == ("prm-v1", "gpu-0")
    assert max(scorer.batches) <= 3
    assert queue.claims == [4, 4, 2, 0]
    assert (summary.claimed, summary.labelled, summary.steps) == (10, 10, sum(1 + i % 4 for i in range(1, 11)))
    assert (summary.skipped, summary.refused, summary.released, summary.ended_by) == (0, 0, 0, "idle")


def test_a_409_counts_as_labelled_elsewhere_and_another_4xx_as_refused():
    queue = FakeQueue(
        [_rollout(i, 2) for i in range(1, 6)],
        refusals={2: (409, "already_labelled"), 3: (409, "leased"), 4: (400, "invalid")},
    )
    summary = label_loop(FakeScorer(), queue, _settings(), stop=threading.Event())
    assert sorted(label["rollout_id"] for label in queue.posted) == [1, 5]
    assert (summary.labelled, summary.skipped, summary.refused, summary.ended_by) == (2, 2, 1, "idle")


def test_a_stop_finishes_the_batch_in_hand_releases_the_rest_and_claims_no_more():
    queue = FakeQueue([_rollout(i, 2) for i in range(1, 21)])
    stop = threading.Event()
    summary = label_loop(
        FakeScorer(on_call=lambda n: n == 2 and stop.set()),
        queue,
        _settings(batch_size=2, claim_size=6, exit_when_idle=False),
        stop=stop,
    )
    assert sorted(label["rollout_id"] for label in queue.posted) == [1, 2, 3, 4]
    assert queue.released == [5, 6]
    assert queue.claims == [6]
    assert (summary.labelled, summary.released, summary.ended_by) == (4, 2, "stop")


def test_a_failure_while_scoring_ends_the_run_and_gives_back_what_was_not_posted():
    queue = FakeQueue([_rollout(i, 1) for i in range(1, 7)])

    def fail_on_the_second_batch(n: int) -> None:
        if n == 2:
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        label_loop(FakeScorer(on_call=fail_on_the_second_batch), queue, _settings(batch_size=2, claim_size=6),
                   stop=threading.Event())  # fmt: skip
    assert sorted(label["rollout_id"] for label in queue.posted) == [1, 2]
    assert queue.released == [3, 4, 5, 6]


def test_a_server_that_cannot_release_leaves_the_leases_to_expire(caplog):
    class NoRelease(FakeQueue):
        def release_rollouts(self, prm_version, ids):
            raise PrmsiteAPIError(method="POST", url="/rollout/release", status_code=404, body={"detail": "no"})

    queue = NoRelease([_rollout(i, 1) for i in range(1, 5)])
    stop = threading.Event()
    summary = label_loop(FakeScorer(on_call=lambda n: stop.set()), queue, _settings(batch_size=1, claim_size=4),
                         stop=stop)  # fmt: skip
    assert (summary.labelled, summary.released, summary.ended_by) == (1, 0, "stop")
    assert "come back when their lease ends" in caplog.text


def test_a_server_error_on_a_post_ends_the_run():
    queue = FakeQueue([_rollout(i, 1) for i in range(1, 4)], refusals={2: (503, "unavailable")})
    with pytest.raises(PrmsiteAPIError) as caught:
        label_loop(FakeScorer(), queue, _settings(batch_size=1, claim_size=3, post_threads=1), stop=threading.Event())
    assert caught.value.status_code == 503


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "--batch_size must be at least 1"),
        ({"claim_size": 1001}, r"--claim_size must be in \[1, 1000\]"),
        ({"wait": -1.0}, "--wait must be 0 or more"),
        ({"post_threads": 0}, "--post_threads must be at least 1"),
    ],
)
def test_impossible_settings_are_refused(changes, message):
    with pytest.raises(PRMError, match=message):
        label_loop(FakeScorer(), FakeQueue([]), _settings(**changes), stop=threading.Event())


class FakeAdapters:
    def __init__(self, data: bytes, sha256: str) -> None:
        self.data = data
        self.sha256 = sha256

    def list_prm_adapters(self):
        return [{"prm_version": "prm-v1", "base_model": "base", "worker": "t", "sha256": self.sha256, "size": 3}]

    def download_prm_adapter(self, prm_version, destination):
        destination.write_bytes(self.data)
        return destination


def test_an_unknown_prm_version_is_refused_naming_the_known_ones():
    with pytest.raises(PRMError, match=r"no adapter for prm_version 'prm-v9' \(latest: prm-v1\)"):
        adapter_info_get(FakeAdapters(b"", ""), "prm-v9")


def test_a_download_that_does_not_match_the_listed_sha256_is_refused(tmp_path):
    client = FakeAdapters(b"not the adapter", "0" * 64)
    info = adapter_info_get(client, "prm-v1")
    with pytest.raises(PRMError, match="not the listed 0000"):
        adapter_fetch(client, info, tmp_path)


def test_a_download_with_pickled_weights_is_refused_before_anything_is_loaded(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("adapter_config.json", '{"peft_type": "LORA"}')
        archive.writestr("adapter_model.bin", b"\x80\x04pickle")
    data = buffer.getvalue()
    client = FakeAdapters(data, hashlib.sha256(data).hexdigest())
    with pytest.raises(PRMError, match=r"fails its check: Member 'adapter_model\.bin' is a pickle-based file"):
        adapter_fetch(client, adapter_info_get(client, "prm-v1"), tmp_path)
    assert not (tmp_path / "adapter").exists()


def test_a_stopped_worker_gives_its_unscored_rollouts_back_to_the_live_queue(live_api_server, worker_token):
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        ids = [client.post_rollout(rollout_body()) for _ in range(6)]
        stop = threading.Event()
        summary = label_loop(
            FakeScorer(on_call=lambda n: stop.set()),
            client,
            _settings(batch_size=2, claim_size=6, exit_when_idle=False),
            stop=stop,
        )
        assert (summary.claimed, summary.labelled, summary.released) == (6, 2, 4)
        # Nobody waits for the lease: the four come back to the next claim at once.
        again = client.get_rollouts("prm-v1", limit=10)
        assert sorted(r["id"] for r in again) == sorted(ids)[2:]


# --- posting in batches -----------------------------------------------------------------------------------------


def test_labels_scored_while_a_post_is_in_flight_go_together_in_the_next_batch():
    class SlowQueue(FakeQueue):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.go_on = threading.Event()

        def post_process_reward_labels(self, labels):
            if not self.batches:
                assert self.go_on.wait(timeout=30)  # the first post is slow: the scorer goes on meanwhile
            return super().post_process_reward_labels(labels)

    queue = SlowQueue([_rollout(i, 2) for i in range(1, 11)])
    scorer = FakeScorer(on_call=lambda n: n == 5 and queue.go_on.set())
    summary = label_loop(scorer, queue, _settings(batch_size=2, claim_size=10, post_threads=1), stop=threading.Event())
    # The first scored pair, then the eight labels scored while it was in flight, in one request.
    assert queue.batches == [2, 8]
    assert sorted(label["rollout_id"] for label in queue.posted) == list(range(1, 11))
    assert (summary.labelled, summary.steps, summary.ended_by) == (10, 20, "idle")


def test_labels_scored_before_a_scoring_failure_are_still_posted_in_batches():
    queue = FakeQueue([_rollout(i, 1) for i in range(1, 9)])

    def fail_on_the_third_batch(n: int) -> None:
        if n == 3:
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError):
        label_loop(FakeScorer(on_call=fail_on_the_third_batch), queue, _settings(batch_size=2, claim_size=8),
                   stop=threading.Event())  # fmt: skip
    assert sorted(label["rollout_id"] for label in queue.posted) == [1, 2, 3, 4]
    assert queue.released == [5, 6, 7, 8]


def counting_requests(client: PrmsiteClient, base_url: str) -> list[str]:
    """The paths of the requests ``client`` sends, as they go out."""
    seen: list[str] = []
    send = client.session.request

    def counted(method, url, **kwargs):
        seen.append(f"{method} {url.removeprefix(base_url).split('?')[0]}")
        return send(method, url, **kwargs)

    client.session.request = counted
    return seen


@pytest.mark.parametrize("older_server", [False, True], ids=["batch-path", "older-server"])
def test_the_worker_labels_the_live_queue_in_batches_or_one_by_one_on_an_older_server(
    live_api_server, worker_token, settings, older_server
):
    if older_server:
        settings.ROOT_URLCONF = "tests.older_server_urls"
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        ids = [client.post_rollout(rollout_body()) for _ in range(7)]
        taken = ProcessRewardLabel.objects.create(
            rollout_id=ids[3], prm_version="prm-v1", prm_output=[0.5, 0.5], worker="someone-else"
        )
        seen = counting_requests(client, live_api_server.url)
        summary = label_loop(FakeScorer(), client, _settings(batch_size=4, claim_size=8, post_threads=1),
                             stop=threading.Event())  # fmt: skip
        assert client.label_batches is not older_server
    assert (summary.claimed, summary.labelled, summary.skipped, summary.ended_by) == (6, 6, 0, "idle")
    labels = ProcessRewardLabel.objects.filter(prm_version="prm-v1")
    assert sorted(labels.values_list("rollout_id", flat=True)) == sorted(ids)
    assert labels.get(rollout_id=ids[3]).pk == taken.pk
    assert all(list(label.prm_output) == [0.1, 0.2] for label in labels.exclude(pk=taken.pk))
    posts = [request for request in seen if request.startswith("POST /process_reward_label")]
    if older_server:
        assert posts == ["POST /process_reward_label/batch"] + ["POST /process_reward_label"] * 6
    else:
        assert posts == ["POST /process_reward_label/batch"] * 2  # a scored batch of 4, then of 2
