"""Generations against the stub OpenAI-compatible server over real HTTP: continuation, retries, usage, faults."""

from __future__ import annotations

import asyncio

import openai
import pytest

from rollouts.worker.llm import LLMClient, SamplingParams, load_tokenizer
from rollouts.worker.retry import FatalGenerationError
from tests.stub_openai import Reply


def client(stub, **kwargs) -> LLMClient:
    kwargs.setdefault("max_attempts", 4)
    kwargs.setdefault("backoff_initial_s", 0.01)
    kwargs.setdefault("backoff_max_s", 0.05)
    return LLMClient(base_url=stub.base_url, api_key="test", model="stub-model", **kwargs)


def generate(llm: LLMClient, **kwargs):
    async def go():
        try:
            return await llm.generate(**kwargs)
        finally:
            await llm.aclose()

    return asyncio.run(go())


def test_a_partial_answer_is_continued_with_vllms_continue_final_message(stub):
    stub.reply = lambda request: f"[{request.partial}]" if request.partial else "fresh"
    result = generate(client(stub), prompt="Q?", partial="Step 1: a. ", params=SamplingParams(temperature=0.7))
    assert result.choices[0].text == "[Step 1: a. ]"
    body = stub.requests[-1]["body"]
    assert body["messages"][-1] == {"role": "assistant", "content": "Step 1: a. "}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["temperature"] == 0.7
    fresh = generate(client(stub), prompt="Q?", params=SamplingParams())
    assert fresh.choices[0].text == "fresh"
    assert "continue_final_message" not in stub.requests[-1]["body"]


def test_the_completions_api_gets_the_prompt_rendered_by_the_models_chat_template(stub, tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    llm = client(stub, api="completions", tokenizer=tokenizer)
    generate(llm, prompt="Is it so?", partial="Step 1: yes. ", params=SamplingParams())
    prompt = stub.requests[-1]["body"]["prompt"]
    assert stub.requests[-1]["kind"] == "completions"
    assert prompt == "<|user|>\nIs it so?<|end|>\n<|assistant|>\nStep 1: yes. "  # the assistant's turn left open
    generate(client(stub, api="completions", tokenizer=tokenizer), prompt="Is it so?", params=SamplingParams())
    assert stub.requests[-1]["body"]["prompt"] == "<|user|>\nIs it so?<|end|>\n<|assistant|>\n"


def test_n_answers_come_back_with_usage_finish_reasons_and_latency(stub):
    stub.latency_s = 0.05
    stub.reply = lambda request: Reply("one two three four five", "stop") if request.index == 0 else "six"
    result = generate(client(stub), prompt="a b c", n=2, params=SamplingParams(max_tokens=3))
    assert [c.text for c in result.choices] == ["one two three", "six"]
    assert [c.finish_reason for c in result.choices] == ["length", "stop"]
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (3, 4)
    assert result.latency_s >= 0.05 and result.attempts == 1
    assert stub.requests[-1]["body"]["n"] == 2


def test_429_5xx_and_timeouts_are_retried_with_back_off(stub):
    stub.fail_next(500, 429, 503, retry_after=0.05)
    llm = client(stub, max_attempts=5)
    result = generate(llm, prompt="q", params=SamplingParams())
    assert result.attempts == 4 and llm.retries == 3 and stub.failed == 3
    stub.fail_next(0, hang_s=2.0)
    timed = generate(client(stub, request_timeout_s=0.3), prompt="q", params=SamplingParams())
    assert timed.attempts == 2


def test_a_request_that_keeps_failing_raises_after_its_attempts(stub):
    stub.fail_next(500, 500, 500)
    with pytest.raises(openai.InternalServerError):
        generate(client(stub, max_attempts=3), prompt="q", params=SamplingParams())
    stub.fail_next(400)
    with pytest.raises(openai.BadRequestError):  # not retried: this request cannot succeed
        generate(client(stub), prompt="q", params=SamplingParams())
    assert stub.failed == 4


def test_a_wrong_key_or_model_stops_the_run(stub):
    stub.fail_next(401)
    with pytest.raises(FatalGenerationError, match="401"):
        generate(client(stub), prompt="q", params=SamplingParams())
    stub.fail_next(404)
    with pytest.raises(FatalGenerationError, match="404"):
        generate(client(stub), prompt="q", params=SamplingParams())


def test_a_conversation_is_sent_as_it_is_and_rendered_whole_for_the_completions_api(stub, tokenizer_dir):
    conversation = [
        {"role": "system", "content": "Be strict."},
        {"role": "user", "content": "Grade it."},
        {"role": "assistant", "content": "Step 1: 5"},
        {"role": "user", "content": "Codes are 0, 1, 2. Again."},
    ]
    generate(client(stub), messages=conversation, params=SamplingParams())
    assert stub.requests[-1]["body"]["messages"] == conversation
    tokenizer = load_tokenizer(str(tokenizer_dir))
    generate(client(stub, api="completions", tokenizer=tokenizer), messages=conversation, params=SamplingParams())
    assert stub.requests[-1]["body"]["prompt"] == (
        "<|system|>\nBe strict.<|end|>\n<|user|>\nGrade it.<|end|>\n<|assistant|>\nStep 1: 5<|end|>\n"
        "<|user|>\nCodes are 0, 1, 2. Again.<|end|>\n<|assistant|>\n"
    )
    with pytest.raises(ValueError, match="prompt or messages, not both"):
        generate(client(stub), prompt="x", messages=conversation, params=SamplingParams())
