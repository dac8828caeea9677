"""From a generation to the body of ``POST /rollout``: steps, prediction or answer, token usage, finish reason,
latency.

Steps: the prefix the model continued keeps its steps as they were (they are nodes of the tree already) and what
the model added is split with ``reasoning_delimiter_pattern`` (``prmsite.core.steps.split_steps``, lossless), so
``"".join(reasoning)`` is exactly the answer. For the ``label`` answer kind (the default) the prediction is parsed
from the whole answer with ``prediction_pattern`` (``parse_prediction``: the last match; none, or not an integer,
gives ``null``) and sent with the ground truth, as the specification's body has them. For the other kinds
(``number``, ``math``, ``text``) the body carries ``answer`` instead, the final answer as text
(``prmsite.core.grading.extract_answer``: the last match of the pattern, or the last ``\\boxed{…}`` for ``math``;
``""`` when the response states none, which the server grades "not correct" with the reason "no answer": an
``answer`` of null would make the body a label rollout lacking its fields), and no ``prediction`` or
``ground_truth``: the server grades it against the reference answer on the tree's root.

An empty answer is kept as such (``reasoning`` ``[""]`` for a fresh answer, the prefix alone for a continuation,
``prediction`` null), and so is one cut off by ``max_tokens`` (``finish_reason`` ``"length"``): both are what the
model did, and count as wrong. A NUL the model wrote (or a lone surrogate) is replaced by U+FFFD, which databases
store, and the rollout carries ``unstorable_text_replaced: true``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from prmsite.core.answers import parse_prediction
from prmsite.core.grading import AnswerSpec, extract_answer
from prmsite.core.steps import split_steps
from rollouts.worker.llm import Usage
from rollouts.worker.storable import storable

FINISH_LENGTH = "length"
# Extra field of a rollout whose text held characters no database stores (replaced by U+FFFD before sending).
UNSTORABLE_REPLACED = "unstorable_text_replaced"


def split_usage(usage: Usage, texts: Sequence[str]) -> list[Usage]:
    """A request's token usage shared among its ``n`` answers, so that the shares add up to the request's usage:
    the prompt evenly (it is processed once for all of them), the completion tokens in proportion to each answer's
    length in characters (servers report one total per request)."""
    n = len(texts)
    if n == 0:
        return []
    if n == 1:
        return [usage]
    prompt = _apportion(usage.prompt_tokens, [1] * n)
    completion = _apportion(usage.completion_tokens, [max(1, len(t)) for t in texts])
    return [Usage(prompt_tokens=p, completion_tokens=c) for p, c in zip(prompt, completion, strict=True)]


def _apportion(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainders), summing exactly to ``total``."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def rollout_steps(prefix: Sequence[str], continuation: str, delimiter_pattern: str) -> list[str]:
    steps = [*prefix, *split_steps(continuation, delimiter_pattern)]
    return steps or [""]


def rollout_payload(
    *,
    model: str,
    worker: str,
    example: str,
    ground_truth: int | None,
    prefix: Sequence[str],
    continuation: str,
    delimiter_pattern: str,
    prediction_pattern: str,
    usage: Usage,
    finish_reason: str | None,
    latency_s: float,
    idempotency_key: str,
    extra: dict[str, Any] | None = None,
    answer_spec: AnswerSpec | None = None,
) -> dict[str, Any]:
    """The body of ``POST /rollout`` for one generated answer (see the module docstring; ``answer_spec`` ``None`` is
    the ``label`` kind). Its text is storable: a NUL or lone surrogate anywhere in it is replaced
    (``rollouts.worker.storable``), and the body then says so (``UNSTORABLE_REPLACED``: true)."""
    response = "".join(prefix) + continuation
    if answer_spec is None or answer_spec.kind == "label":
        stated: dict[str, Any] = {
            "prediction": parse_prediction(response, prediction_pattern),
            "ground_truth": ground_truth,
        }
    else:
        stated = {"answer": extract_answer(response, answer_spec, prediction_pattern or None) or ""}
    payload: dict[str, Any] = {
        "model": model,
        "example": example,
        "reasoning": rollout_steps(prefix, continuation, delimiter_pattern),
        **stated,
        "worker": worker,
        "idempotency_key": idempotency_key,
        "usage": usage.as_dict(),
        "finish_reason": finish_reason,
        "latency_s": round(latency_s, 4),
    }
    if not continuation.strip():
        payload["empty"] = True
    if extra:
        payload.update(extra)
    cleaned = storable(payload)
    if cleaned is not payload:
        cleaned[UNSTORABLE_REPLACED] = True
    return cleaned


def request_seed(base: int | None, key: str) -> int | None:
    """A per-request seed derived from ``--seed`` and the request's identity: reproducible, yet different for every
    repeat (one seed for all of them would make vLLM answer the same prompt identically)."""
    if base is None:
        return None
    digest = int.from_bytes(hashlib.sha256(f"{base}:{key}".encode()).digest()[:4], "big")
    return digest % (2**31 - 1)
