"""Generations from an OpenAI-compatible server (vLLM, llama.cpp, …) with the ``openai`` package's async client.

Two ways to ask, chosen by ``api``:

- ``chat``: the chat completions API. To continue a partial answer, the request ends with that partial answer as an
  assistant message and sets vLLM's ``continue_final_message=true`` and ``add_generation_prompt=false`` (through
  ``extra_body``): the server renders it with the model's chat template, without closing the assistant's turn.
- ``completions``: the completions API, for servers without those options (llama.cpp's, for one). The prompt is
  rendered here with the model's own chat template (transformers' ``apply_chat_template(...,
  continue_final_message=True)``, or ``add_generation_prompt=True`` for a fresh answer), from ``tokenizer``.

Every request is retried on timeouts, connection errors, 429 and 5xx (``rollouts.worker.retry``); the openai
client's own retries are off so that there is one policy. Token usage, finish reasons and latency come back with
every result.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx2
import openai

from prmsite.core.pretrained import pretrained_source
from rollouts.worker.retry import call_with_retries

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": "…"}

API_CHAT = "chat"
API_COMPLETIONS = "completions"
APIS = (API_CHAT, API_COMPLETIONS)


class ChatTemplate(Protocol):
    """What the completions API needs of a tokenizer (a ``transformers`` tokenizer is one)."""

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SamplingParams:
    """Generation parameters; ``None`` leaves the server's default. ``extra_body`` carries server-specific ones
    (vLLM: ``top_k``, ``min_p``, ``repetition_penalty``, …)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: Sequence[str] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str | None


@dataclass(frozen=True)
class Generation:
    """One request's answer: ``n`` choices, the request's token usage, its latency (the successful attempt's) and how
    many attempts it took."""

    choices: list[Choice]
    usage: Usage
    latency_s: float
    attempts: int


class LLMClient:
    """Async generations with retries; one HTTP connection pool sized for ``max_connections`` requests in flight."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        api: str = API_CHAT,
        tokenizer: ChatTemplate | None = None,
        max_connections: int = 128,
        request_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_attempts: int = 8,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
        if api == API_COMPLETIONS and tokenizer is None:
            raise ValueError("the completions API needs a tokenizer with the model's chat template (--tokenizer)")
        self.model = model
        self.api = api
        self.tokenizer = tokenizer
        self.max_attempts = max_attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        timeout = httpx2.Timeout(request_timeout_s, connect=connect_timeout_s)
        limits = httpx2.Limits(max_connections=max_connections + 8, max_keepalive_connections=max_connections + 8)
        http_client = _http_client(timeout=timeout, limits=limits)
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout, http_client=http_client
        )
        self.retries = 0

    async def aclose(self) -> None:
        await self._client.close()

    async def list_models(self) -> list[str]:
        page = await self._client.models.list()
        return [model.id for model in page.data]

    def render_prompt(self, prompt: str, partial: str = "", *, messages: Sequence[Message] | None = None) -> str:
        """The completions API's prompt: the model's chat template applied to the user's message (or to the
        conversation ``messages``) and, when there is one, the partial answer to continue."""
        assert self.tokenizer is not None
        conversation = _conversation(prompt, partial, messages)
        rendered = self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=not partial, continue_final_message=bool(partial)
        )
        return str(rendered)

    async def generate(
        self,
        *,
        prompt: str = "",
        partial: str = "",
        n: int = 1,
        params: SamplingParams,
        messages: Sequence[Message] | None = None,
    ) -> Generation:
        """``n`` answers to ``prompt`` (one user message) or to the conversation ``messages`` (``{"role",
        "content"}`` dicts: a system message, earlier turns), each continuing ``partial`` (the start of the
        assistant's answer) when given.

        A choice's text is what the model added (without ``partial``); an empty answer is an empty string.
        """
        request = self._request(prompt=prompt, partial=partial, n=n, params=params, messages=messages)
        create = self._client.chat.completions.create if self.api == API_CHAT else self._client.completions.create
        started: list[float] = []

        async def attempt():
            started.append(time.monotonic())
            return await create(**request)

        def on_retry(exc: BaseException, attempt_number: int) -> None:
            self.retries += 1

        response, attempts = await call_with_retries(
            attempt,
            max_attempts=self.max_attempts,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
            on_retry=on_retry,
        )
        latency = time.monotonic() - started[-1]
        choices = sorted(response.choices, key=lambda c: c.index)
        if self.api == API_CHAT:
            texts = [Choice(c.message.content or "", c.finish_reason) for c in choices]
        else:
            texts = [Choice(c.text or "", c.finish_reason) for c in choices]
        usage = response.usage
        return Generation(
            choices=texts,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            latency_s=latency,
            attempts=attempts,
        )

    def _request(
        self, *, prompt: str, partial: str, n: int, params: SamplingParams, messages: Sequence[Message] | None = None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model}
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(params, name)
            if value is not None:
                request[name] = value
        if params.stop:
            request["stop"] = list(params.stop)
        if n != 1:
            request["n"] = n
        extra_body = dict(params.extra_body)
        if self.api == API_CHAT:
            conversation = _conversation(prompt, partial, messages)
            if partial:
                extra_body.update(continue_final_message=True, add_generation_prompt=False)
            # The messages travel in extra_body, which openai merges into the JSON body as it is: the same request,
            # without the typed-parameter transform that costs about 1 ms of CPU per request (a third of the
            # worker's CPU at 500 requests/s). Plain role/content strings need no transforming.
            request["messages"] = []
            extra_body["messages"] = conversation
        else:
            request["prompt"] = self.render_prompt(prompt, partial, messages=messages)
        if extra_body:
            request["extra_body"] = extra_body
        return request


def _conversation(prompt: str, partial: str, messages: Sequence[Message] | None) -> list[dict[str, str]]:
    """The messages of a request: ``messages`` (or one user message, ``prompt``), then the partial answer."""
    if messages is not None and prompt:
        raise ValueError("pass prompt or messages, not both")
    conversation = [{"role": m["role"], "content": m["content"]} for m in messages] if messages is not None else []
    if messages is None:
        conversation.append({"role": "user", "content": prompt})
    if partial:
        conversation.append({"role": "assistant", "content": partial})
    return conversation


def _http_client(*, timeout: httpx2.Timeout, limits: httpx2.Limits) -> httpx2.AsyncClient:
    """openai's aiohttp transport (``openai.DefaultAioHttpClient``) when aiohttp is installed: with hundreds of
    requests in flight, httpx's own connection pool spends more CPU choosing a connection (it checks every one of them
    per request) than the rest of the worker together. Else openai's default httpx client."""
    try:
        import aiohttp  # noqa: F401, PLC0415 (deferred: an optional library, probed only when a client is made)

        return openai.DefaultAioHttpClient(timeout=timeout, limits=limits)
    except (ImportError, RuntimeError):
        return openai.DefaultAsyncHttpxClient(timeout=timeout, limits=limits)


def load_tokenizer(name_or_path: str) -> ChatTemplate:
    """The tokenizer (with its chat template) of a hub model name, a local folder or a ``.gguf`` file (the model a
    llama.cpp server serves: its chat template comes from the file)."""
    from transformers import AutoTokenizer  # noqa: PLC0415 (deferred: transformers is heavy)

    source, extra = pretrained_source(name_or_path, what="--tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(source, **extra)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"tokenizer {name_or_path!r} has no chat template; the completions API needs one")
    return tokenizer
