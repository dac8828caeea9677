"""The AI step labeller end to end, in process: a stub judge over real HTTP and a live server of this project."""

from __future__ import annotations

import asyncio
import threading

import pytest
import requests
from django.db import connection
from django.utils import timezone

from adapters.prm.synthetic import MARKER_VALUES, synthetic_rows
from prmsite.core.client import PrmsiteAPIError, PrmsiteClient
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout
from rollouts.worker.ai_labeller import AILabelWorker, LabellerOptions, spool_folder
from rollouts.worker.llm import SamplingParams
from rollouts.worker.spool import Spool, SpoolRecord
from rollouts.worker.spool_sender import Refused, Sent, ServerUnavailableError, Skipped
from tests.factories import make_label, make_rollout
from tests.stub_openai import StubRequest, judge_reply, judge_verdicts

SCHEME = "judge-v1"


def options(server, token, stub, tmp_path, **kwargs) -> LabellerOptions:
    values = {
        "openai_base_url": stub.base_url,
        "openai_api_key": "test",
        "webserver_url": server.url,
        "webserver_token": token,
        "labelling_scheme_version": SCHEME,
        "model": "stub-model",
        "worker_name": "judge-1",
        "spool_dir": str(tmp_path / "spool"),
        "show_bar": False,
        "concurrency": 4,
        "claim_wait_s": 0.0,
        "exit_when_idle": True,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "send_backoff_max_s": 0.2,
    }
    values.update(kwargs)
    return LabellerOptions(**values)


def label(opts: LabellerOptions) -> dict:
    return asyncio.run(AILabelWorker(opts).run())


def synthetic_rollouts(count: int, seed: int = 3) -> list[Rollout]:
    """Rollouts of the synthetic task: each step carries a marker word that says whether it is good."""
    rows = synthetic_rows(prompts=count, rollouts_per_prompt=1, seed=seed)
    return [
        make_rollout(
            example=row["prompt"],
            reasoning=row["completions"],
            prediction=int(all(row["labels"])),
            ground_truth=1,
            worker="rollout-worker",
        )
        for row in rows
    ]


def expected_codes(rollout: Rollout) -> list[int]:
    return [1 if value > 0.5 else 0 for value in _values(rollout)]


def _values(rollout: Rollout) -> list[float]:
    return [next(MARKER_VALUES[w] for w in step.split() if w in MARKER_VALUES) for step in rollout.reasoning]


def live_leases(prm_version: str = SCHEME) -> int:
    return RolloutCheckout.objects.filter(prm_version=prm_version, expires_at__gt=timezone.now()).count()


def test_every_claimed_rollout_gets_one_code_per_step_and_the_explanations(live_api_server, worker_token, stub,
                                                                           tmp_path):  # fmt: skip
    rollouts = synthetic_rollouts(10)
    stub.reply = judge_reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path))
    assert summary["status"] == "completed", summary
    steps = sum(len(r.reasoning) for r in rollouts)
    assert (summary["results"], summary["sent"], summary["steps"], summary["claimed"]) == (10, 10, steps, 10)
    assert (summary["skipped"], summary["refused"], summary["malformed"], summary["given_up"]) == (0, 0, 0, 0)
    assert summary["requests_done"] == 10 and summary["unsent"] == 0 and summary["tokens"] > 0
    labels = {label.rollout_id: label for label in ProcessRewardLabel.objects.filter(prm_version=SCHEME)}
    assert set(labels) == {r.pk for r in rollouts}
    for rollout in rollouts:
        stored = labels[rollout.pk]
        assert stored.prm_output == expected_codes(rollout)
        assert stored.worker == "judge-1" and stored.labelled_by == "worker-1"
        assert len(stored.explanations) == len(rollout.reasoning)
        assert all(text.startswith("marker m") for text in stored.explanations)
    assert live_leases() == 0
    # Every request asked for the verdicts' schema, sized to its rollout, with the default prompt at temperature 0.
    for request in stub.requests:
        body = request["body"]
        schema = body["response_format"]["json_schema"]["schema"]
        prompt = body["messages"][0]["content"]
        num_steps = len(judge_verdicts(prompt))
        assert schema["properties"]["steps"]["maxItems"] == num_steps and body["temperature"] == 0.0
        assert prompt.startswith("You are grading a step-by-step solution") and body["model"] == "stub-model"
    # A second run finds nothing left to label.
    again = label(options(live_api_server, worker_token, stub, tmp_path))
    assert again["status"] == "completed" and again["results"] == 0 and again["claimed"] == 0


def test_active_learning_asks_first_for_what_the_reference_prm_gets_wrong(live_api_server, worker_token, stub,
                                                                          tmp_path):  # fmt: skip
    agrees, unscored, strong, weak = (make_rollout(example=f"Problem {i}", prediction=1, ground_truth=1,
                                                   reasoning=["step m7\n", "step m8\n"]) for i in range(4))  # fmt: skip
    make_label(agrees, "prm-ref", prm_output=[0.9, 0.9], final_reward=0.9)
    make_label(strong, "prm-ref", prm_output=[0.9, 0.05], final_reward=0.05)  # right, judged very wrong
    make_label(weak, "prm-ref", prm_output=[0.9, 0.3], final_reward=0.3)  # right, judged somewhat wrong
    stub.reply = judge_reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path, concurrency=1,
                            reference_prm_version="prm-ref"))  # fmt: skip
    assert summary["results"] == 4
    asked = [request["body"]["messages"][0]["content"] for request in stub.requests]
    order = [
        next(r.example for r in (agrees, unscored, strong, weak) if r.example + "\n" in prompt) for prompt in asked
    ]
    assert order == [strong.example, weak.example, unscored.example, agrees.example]


def test_an_unusable_answer_is_asked_again_with_what_is_wrong_and_a_hopeless_rollout_is_released(
    live_api_server, worker_token, stub, tmp_path
):
    fixed, hopeless, fine = (make_rollout(example=f"Problem {name}", reasoning=["step m7\n", "step m1\n", "step m2\n"])
                             for name in ("fixed", "hopeless", "fine"))  # fmt: skip

    def reply(request: StubRequest) -> str:
        problem = request.user_prompt
        if "Problem fixed" in problem and len(request.messages) == 1:
            return "Step 1: 1 — fine\nStep 2: 0 — wrong"  # step 3 missing: asked again
        if "Problem hopeless" in problem:
            return 'Here you go:\n```json\n{"steps": [1, 5, 0]}\n```'  # a code that does not exist, every time
        return "Sure.\n" + judge_reply(request) + "\nDone."

    stub.reply = reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path, answer_attempts=3, concurrency=1))
    assert summary["status"] == "completed"
    assert (summary["results"], summary["sent"], summary["malformed"], summary["given_up"]) == (2, 2, 4, 1)
    assert summary["released"] >= 1 and summary["requests_done"] == 1 + 2 + 3
    labelled = dict(ProcessRewardLabel.objects.filter(prm_version=SCHEME).values_list("rollout_id", "prm_output"))
    assert labelled == {fixed.pk: [1, 0, 0], fine.pk: [1, 0, 0]}  # nothing of the hopeless one, not even a part
    assert not ProcessRewardLabel.objects.filter(rollout=hopeless).exists()
    assert live_leases() == 0  # the hopeless rollout went back to the queue at once
    # The second question showed the judge its answer and said what was wrong with it.
    retry = next(r["body"]["messages"] for r in stub.requests if len(r["body"]["messages"]) == 3
                 and "Problem fixed" in r["body"]["messages"][0]["content"])  # fmt: skip
    assert retry[1] == {"role": "assistant", "content": "Step 1: 1 — fine\nStep 2: 0 — wrong"}
    assert "could not be used: no verdict for step(s) 3 of 3" in retry[2]["content"]
    hopeless_asks = [r for r in stub.requests if "Problem hopeless" in r["body"]["messages"][0]["content"]]
    assert len(hopeless_asks) == 3
    assert "step 2 has the code 5" in hopeless_asks[-1]["body"]["messages"][-1]["content"]


def test_failing_requests_are_retried_then_the_rollout_is_released(live_api_server, worker_token, stub, tmp_path):
    rollouts = synthetic_rollouts(3)
    stub.reply = judge_reply
    stub.fail_next(503, 429)  # the first request answers at its third try
    summary = label(options(live_api_server, worker_token, stub, tmp_path, concurrency=1, max_attempts=3))
    assert summary["status"] == "completed" and summary["results"] == 3 and summary["retries"] == 2
    more = synthetic_rollouts(2, seed=9)
    stub.fail_next(500, 500, 500)  # the first request fails all its tries
    summary = label(options(live_api_server, worker_token, stub, tmp_path, concurrency=1, max_attempts=3))
    assert (summary["results"], summary["requests_failed"], summary["given_up"]) == (1, 1, 1)
    labelled = set(ProcessRewardLabel.objects.filter(prm_version=SCHEME).values_list("rollout_id", flat=True))
    assert labelled == {r.pk for r in rollouts} | {more[1].pk}
    assert live_leases() == 0


def test_a_judge_that_refuses_the_first_requests_stops_the_run_with_one_line(live_api_server, worker_token, stub,
                                                                             tmp_path):  # fmt: skip
    synthetic_rollouts(5)
    stub.fail_next(400, 400, 400, 400, 400)
    summary = label(options(live_api_server, worker_token, stub, tmp_path, concurrency=1))
    assert summary["status"] == "failed"
    assert "the judge refused the first 3 requests (400" in summary["error"]
    assert "--structured_output json_schema" in summary["error"] and "\n" not in summary["error"]
    assert not ProcessRewardLabel.objects.exists() and live_leases() == 0


def test_a_409_from_the_server_counts_as_skipped(live_api_server, worker_token, stub, tmp_path):
    first, second = synthetic_rollouts(2)

    def someone_else_labels(rollout_id: int) -> None:
        # Another labeller's label arrives while the judge thinks (a thread: the stub's loop must not touch the ORM).
        def store() -> None:
            try:
                ProcessRewardLabel.objects.create(rollout_id=rollout_id, prm_version=SCHEME, worker="person",
                                                  prm_output=[1] * len(first.reasoning))  # fmt: skip
            finally:
                connection.close()

        thread = threading.Thread(target=store)
        thread.start()
        thread.join()

    def reply(request: StubRequest) -> str:
        if first.example in request.user_prompt:
            someone_else_labels(first.pk)
        return judge_reply(request)

    stub.reply = reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path))
    assert summary["status"] == "completed"
    assert (summary["results"], summary["sent"], summary["skipped"], summary["refused"]) == (2, 1, 1, 0)
    stored = {label.rollout_id: label.worker for label in ProcessRewardLabel.objects.filter(prm_version=SCHEME)}
    assert stored == {first.pk: "person", second.pk: "judge-1"}
    assert not list((tmp_path / "spool").rglob("rejected.jsonl"))  # a skipped label is no refused one


def test_a_label_left_in_the_spool_is_sent_by_the_next_run_and_its_rollout_not_judged_again(
    live_api_server, worker_token, stub, tmp_path
):
    kept, other = synthetic_rollouts(2)
    opts = options(live_api_server, worker_token, stub, tmp_path)
    # A run that stopped before storing its label left it in the spool; its lease has ended since.
    with Spool(spool_folder(opts)) as spool:
        payload = {"rollout_id": kept.pk, "prm_output": expected_codes(kept), "prm_version": SCHEME,
                   "worker": "judge-1", "explanations": ["from the last run"] * len(kept.reasoning)}  # fmt: skip
        spool.put(SpoolRecord(key="left-over", payload=payload))
    stub.reply = judge_reply
    summary = label(opts)
    assert summary["status"] == "completed" and summary["sent"] == 2 and summary["results"] == 1
    assert len(stub.requests) == 1 and other.example in stub.requests[0]["body"]["messages"][0]["content"]
    stored = ProcessRewardLabel.objects.get(prm_version=SCHEME, rollout=kept)
    assert stored.explanations[0] == "from the last run"


def test_structured_output_modes_system_prompt_and_a_template_file(live_api_server, worker_token, stub, tmp_path):
    synthetic_rollouts(2)
    template = tmp_path / "judge.txt"
    template.write_text("Grade these {num_steps} steps of: {problem}\n{steps}\nAnswer as JSON.", encoding="utf-8")
    stub.reply = judge_reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path, structured_output="guided_json",
                            prompt_template=str(template), system_prompt="You are strict.", max_labels=1,
                            sampling=SamplingParams(temperature=0.3, max_tokens=500)))  # fmt: skip
    assert summary["results"] == 1  # --max_labels
    [request] = stub.requests
    body = request["body"]
    assert "response_format" not in body and body["guided_json"]["properties"]["steps"]["minItems"] >= 2
    assert body["messages"][0] == {"role": "system", "content": "You are strict."}
    assert (
        body["messages"][1]["content"].startswith("Grade these ")
        and "Answer as JSON." in body["messages"][1]["content"]
    )
    assert (body["temperature"], body["max_tokens"]) == (0.3, 500)
    stub.requests.clear()
    label(options(live_api_server, worker_token, stub, tmp_path, structured_output="none"))
    assert stub.requests and all(
        "response_format" not in r["body"] and "guided_json" not in r["body"] and "structured_outputs" not in r["body"]
        for r in stub.requests
    )


class ScriptedClient:
    """Answers each batch of labels with the next scripted outcome: its results, or an exception to raise."""

    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.posted: list[list[dict]] = []

    def post_process_reward_labels(self, payloads: list[dict]) -> list[dict]:
        self.posted.append(payloads)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def api_error(status: int, code: str = "") -> PrmsiteAPIError:
    return PrmsiteAPIError(method="POST", url="/process_reward_label", status_code=status,
                           body={"detail": "no", "code": code} if code else {"detail": "no"})  # fmt: skip


def test_posting_labels_maps_each_answer_of_the_server_to_an_outcome():
    worker = AILabelWorker(LabellerOptions(openai_base_url="http://judge/v1", openai_api_key="x",
                                           webserver_url="http://server", webserver_token="t",
                                           labelling_scheme_version=SCHEME, show_bar=False))  # fmt: skip
    records = [SpoolRecord(key=str(i), payload={"rollout_id": i}) for i in range(3)]
    conflict = {"detail": "no", "code": "already_labelled", "id": 3, "status": 409}
    invalid = {"detail": "no", "code": "invalid", "status": 400, "errors": {"worker": ["Required."]}}
    worker.sender_api = ScriptedClient([{"id": 7}, conflict, invalid])
    outcomes = asyncio.run(worker.send_batch(records))
    assert outcomes == [Sent(7), Skipped("already_labelled"), Refused(invalid)]
    assert worker.sender_api.posted == [[{"rollout_id": 0}, {"rollout_id": 1}, {"rollout_id": 2}]]  # one batch
    # A server that fails or cannot be reached: the whole batch waits in the spool (posting again is idempotent).
    for failure in (api_error(503), requests.ConnectionError("refused"), api_error(429)):
        worker.sender_api = ScriptedClient(failure)
        with pytest.raises(ServerUnavailableError):
            asyncio.run(worker.send_batch(records[:2]))
    worker.sender_api = ScriptedClient(api_error(401))
    with pytest.raises(PrmsiteAPIError):  # a bad token stops the sender: the worker fails with one line
        asyncio.run(worker.send_batch(records[:1]))


def test_a_batch_whose_answer_was_lost_is_sent_again_and_stored_once(live_api_server, worker_token):
    rollouts = synthetic_rollouts(3)
    worker = AILabelWorker(LabellerOptions(openai_base_url="http://judge/v1", openai_api_key="x",
                                           webserver_url=live_api_server.url, webserver_token=worker_token,
                                           labelling_scheme_version=SCHEME, show_bar=False))  # fmt: skip
    client = PrmsiteClient(live_api_server.url, worker_token, max_attempts=1)
    send = client.session.request
    lost: list[str] = []

    def answer_lost_once(method, url, **kwargs):
        response = send(method, url, **kwargs)  # the server stored the batch ...
        if not lost:
            lost.append(url)
            raise requests.ConnectionError("connection reset")  # ... and the answer never arrived
        return response

    client.session.request = answer_lost_once
    worker.sender_api = client
    records = [
        SpoolRecord(
            key=str(r.pk),
            payload={
                "rollout_id": r.pk,
                "prm_output": expected_codes(r),
                "prm_version": SCHEME,
                "worker": "judge-1",
                "explanations": None,
            },
        )
        for r in rollouts
    ]
    with pytest.raises(ServerUnavailableError):  # the sender keeps the records in the spool and tries again
        asyncio.run(worker.send_batch(records))
    assert lost == [f"{live_api_server.url}/process_reward_label/batch"]
    outcomes = asyncio.run(worker.send_batch(records))
    stored = {label.rollout_id: label.pk for label in ProcessRewardLabel.objects.filter(prm_version=SCHEME)}
    assert outcomes == [Sent(stored[r.pk]) for r in rollouts]
    assert len(stored) == 3 and ProcessRewardLabel.objects.count() == 3


def test_against_an_older_server_the_labels_go_one_by_one(live_api_server, worker_token, stub, tmp_path, settings):
    settings.ROOT_URLCONF = "tests.older_server_urls"  # no POST /process_reward_label/batch there
    rollouts = synthetic_rollouts(3)
    make_label(rollouts[2], SCHEME, worker="person", prm_output=[1] * len(rollouts[2].reasoning))
    stub.reply = judge_reply
    summary = label(options(live_api_server, worker_token, stub, tmp_path))
    assert summary["status"] == "completed"
    assert (summary["results"], summary["sent"], summary["skipped"], summary["refused"]) == (2, 2, 0, 0)
    stored = {label.rollout_id: label for label in ProcessRewardLabel.objects.filter(prm_version=SCHEME)}
    assert set(stored) == {r.pk for r in rollouts}
    assert [stored[r.pk].prm_output for r in rollouts[:2]] == [expected_codes(r) for r in rollouts[:2]]
    assert live_leases() == 0
