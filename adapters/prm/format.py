"""The step-tag format: how a (prompt, steps) rollout becomes the token ids a PRM reads. Pure: no torch, no Django.

A rollout is laid out as ``[special prefix] prompt+separator step_1 TAG step_2 TAG … step_n TAG`` and the reward of
step k is read at the *last token of the k-th tag*: the model's next-token logits there, restricted to the good and
bad tokens (``+`` / ``-``). The pieces are tokenized separately and their ids concatenated, so the tag positions are
known by construction — never searched for — and a tag may be any string, one token or several (``" ки"`` is one
token in Mistral's vocabulary and two in SmolLM2's). The good and bad tokens must each be a single token.

Truncation to ``max_length`` keeps the end of the prompt (the question, nearest the steps), at least half the budget
of it when the prompt is that long; training then drops the trailing steps that do not fit (their labels go with
them), while scoring keeps every step, because the server wants one reward per step.

The format travels with the adapter in ``prm_config.json`` (beside ``adapter_config.json``), with the token ids it
resolved to, so a scorer can refuse a base model whose tokenizer reads the format differently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adapters.validation.folder import PRM_CONFIG_NAME

PRM_CONFIG_FORMAT_VERSION = 1

DEFAULT_STEP_TAG = " ки"  # Math-Shepherd's step tag
DEFAULT_GOOD_TOKEN = "+"  # noqa: S105 - a vocabulary token, not a secret
DEFAULT_BAD_TOKEN = "-"  # noqa: S105
DEFAULT_PROMPT_SEPARATOR = "\n"

EMPTY_TAG = "The step tag {tag!r} encodes to no token at all with this tokenizer."
NOT_ONE_TOKEN = "The {role} token {text!r} is {count} tokens with this tokenizer; it must be exactly one."  # noqa: S105
SAME_TOKENS = "The good and bad tokens {good!r} and {bad!r} are the same token id {id} with this tokenizer."


class Tokenizer(Protocol):
    """What the format needs of a (Hugging Face) tokenizer."""

    pad_token_id: int | None
    eos_token_id: int | None

    def __call__(self, text: Any, *, add_special_tokens: bool = ...) -> Any: ...


@dataclass(frozen=True)
class StepTagFormat:
    """The strings of the format (what a user chooses)."""

    step_tag: str = DEFAULT_STEP_TAG
    good_token: str = DEFAULT_GOOD_TOKEN
    bad_token: str = DEFAULT_BAD_TOKEN
    prompt_separator: str = DEFAULT_PROMPT_SEPARATOR

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepTagFormat:
        known = {name: str(data[name]) for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass(frozen=True)
class FormatTokens:
    """The format resolved against one tokenizer: the ids it reads and writes."""

    tag_ids: tuple[int, ...]
    good_id: int
    bad_id: int
    prefix_ids: tuple[int, ...]  # the special tokens the tokenizer puts before a text (BOS), if any
    pad_id: int

    def as_dict(self) -> dict[str, Any]:
        return {"tag_ids": list(self.tag_ids), "good_id": self.good_id, "bad_id": self.bad_id}


def token_ids(tokenizer: Tokenizer, texts: list[str], *, add_special_tokens: bool = False) -> list[list[int]]:
    """Token ids of ``texts``. A fast tokenizer's Rust backend is called directly when it neither pads nor truncates:
    the same ids, without the per-text Python objects (offsets, masks) ``tokenizer(texts)`` builds, which cost ten
    times the tokenization itself on short steps."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if callable(encode) and backend.padding is None and backend.truncation is None:
        return [encoding.ids for encoding in encode(texts, add_special_tokens=add_special_tokens)]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]]


def _special_prefix(with_specials: list[int], without: list[int]) -> tuple[int, ...]:
    """The ids the tokenizer adds before a text: what precedes the plain ids inside the ids with special tokens."""
    if not without:
        return tuple(with_specials)
    for start in range(len(with_specials) - len(without) + 1):
        if with_specials[start : start + len(without)] == without:
            return tuple(with_specials[:start])
    return ()


def format_tokens(fmt: StepTagFormat, tokenizer: Tokenizer) -> FormatTokens:
    """Resolve ``fmt`` against ``tokenizer``; ``ValueError`` when the tag is empty or +/- are not single tokens."""
    tag, good, bad = token_ids(tokenizer, [fmt.step_tag, fmt.good_token, fmt.bad_token])
    if not tag:
        raise ValueError(EMPTY_TAG.format(tag=fmt.step_tag))
    for role, text, ids in (("good", fmt.good_token, good), ("bad", fmt.bad_token, bad)):
        if len(ids) != 1:
            raise ValueError(NOT_ONE_TOKEN.format(role=role, text=text, count=len(ids)))
    if good[0] == bad[0]:
        raise ValueError(SAME_TOKENS.format(good=fmt.good_token, bad=fmt.bad_token, id=good[0]))
    probe = "step"
    (with_specials,) = token_ids(tokenizer, [probe], add_special_tokens=True)
    (without,) = token_ids(tokenizer, [probe])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return FormatTokens(
        tag_ids=tuple(tag),
        good_id=good[0],
        bad_id=bad[0],
        prefix_ids=_special_prefix(with_specials, without),
        pad_id=pad if pad is not None else 0,
    )


@dataclass(frozen=True)
class EncodedRollout:
    """Token ids of one rollout and where its step rewards are read."""

    input_ids: tuple[int, ...]
    tag_positions: tuple[int, ...]  # one per kept step, in order; the last token of that step's tag
    steps_dropped: int = 0  # trailing steps cut by max_length (training only)
    prompt_tokens_dropped: int = 0


def assemble(
    *,
    prefix_ids: Sequence[int],
    prompt_ids: Sequence[int],
    step_ids: Sequence[Sequence[int]],
    tag_ids: Sequence[int],
    max_length: int | None,
    keep_all_steps: bool,
) -> EncodedRollout:
    """Lay out one rollout (see the module docstring for the truncation rule).

    ``keep_all_steps`` (scoring) keeps every step even past ``max_length``; otherwise (training) the trailing steps
    that do not fit are dropped, which may leave none.
    """
    if not tag_ids:
        raise ValueError("the step tag has no token")
    steps_total = sum(len(ids) + len(tag_ids) for ids in step_ids)
    prompt = list(prompt_ids)
    prompt_dropped = 0
    if max_length is not None and len(prefix_ids) + len(prompt) + steps_total > max_length:
        keep = min(len(prompt), max(max_length - len(prefix_ids) - steps_total, max_length // 2))
        prompt_dropped = len(prompt) - keep
        prompt = prompt[prompt_dropped:]
    input_ids = [*prefix_ids, *prompt]
    positions: list[int] = []
    kept = 0
    for ids in step_ids:
        if not keep_all_steps and max_length is not None and len(input_ids) + len(ids) + len(tag_ids) > max_length:
            break
        input_ids += ids
        input_ids += tag_ids
        positions.append(len(input_ids) - 1)
        kept += 1
    return EncodedRollout(
        input_ids=tuple(input_ids),
        tag_positions=tuple(positions),
        steps_dropped=len(step_ids) - kept,
        prompt_tokens_dropped=prompt_dropped,
    )


def encode_rollouts(
    tokenizer: Tokenizer,
    fmt: StepTagFormat,
    tokens: FormatTokens,
    rollouts: Sequence[tuple[str, Sequence[str]]],
    *,
    max_length: int | None,
    keep_all_steps: bool,
) -> list[EncodedRollout]:
    """Encode ``(prompt, steps)`` pairs with one batched tokenizer call."""
    texts: list[str] = []
    for prompt, steps in rollouts:
        texts.append(prompt + fmt.prompt_separator)
        texts.extend(steps)
    ids = token_ids(tokenizer, texts) if texts else []
    encoded: list[EncodedRollout] = []
    cursor = 0
    for _prompt, steps in rollouts:
        prompt_ids = ids[cursor]
        step_ids = ids[cursor + 1 : cursor + 1 + len(steps)]
        cursor += 1 + len(steps)
        encoded.append(
            assemble(
                prefix_ids=tokens.prefix_ids,
                prompt_ids=prompt_ids,
                step_ids=step_ids,
                tag_ids=tokens.tag_ids,
                max_length=max_length,
                keep_all_steps=keep_all_steps,
            )
        )
    return encoded


@dataclass(frozen=True)
class PRMConfig:
    """``prm_config.json``: what a scorer needs besides the peft adapter to read rewards the way they were trained."""

    format: StepTagFormat
    token_ids: dict[str, Any]  # FormatTokens.as_dict() of the training tokenizer
    base_model: str
    max_length: int | None
    prm_version: str | None = None
    training: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prm_config_format_version": PRM_CONFIG_FORMAT_VERSION,
            "format": self.format.as_dict(),
            "token_ids": self.token_ids,
            "base_model": self.base_model,
            "max_length": self.max_length,
            "prm_version": self.prm_version,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PRMConfig:
        max_length = data.get("max_length")
        return cls(
            format=StepTagFormat.from_dict(data.get("format") or {}),
            token_ids=dict(data.get("token_ids") or {}),
            base_model=str(data.get("base_model") or ""),
            max_length=int(max_length) if max_length is not None else None,
            prm_version=data.get("prm_version"),
            training=dict(data.get("training") or {}),
        )

    def write(self, folder: Path) -> Path:
        path = Path(folder) / PRM_CONFIG_NAME
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> PRMConfig | None:
        """The config in ``folder``, or None when the adapter has none (then the defaults apply)."""
        path = Path(folder) / PRM_CONFIG_NAME
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{PRM_CONFIG_NAME} is not a JSON object")
        return cls.from_dict(data)

    def token_mismatch(self, tokens: FormatTokens) -> str | None:
        """Why ``tokens`` (resolved with another tokenizer) differ from the training ones; None when they agree."""
        if not self.token_ids:
            return None
        now = tokens.as_dict()
        differing = [
            key for key in ("tag_ids", "good_id", "bad_id") if key in self.token_ids and self.token_ids[key] != now[key]
        ]
        if not differing:
            return None
        return ", ".join(f"{key} {self.token_ids[key]} at training, {now[key]} now" for key in differing)
