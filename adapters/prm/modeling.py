"""Loading a base causal LM, putting LoRA on it, and the batched forward pass that reads every step tag.

Base models come from a hub name, a local ``save_pretrained`` folder or a ``.gguf`` file (transformers dequantizes
it: ``from_pretrained(folder, gguf_file=name)``); a ``.gguf`` name that is not a local file is read as
``owner/repo/file.gguf`` on the hub. Weights are read from safetensors (or GGUF) only: ``use_safetensors=True``
refuses a base model that ships pickled weights, and remote code is never trusted.

The step-tag forward pass runs the decoder once per batch and applies the LM head only at the tag positions, to the
two rows of the good and bad tokens: a full LM head over every position costs ``tokens x vocab`` (49k to 150k)
multiply-adds per hidden unit for two numbers per step. The shortcut is checked once per model against the model's
own ``logits`` (``StepHead``); a model whose logits are not ``lm_head(decoder(...))`` falls back to the full forward.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adapters.prm.errors import PRMError
from adapters.prm.format import EncodedRollout
from prmsite.core.pretrained import pretrained_source

# peft calls transformers' deprecated `is_gradient_checkpointing` when it wraps a model: the libraries' business, not
# the user's; every train_prm and prm_label_worker run printed it.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

logger = logging.getLogger(__name__)

LORA_TARGETS_ALL_LINEAR = "all-linear"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_resolve(name: str | None) -> torch.device:
    """``auto`` (or None): the first GPU when there is one, else the CPU; ``cuda`` without a GPU is an error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PRMError(f"--device {name!r} is no torch device (cpu, cuda, cuda:1, …)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PRMError(f"--device {name}: no CUDA GPU is visible to torch here")
    return device


def dtype_resolve(name: str | None, device: torch.device, *, training: bool) -> torch.dtype:
    """``auto``: float32 on the CPU; on a GPU bfloat16 where supported, else float32 to train and float16 to score."""
    if name not in (None, "", "auto"):
        if name not in DTYPES:
            raise PRMError(f"--dtype {name!r}: choose auto, {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32 if training else torch.float16


def base_model_source(base_model: str) -> tuple[str, dict[str, str]]:
    """Where ``from_pretrained`` reads ``base_model`` from: (name or folder, extra keyword arguments)."""
    try:
        return pretrained_source(base_model, what="--base_model")
    except ValueError as exc:
        raise PRMError(str(exc)) from exc


def base_model_load(base_model: str, *, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """(causal LM on ``device`` in ``dtype``, its tokenizer). ``PRMError`` when it cannot be loaded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 (deferred: transformers is heavy)

    source, extra = base_model_source(base_model)
    weights_kwargs: dict[str, Any] = {} if "gguf_file" in extra else {"use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **weights_kwargs, **extra)
    except (OSError, ValueError, ImportError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PRMError(f"cannot load base model {base_model!r}: {first_line}") from exc
    model.config.use_cache = False
    return model.to(device), tokenizer


def lora_targets(value: str | Sequence[str]) -> str | list[str]:
    """``all-linear`` (peft: every linear layer but the output head) or a list of module names."""
    if isinstance(value, str):
        if value.strip() == LORA_TARGETS_ALL_LINEAR:
            return LORA_TARGETS_ALL_LINEAR
        value = value.split(",")
    names = [name.strip() for name in value if name.strip()]
    if not names:
        raise PRMError("--lora_target_modules names no module")
    return names


def lora_attach(
    model: Any,
    *,
    r: int,
    alpha: float,
    dropout: float,
    target_modules: str | Sequence[str],
    base_model: str,
    seed: int,
) -> Any:
    """``model`` wrapped by peft with a fresh LoRA adapter (B = 0: it starts as the base model)."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415 (deferred: peft pulls in torch)

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_targets(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:
        raise PRMError(f"cannot put LoRA on {base_model}: {exc}") from exc
    # What the adapter was trained on, as the user named it (a hub name, a folder, a .gguf path).
    peft_model.peft_config["default"].base_model_name_or_path = base_model
    return peft_model


def adapter_load(model: Any, folder: Path, *, merge: bool = True) -> Any:
    """The base ``model`` with the peft adapter saved in ``folder`` (``adapter_model.safetensors``), merged into its
    weights for scoring unless ``merge`` is false."""
    from peft import PeftModel  # noqa: PLC0415 (deferred: peft pulls in torch)

    weights = Path(folder) / "adapter_model.safetensors"
    if not weights.is_file():
        raise PRMError(f"no adapter_model.safetensors in {folder}")
    try:
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise PRMError(f"the adapter does not fit this base model: {exc}") from exc
    return peft_model.merge_and_unload() if merge else peft_model


def causal_lm(model: Any) -> Any:
    """The transformers model under a peft wrapper (LoRA layers are injected in place), or ``model`` itself."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


@dataclass(frozen=True)
class StepBatch:
    """Right-padded token ids of some rollouts and the (row, column) of every step tag, rollout by rollout."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    counts: tuple[int, ...]  # steps per rollout, to split the flat step outputs back


def collate(encoded: Sequence[EncodedRollout], *, pad_id: int, device: torch.device) -> StepBatch:
    width = max(len(e.input_ids) for e in encoded)
    padded: list[list[int]] = []
    masks: list[list[int]] = []
    rows: list[int] = []
    cols: list[int] = []
    for index, item in enumerate(encoded):
        missing = width - len(item.input_ids)
        padded.append([*item.input_ids, *([pad_id] * missing)])
        masks.append([1] * len(item.input_ids) + [0] * missing)
        rows += [index] * len(item.tag_positions)
        cols += item.tag_positions
    return StepBatch(
        input_ids=torch.tensor(padded, dtype=torch.long).to(device, non_blocking=True),
        attention_mask=torch.tensor(masks, dtype=torch.long).to(device, non_blocking=True),
        rows=torch.tensor(rows, dtype=torch.long, device=device),
        cols=torch.tensor(cols, dtype=torch.long, device=device),
        counts=tuple(len(e.tag_positions) for e in encoded),
    )


class StepHead:
    """Reads ``logit(good) - logit(bad)`` at the step tags of a batch: ``sigmoid`` of it is the step's reward.

    Built once per model: it checks the decoder-plus-two-rows shortcut against the model's full logits on a probe
    and keeps the full forward pass for models where they differ.
    """

    def __init__(self, model: Any, *, good_id: int, bad_id: int, probe_ids: Sequence[int]) -> None:
        self.good_id = good_id
        self.bad_id = bad_id
        self.headless = False
        self.headless = self._shortcut_agrees(model, list(probe_ids))
        if not self.headless:
            logger.info("step head: the decoder + LM head shortcut does not match this model; using full logits")

    def _shortcut_agrees(self, model: Any, probe_ids: list[int]) -> bool:
        lm = causal_lm(model)
        device = next(lm.parameters()).device
        probe = torch.tensor([probe_ids], dtype=torch.long, device=device)
        mask = torch.ones_like(probe)
        rows = torch.zeros(len(probe_ids), dtype=torch.long, device=device)
        cols = torch.arange(len(probe_ids), device=device)
        was_training = lm.training
        lm.eval()
        try:
            with torch.no_grad():
                full = self._full(lm, probe, mask, rows, cols)
                try:
                    short = self._headless(lm, probe, mask, rows, cols)
                except Exception as exc:  # a model without a usable get_decoder()/get_output_embeddings()
                    logger.debug("step head shortcut failed: %s", exc)
                    return False
        finally:
            lm.train(was_training)
        tolerance = 1e-3 if full.dtype == torch.float32 else 5e-2
        scale = max(1.0, float(full.abs().max()))
        return bool(short.shape == full.shape and (short - full).abs().max() <= tolerance * scale)

    def _full(self, lm: Any, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        logits = lm(input_ids=ids, attention_mask=mask, use_cache=False).logits[rows, cols]
        return logits[:, self.good_id] - logits[:, self.bad_id]

    def _headless(self, lm: Any, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        decoder = lm.get_decoder()
        if decoder is lm:
            raise TypeError("no separate decoder")
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False)[0][rows, cols]
        head = lm.get_output_embeddings()
        pair = [self.good_id, self.bad_id]
        if type(head) is nn.Linear:
            bias = head.bias[pair] if head.bias is not None else None
            logits = F.linear(hidden, head.weight[pair], bias)
        else:  # a wrapped head (LoRA on lm_head, …): run it whole
            logits = head(hidden)[:, pair]
        cap = getattr(lm.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits[:, 0] - logits[:, 1]

    def margins(self, model: Any, batch: StepBatch) -> torch.Tensor:
        """``logit(good) - logit(bad)`` of every step tag of ``batch``, flat, rollout after rollout (float32)."""
        lm = causal_lm(model)
        forward = self._headless if self.headless else self._full
        return forward(lm, batch.input_ids, batch.attention_mask, batch.rows, batch.cols).float()


def activation_checkpointing_enable(model: Any) -> None:
    """Trade compute for memory on long sequences (non-reentrant, so frozen embeddings need no grad hook)."""
    lm = causal_lm(model)
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
