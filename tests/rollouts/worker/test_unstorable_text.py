"""A model that writes a NUL (or text the server refuses for another reason) stops no rollout worker: the worker
replaces what no database stores before it sends, a rollout the server still refuses is set aside in the spool's
``rejected.jsonl`` and the others are stored, and a restarted worker never sends the same refused batch again
(issue 17, item 8)."""

from __future__ import annotations

import asyncio
import json

from forests.intake_api import RolloutBatchParser
from prmsite.core.client import PrmsiteAPIError
from prmsite.parsers import text_problem
from rollouts.models import Rollout
from rollouts.worker.rollout import UNSTORABLE_REPLACED
from rollouts.worker.rollout_worker import DatasetSpec, RolloutWorker, WorkerOptions, spool_folder
from rollouts.worker.spool import Spool, SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent
from rollouts.worker.storable import REPLACEMENT, storable
from tests.rollouts.worker.scripted import verdict_reply
from tests.rollouts.worker.test_rollout_worker import options, run_worker
from tests.stub_openai import StubRequest

ITEMS, REPEATS = 6, 3


def reply_with(odd: dict[int, str]):
    """``verdict_reply``, with ``odd[item]`` inserted in the first step of the answers about that item."""

    def reply(request: StubRequest) -> str:
        text = verdict_reply(request)
        number = int(request.user_prompt.split("#")[1].split()[0])
        return text.replace("read statement", f"read{odd[number]} statement") if number in odd else text

    return reply


def dataset_options(server, token, stub, dataset, tmp_path) -> WorkerOptions:
    return options(server, token, stub, tmp_path, dataset=DatasetSpec(template_json=str(dataset)), num_repeats=REPEATS)


def rejected_lines(opts: WorkerOptions) -> list[dict]:
    path = spool_folder(opts) / "rejected.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_storable_replaces_nul_and_lone_surrogates_everywhere_and_keeps_clean_values_as_they_are():
    clean = {"reasoning": ["a", "b"], "usage": {"n": 1}, "x": None}
    assert storable(clean) is clean
    dirty = {"reasoning": ["a\x00b", "c\ud800"], "k\x00": ["\udfff"], "n": 1.5}
    assert storable(dirty) == {
        "reasoning": [f"a{REPLACEMENT}b", f"c{REPLACEMENT}"],
        f"k{REPLACEMENT}": [REPLACEMENT],
        "n": 1.5,
    }
    assert text_problem(storable(dirty)) is None and text_problem(dirty) is not None
    assert "".join(storable(["x\x00", "\x00y"])) == f"x{REPLACEMENT}{REPLACEMENT}y"  # one for one: steps keep


def test_a_nul_or_a_lone_surrogate_from_the_model_is_stored_replaced_with_every_other_rollout(
    live_api_server, worker_token, stub, dataset, tmp_path
):
    stub.reply = reply_with({2: "\x00", 4: "\ud800"})
    summary = run_worker(dataset_options(live_api_server, worker_token, stub, dataset, tmp_path))
    assert summary["status"] == "completed" and summary["sent"] == ITEMS * REPEATS and summary["refused"] == 0
    assert Rollout.objects.count() == ITEMS * REPEATS
    odd = [r for r in Rollout.objects.all() if r.attributes["dataset_item"] in (2, 4)]
    assert len(odd) == 2 * REPEATS
    for rollout in odd:
        assert rollout.reasoning[0].startswith(f"Step 1: read{REPLACEMENT} statement")
        assert rollout.attributes[UNSTORABLE_REPLACED] is True
    assert not any(UNSTORABLE_REPLACED in r.attributes for r in Rollout.objects.exclude(pk__in=[r.pk for r in odd]))


def test_a_rollout_the_server_refuses_is_set_aside_the_others_are_stored_and_a_restart_sends_nothing_again(
    live_api_server, worker_token, stub, dataset, tmp_path, settings
):
    settings.PRM_ROLLOUT_MAX_CHARS = 200  # the answers about item 3 are longer: each is a 413 of its own
    stub.reply = reply_with({3: " very" * 50})
    opts = dataset_options(live_api_server, worker_token, stub, dataset, tmp_path)
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["refused"] == REPEATS and summary["unsent"] == 0
    assert Rollout.objects.count() == (ITEMS - 1) * REPEATS
    rejected = rejected_lines(opts)
    assert len(rejected) == REPEATS and {line["error"]["status"] for line in rejected} == {413}
    assert {line["payload"]["dataset_item"] for line in rejected} == {3}
    posts = len(stub.requests)
    again = run_worker(opts)
    assert again["status"] == "completed" and again["results"] == 0 and again["sent"] == 0
    assert len(stub.requests) == posts and len(rejected_lines(opts)) == REPEATS
    assert Rollout.objects.count() == (ITEMS - 1) * REPEATS


def test_a_server_refusing_a_whole_batch_for_one_rollout_gets_the_others_in_halves(
    live_api_server, worker_token, stub, dataset, tmp_path, monkeypatch
):
    # A server that checks the whole body (as this one did before), and a worker that does not clean text: one NUL
    # makes every batch holding it a 400. The worker must not stop, nor send that batch again forever.
    monkeypatch.setattr(RolloutBatchParser, "unstorable", lambda self, parsed: text_problem(parsed))
    monkeypatch.setattr("rollouts.worker.rollout.storable", lambda value: value)
    monkeypatch.setattr("rollouts.worker.rollout_worker.storable", lambda value: value)
    stub.reply = reply_with({5: "\x00"})
    opts = dataset_options(live_api_server, worker_token, stub, dataset, tmp_path)
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["refused"] == REPEATS and summary["unsent"] == 0
    assert Rollout.objects.count() == (ITEMS - 1) * REPEATS
    rejected = rejected_lines(opts)
    assert {line["payload"]["dataset_item"] for line in rejected} == {5} and len(rejected) == REPEATS
    assert all(line["error"]["status"] == 400 and "NUL" in line["error"]["detail"] for line in rejected)
    again = run_worker(opts)
    assert again["sent"] == 0 and again["refused"] == 0 and Rollout.objects.count() == (ITEMS - 1) * REPEATS


def test_a_nul_left_in_the_spool_by_an_earlier_worker_is_cleaned_and_stored_by_the_next(
    live_api_server, worker_token, stub, dataset, tmp_path
):
    stub.reply = verdict_reply
    opts = dataset_options(live_api_server, worker_token, stub, dataset, tmp_path)
    payload = {
        "model": "stub-model",
        "example": "Judge this. Statement #0 holds.",
        "reasoning": ["Step 1: a\x00b. ", "Verdict: code: 0"],
        "prediction": 0,
        "ground_truth": 0,
        "worker": "test-worker",
        "idempotency_key": "left-by-an-earlier-run",
    }
    with Spool(spool_folder(opts)) as spool:  # what a worker before this fix left behind
        spool.put(SpoolRecord(key="left-by-an-earlier-run", payload=payload))
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["refused"] == 0
    stored = Rollout.objects.get(idempotency_key="left-by-an-earlier-run")
    assert stored.reasoning == [f"Step 1: a{REPLACEMENT}b. ", "Verdict: code: 0"]
    assert Rollout.objects.count() == ITEMS * REPEATS + 1


def test_a_batch_refused_whole_is_sent_again_in_halves_until_only_the_bad_rollout_is_refused(monkeypatch):
    calls: list[int] = []

    class WholeBodyServer:
        def post_rollouts(self, payloads):
            calls.append(len(payloads))
            if any("\x00" in step for p in payloads for step in p["reasoning"]):
                raise PrmsiteAPIError(method="POST", url="/rollout/batch", status_code=400, body={"detail": "NUL"})
            return [{"id": index} for index, _ in enumerate(payloads)]

    opts = WorkerOptions(openai_base_url="", openai_api_key="", webserver_url="", webserver_token="")
    worker = RolloutWorker(opts)
    worker.sender_api = WholeBodyServer()
    records = [SpoolRecord(key=str(i), payload={"reasoning": ["a\x00" if i == 5 else "a"]}) for i in range(16)]
    monkeypatch.setattr(
        "rollouts.worker.rollout_worker.storable", lambda value: value
    )  # as an older worker spooled them
    outcomes = asyncio.run(worker.send_batch(records))
    assert [type(o) for o in outcomes] == [Sent] * 5 + [Refused] + [Sent] * 10
    assert outcomes[5].error == {"detail": "NUL", "status": 400}
    assert len(calls) <= 1 + 2 * 4  # the whole batch, then two halves per level down to the bad rollout
