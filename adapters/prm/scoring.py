"""Scoring rollouts with a PRM: one forward pass per rollout reads the reward of every step, rollouts in batches.

The same code scores the held-out split while training and the server's rollouts in ``prm_label_worker``, so what
training reports is what the worker will post.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adapters.prm.errors import PRMError
from adapters.prm.format import EncodedRollout, FormatTokens, PRMConfig, StepTagFormat, encode_rollouts, format_tokens
from adapters.prm.modeling import StepHead, adapter_load, base_model_load, collate, dtype_resolve


class PRMScorer:
    """A model (a peft model or a merged one), its tokenizer and the step-tag format, ready to score."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        fmt: StepTagFormat,
        tokens: FormatTokens,
        max_length: int | None,
        batch_size: int,
        device: torch.device,
    ) -> None:
        if batch_size < 1:
            raise PRMError("--batch_size must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.tokens = tokens
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        probe = [*tokens.prefix_ids, *tokens.tag_ids, tokens.good_id, tokens.bad_id, *tokens.tag_ids]
        self.head = StepHead(model, good_id=tokens.good_id, bad_id=tokens.bad_id, probe_ids=probe)

    @classmethod
    def from_adapter_folder(
        cls,
        folder: Path,
        *,
        base_model: str | None,
        device: torch.device,
        dtype: str | None = "auto",
        batch_size: int = 8,
    ) -> PRMScorer:
        """Base model (``base_model``, or the one ``prm_config.json`` names) + the adapter in ``folder``, merged.

        ``PRMError`` when the base model's tokenizer reads the step-tag format with other token ids than the
        training one did (a different base model), or when the adapter does not fit the model.
        """
        config = PRMConfig.read(folder)
        fmt = config.format if config else StepTagFormat()
        name = base_model or (config.base_model if config else "")
        if not name:
            raise PRMError("the adapter does not name its base model: pass --base_model")
        model, tokenizer = base_model_load(name, device=device, dtype=dtype_resolve(dtype, device, training=False))
        try:
            tokens = format_tokens(fmt, tokenizer)
        except ValueError as exc:
            raise PRMError(f"base model {name}: {exc}") from exc
        if config is not None and (mismatch := config.token_mismatch(tokens)):
            raise PRMError(f"the tokenizer of {name} reads the step-tag format differently from training: {mismatch}")
        model = adapter_load(model, folder, merge=True)
        return cls(
            model,
            tokenizer,
            fmt=fmt,
            tokens=tokens,
            max_length=config.max_length if config else None,
            batch_size=batch_size,
            device=device,
        )

    def encode(self, rollouts: Sequence[tuple[str, Sequence[str]]]) -> list[EncodedRollout]:
        """Token ids of ``(prompt, steps)`` pairs, every step kept (the server wants one reward per step)."""
        return encode_rollouts(
            self.tokenizer, self.fmt, self.tokens, rollouts, max_length=self.max_length, keep_all_steps=True
        )

    def score(self, rollouts: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """For each ``(prompt, steps)``, the probability that each step is good, in order."""
        return self.score_encoded(self.encode(rollouts))

    def score_encoded(self, encoded: Sequence[EncodedRollout]) -> list[list[float]]:
        """Scores of already encoded rollouts, in their order. Batches hold rollouts of similar length (longest
        first), so little of a batch is padding."""
        results: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids), reverse=True)
        was_training = self.model.training
        if was_training:  # eval() walks every module: only when needed (it costs as much as a tiny model's pass)
            self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    batch = collate([encoded[i] for i in chunk], pad_id=self.tokens.pad_id, device=self.device)
                    probabilities = torch.sigmoid(self.head.margins(self.model, batch)).cpu().tolist()
                    offset = 0
                    for index, count in zip(chunk, batch.counts, strict=True):
                        results[index] = probabilities[offset : offset + count]
                        offset += count
        finally:
            if was_training:
                self.model.train()
        return results
