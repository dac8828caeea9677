"""From an answer to a rollout body: lossless steps, the shared prediction parser, usage shares, seeds."""

from __future__ import annotations

from prmsite.core.grading import AnswerSpec
from rollouts.worker.llm import Usage
from rollouts.worker.rollout import request_seed, rollout_payload, split_usage

PATTERN = r"</?u>|Step|```"
PREDICTION = r"code: ([-0-1]+)"


def payload(prefix, continuation, **kwargs):
    return rollout_payload(
        model="m",
        worker="w",
        example="Q",
        ground_truth=1,
        prefix=prefix,
        continuation=continuation,
        delimiter_pattern=PATTERN,
        prediction_pattern=PREDICTION,
        usage=Usage(3, 5),
        finish_reason=kwargs.pop("finish_reason", "stop"),
        latency_s=0.123456,
        idempotency_key="key",
        **kwargs,
    )


def test_a_fresh_answer_is_split_losslessly_and_its_last_verdict_parsed():
    answer = "Intro. <u>Step 1: code: 0 is the format</u> so <u>Verdict: True (code: 1)</u>"
    body = payload([], answer)
    assert "".join(body["reasoning"]) == answer and len(body["reasoning"]) == 4
    assert body["prediction"] == 1
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert body["finish_reason"] == "stop" and body["latency_s"] == 0.1235 and body["idempotency_key"] == "key"


def test_a_continuation_keeps_the_prefix_steps_as_they_are():
    prefix = ["<u>Step 1: a</u> ", "<u>Step 2: b</u> "]
    body = payload(prefix, "and more. <u>Verdict (code: 0)</u>")
    assert body["reasoning"][:2] == prefix
    assert body["reasoning"][2] == "and more. "  # not merged into the prefix's last step
    assert "".join(body["reasoning"]) == "".join(prefix) + "and more. <u>Verdict (code: 0)</u>"
    assert body["prediction"] == 0


def test_empty_and_cut_off_answers_are_recorded_as_they_are():
    empty = payload([], "")
    assert empty["reasoning"] == [""] and empty["prediction"] is None and empty["empty"] is True
    continued = payload(["Step 1: a "], "  ")
    assert continued["reasoning"] == ["Step 1: a ", "  "] and continued["empty"] is True
    cut = payload([], "Step 1: the answer is", finish_reason="length")
    assert cut["finish_reason"] == "length" and cut["prediction"] is None


def test_usage_shares_add_up_to_what_the_server_reported():
    shares = split_usage(Usage(10, 101), ["a" * 10, "b" * 30, ""])
    assert sum(s.prompt_tokens for s in shares) == 10 and sum(s.completion_tokens for s in shares) == 101
    assert shares[1].completion_tokens > shares[0].completion_tokens > shares[2].completion_tokens
    assert split_usage(Usage(4, 9), ["x"]) == [Usage(4, 9)]


def test_seeds_are_reproducible_and_differ_between_requests():
    assert request_seed(None, "1:0") is None
    assert request_seed(7, "1:0") == request_seed(7, "1:0")
    assert len({request_seed(7, f"{i}:0") for i in range(100)}) == 100


def test_a_label_body_is_the_specifications_whether_or_not_the_kind_is_named():
    answer = "<u>Verdict: True (code: 1)</u>"
    assert payload([], answer, answer_spec=AnswerSpec(kind="label")) == payload([], answer)
    assert "answer" not in payload([], answer)


def test_a_math_body_carries_the_boxed_answer_and_neither_prediction_nor_ground_truth():
    body = rollout_payload(
        model="m",
        worker="w",
        example="Q",
        ground_truth=None,
        prefix=["First, $x = 2$.\n\n"],
        continuation="So the answer is $\\boxed{\\frac{x}{4}}$ and not \\boxed{} twice.",
        delimiter_pattern=r"\n\s*\n",
        prediction_pattern="",
        usage=Usage(1, 1),
        finish_reason="stop",
        latency_s=0.1,
        idempotency_key="k",
        answer_spec=AnswerSpec(kind="math"),
    )
    assert body["answer"] == "\\frac{x}{4}"
    assert "prediction" not in body and "ground_truth" not in body
    assert len(body["reasoning"]) == 2


def test_a_number_body_reads_its_answer_with_the_pattern_and_says_when_there_is_none():
    spec = AnswerSpec(kind="number")
    body = rollout_payload(
        model="m",
        worker="w",
        example="Q",
        ground_truth=None,
        prefix=[],
        continuation="Step 1: 3 * 4 = 12\n#### 12",
        delimiter_pattern="Step",
        prediction_pattern=r"####\s*(\S+)",
        usage=Usage(1, 1),
        finish_reason="stop",
        latency_s=0.1,
        idempotency_key="k",
        answer_spec=spec,
    )
    assert body["answer"] == "12" and "prediction" not in body
    assert (
        payload([], "no answer here", answer_spec=spec)["answer"] == ""
    )  # stated none: not null, which is a label body
