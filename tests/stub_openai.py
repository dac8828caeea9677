"""A small OpenAI-compatible server for tests and benchmarks: real HTTP on 127.0.0.1, configurable latency, scripted
answers and injected failures, ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``.

In a test::

    with StubOpenAI(latency_s=0.05, reply=my_reply) as stub:   # uvicorn in a thread, on a free port
        stub.fail_next(500, 429)                               # the next two requests fail with these statuses
        ... OPENAI_API_BASE=stub.base_url ...
        assert len(stub.requests) == 10

As a process (the benchmarks)::

    python -m tests.stub_openai --port 8123 --latency_s 1.0

``reply(request) -> str | Reply`` decides each choice's text (default: a fixed three-step answer; ``judge_reply``
answers an AI labeller's prompt as a perfect judge of the synthetic task, ``--judge`` on the command line). Tokens
are counted as white-space separated words; ``max_tokens`` cuts an answer to that many words with
``finish_reason="length"``. A chat request whose last message is the assistant's with ``continue_final_message``
continues it; a completions request continues its ``prompt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

DEFAULT_ANSWER = "Step 1: look at the claim. Step 2: it does not hold. Verdict: False (code: 0)"
MODEL = "stub-model"


@dataclass
class StubRequest:
    """One generation request as the stub received it."""

    kind: str  # "chat" or "completions"
    body: dict[str, Any]
    index: int  # which choice of the request (0 … n-1)
    headers: dict[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages") or []

    @property
    def user_prompt(self) -> str:
        """The user's message (chat) or the rendered prompt (completions)."""
        if self.kind == "completions":
            return str(self.body.get("prompt", ""))
        return next((str(m.get("content", "")) for m in self.messages if m.get("role") == "user"), "")

    @property
    def partial(self) -> str:
        """The start of the answer the model must continue ("" for a fresh answer)."""
        if self.kind == "chat":
            last = self.messages[-1] if self.messages else {}
            if last.get("role") == "assistant" and self.body.get("continue_final_message"):
                return str(last.get("content", ""))
        return ""


@dataclass
class Reply:
    text: str
    finish_reason: str = "stop"


JUDGE_STEP = re.compile(r'<step number="(\d+)">\n(.*?)\n</step>', re.DOTALL)
JUDGE_MARKER = re.compile(r"\bm(\d)\b")


def judge_verdicts(prompt: str) -> list[tuple[int, str]]:
    """What a perfect judge says of the steps in an AI labeller's prompt (``<step number="i">`` tags) of the synthetic
    task (``adapters.prm.synthetic``): a step whose marker ``m5``…``m9`` is good is preferred (1), ``m0``…``m4`` not
    preferred (0), a step without a marker neutral (2). (code, explanation) per step, in order."""
    verdicts = []
    for _number, text in JUDGE_STEP.findall(prompt):
        marker = JUDGE_MARKER.search(text)
        if marker is None:
            verdicts.append((2, "no marker: neither right nor wrong"))
        elif int(marker.group(1)) >= 5:
            verdicts.append((1, f"marker m{marker.group(1)} is a good one"))
        else:
            verdicts.append((0, f"marker m{marker.group(1)} is a bad one"))
    return verdicts


def judge_reply(request: StubRequest) -> str:
    """The perfect judge's answer, as the JSON object the labeller's schema asks for."""
    steps = [
        {"step": i, "explanation": explanation, "label": code}
        for i, (code, explanation) in enumerate(judge_verdicts(request.user_prompt), start=1)
    ]
    return json.dumps({"steps": steps})


def words(text: str) -> int:
    return len(text.split())


@dataclass
class Failure:
    status: int
    retry_after: float | None = None
    hang_s: float = 0.0  # answer only after this long (a client timeout)


@dataclass
class StubOpenAI:
    latency_s: float = 0.0
    reply: Callable[[StubRequest], str | Reply] = field(default=lambda request: DEFAULT_ANSWER)
    port: int = 0
    record: bool = True

    def __post_init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[Failure] = []
        self.served = 0
        self.failed = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- control ----------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, *statuses: int, retry_after: float | None = None, hang_s: float = 0.0) -> None:
        """The next ``len(statuses)`` generation requests fail with these HTTP statuses (0: hang ``hang_s``, then
        answer normally, so that a client timeout fires first)."""
        with self._lock:
            self.failures += [Failure(status, retry_after, hang_s) for status in statuses]

    def start(self) -> StubOpenAI:
        if not self.port:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            backlog=4096,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="stub-openai", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the stub OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> StubOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the ASGI application ---------------------------------------------------------------------------------------

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path.endswith("/models") and scope["method"] == "GET":
            await _json(send, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            return
        kind = "chat" if path.endswith("/chat/completions") else "completions" if path.endswith("/completions") else ""
        if not kind or scope["method"] != "POST":
            await _json(send, 404, {"error": {"message": f"no route {path}"}})
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            await _json(send, 400, {"error": {"message": "body is not JSON"}})
            return
        with self._lock:
            failure = self.failures.pop(0) if self.failures else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.record:
                self.requests.append({"kind": kind, "body": request, "headers": headers, "at": time.monotonic()})
        try:
            if failure is not None and failure.hang_s:
                await asyncio.sleep(failure.hang_s)
            elif failure is not None:
                with self._lock:
                    self.failed += 1
                extra = [(b"retry-after", str(failure.retry_after).encode())] if failure.retry_after else []
                await _json(send, failure.status, {"error": {"message": "injected failure"}}, extra)
                return
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            await _json(send, 200, self._answer(kind, request, headers))
            with self._lock:
                self.served += 1
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, kind: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_tokens")
        choices = []
        completion_tokens = 0
        for index in range(n):
            reply = self.reply(StubRequest(kind=kind, body=body, index=index, headers=headers))
            if isinstance(reply, str):
                reply = Reply(reply)
            text, finish = reply.text, reply.finish_reason
            if isinstance(max_tokens, int) and words(text) > max_tokens:
                text, finish = " ".join(text.split()[:max_tokens]), "length"
            completion_tokens += words(text)
            if kind == "chat":
                choices.append(
                    {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                )
            else:
                choices.append({"index": index, "text": text, "finish_reason": finish, "logprobs": None})
        if kind == "chat":
            prompt_tokens = sum(words(str(m.get("content", ""))) for m in body.get("messages") or [])
        else:
            prompt_tokens = words(str(body.get("prompt", "")))
        return {
            "id": f"stub-{time.monotonic_ns()}",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": body.get("model", MODEL),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


async def _json(send, status: int, payload: dict[str, Any], extra_headers: list | None = None) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency_s", type=float, default=0.0)
    parser.add_argument("--answer", default=DEFAULT_ANSWER)
    parser.add_argument("--judge", action="store_true", help="Answer as the perfect judge of the synthetic task.")
    args = parser.parse_args()
    reply = judge_reply if args.judge else (lambda request: args.answer)
    stub = StubOpenAI(latency_s=args.latency_s, reply=reply, port=args.port, record=False)
    config = uvicorn.Config(
        stub.app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off", backlog=4096, interface="asgi3"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
