"""Training a PRM: a LoRA adapter (peft) on a causal LM, cross-entropy on the good/bad token probabilities at every
step tag, with hard or soft targets.

The loss of a step is ``BCE(sigmoid(logit_good - logit_bad), target) * weight``, which is the cross-entropy of the
two-way softmax over the ``+`` and ``-`` tokens that scoring reads; a batch's loss is the weighted mean over its steps.
Soft targets (Monte-Carlo values) are fitted as they are; ``hard_targets`` rounds them at 0.5 first. With
``weight_by_confidence`` a step's loss is also multiplied by its confidence (``adapters.prm.examples``: one minus the
width of its value's 95% interval, 1 without completions), scaled over the training steps to average 1, and a batch's
loss is ``sum(weight * confidence * loss) / sum(weight)``: a step of confidence 0 moves nothing. The held-out
split (whole prompts, ``eval_fraction``) is scored with the worker's scoring code before training, after every epoch
and at the end: loss, MAE, step accuracy and ProcessBench F1 (``adapters.prm.metrics``).

The adapter is saved with ``save_pretrained`` (safetensors), with ``prm_config.json`` (the step-tag format, the token
ids it resolved to, ``max_length``, the metrics), into ``output_dir`` at once (written beside it and renamed), and
zipped beside the folder as ``<output_dir>.zip`` for ``POST /prm_adapter``.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn.functional as F
from tqdm import tqdm

from adapters.prm.archive import adapter_zip_write, sha256_file
from adapters.prm.errors import PRMError
from adapters.prm.examples import (
    StepExample,
    confidence_scale,
    split_by_prompt,
)
from adapters.prm.format import EncodedRollout, PRMConfig, StepTagFormat, encode_rollouts, format_tokens
from adapters.prm.metrics import prm_evaluate
from adapters.prm.modeling import (
    activation_checkpointing_enable,
    base_model_load,
    collate,
    device_resolve,
    dtype_resolve,
    lora_attach,
)
from adapters.prm.scoring import PRMScorer
from prmsite.core.cli import FLAG_AT_LEAST_ONE

logger = logging.getLogger(__name__)

LR_SCHEDULERS = ("linear", "cosine", "constant")


@dataclass
class TrainSettings:
    """Everything ``train_prm`` takes besides the data. Defaults suit a small model on one GPU."""

    base_model: str
    prm_version: str
    output_dir: Path
    epochs: int = 1
    lr: float = 1e-4
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: str = "all-linear"
    batch_size: int = 8
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    max_length: int = 1024
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    eval_fraction: float = 0.1
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    neutral_weight: float = 0.0
    hard_targets: bool = False
    weight_by_confidence: bool = False
    format: StepTagFormat = field(default_factory=StepTagFormat)
    overwrite: bool = False

    def check(self) -> None:
        """``PRMError`` for a value no run could use."""
        problems = []
        if not self.prm_version:
            problems.append("--prm_version is empty")
        for name in ("epochs", "lora_r", "batch_size", "gradient_accumulation_steps", "max_length"):
            if getattr(self, name) < 1:
                problems.append(FLAG_AT_LEAST_ONE.format(flag=name))
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            problems.append(FLAG_AT_LEAST_ONE.format(flag="eval_batch_size"))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append("--lr must be a positive number")
        if not 0.0 <= self.eval_fraction < 1.0:
            problems.append("--eval_fraction must be in [0, 1)")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            problems.append("--warmup_ratio must be in [0, 1]")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append("--lora_dropout must be in [0, 1)")
        if self.neutral_weight < 0 or not math.isfinite(self.neutral_weight):
            problems.append("--neutral_weight must be 0 or more")
        if self.lr_scheduler not in LR_SCHEDULERS:
            problems.append(f"--lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        if problems:
            raise PRMError("; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        data["format"] = self.format.as_dict()
        return data


@dataclass(frozen=True)
class TrainItem:
    encoded: EncodedRollout
    targets: tuple[float, ...]
    weights: tuple[float, ...]
    confidence: tuple[float, ...]  # multiplies each step's loss, on top of its weight (1 without confidences)


@dataclass
class TrainResult:
    output_dir: Path
    zip_path: Path
    sha256: str
    size: int
    metrics: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.output_dir),
            "zip": str(self.zip_path),
            "sha256": self.sha256,
            "size": self.size,
            **self.metrics,
        }


def train_items(
    examples: Sequence[StepExample], encoded: Sequence[EncodedRollout], *, weight_by_confidence: bool = False
) -> tuple[list[TrainItem], dict[str, Any]]:
    """Pair each encoded example with the targets of the steps it kept; drop the ones with nothing left to learn.

    With ``weight_by_confidence``, the kept steps' confidences are scaled by ``confidence_scale`` (their weighted mean
    over every kept trained step becomes 1); the stats then carry their mean before scaling (``confidence_mean``).
    Without it every confidence is 1."""
    items = []
    stats: dict[str, Any] = {"steps_truncated": 0, "examples_truncated_away": 0}
    for example, enc in zip(examples, encoded, strict=True):
        kept = len(enc.tag_positions)
        stats["steps_truncated"] += enc.steps_dropped
        weights = example.weights[:kept]
        if not any(w > 0 for w in weights):
            stats["examples_truncated_away"] += 1
            continue
        confidence = example.confidences()[:kept] if weight_by_confidence else (1.0,) * kept
        items.append(TrainItem(encoded=enc, targets=example.targets[:kept], weights=weights, confidence=confidence))
    if weight_by_confidence and items:
        try:
            scale = confidence_scale(
                (w for item in items for w in item.weights), (c for item in items for c in item.confidence)
            )
        except ValueError as exc:
            raise PRMError(str(exc)) from exc
        stats["confidence_mean"] = 1.0 / scale
        items = [replace(item, confidence=tuple(c * scale for c in item.confidence)) for item in items]
    return items, stats


def lr_lambda(kind: str, *, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The factor on the learning rate at optimizer step ``step`` (0-based): linear warm-up, then ``kind``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)

    return factor


def _folder_replace(source: Path, target: Path) -> None:
    """Put the finished folder ``source`` at ``target``; an old ``target`` is removed only once the new one is in."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(backup)
    source.rename(target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def prm_train(
    settings: TrainSettings,
    examples: Sequence[StepExample],
    *,
    progress_file: TextIO | None = None,
    log: Callable[[str], None] = logger.info,
) -> TrainResult:
    """Train a LoRA PRM on ``examples`` (split into train and held out), save and zip it. See the module docstring."""
    settings.check()
    output_dir = Path(settings.output_dir).expanduser().resolve()
    if output_dir.exists() and not settings.overwrite and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise PRMError(f"{output_dir} exists and is not empty; pass --overwrite or another --output_dir")
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    device = device_resolve(settings.device)
    dtype = dtype_resolve(settings.dtype, device, training=True)

    train_examples, eval_examples = split_by_prompt(examples, eval_fraction=settings.eval_fraction, seed=settings.seed)
    if settings.hard_targets:
        train_examples = [e.hardened() for e in train_examples]
    if not train_examples:
        raise PRMError("no training example (every prompt went to the held-out split, or there is no data)")

    model, tokenizer = base_model_load(settings.base_model, device=device, dtype=dtype)
    try:
        tokens = format_tokens(settings.format, tokenizer)
    except ValueError as exc:
        raise PRMError(f"base model {settings.base_model}: {exc}") from exc
    encoded = encode_rollouts(
        tokenizer,
        settings.format,
        tokens,
        [(e.prompt, e.steps) for e in train_examples],
        max_length=settings.max_length,
        keep_all_steps=False,
    )
    items, truncation = train_items(train_examples, encoded, weight_by_confidence=settings.weight_by_confidence)
    if not items:
        raise PRMError(f"no training example keeps a labelled step within --max_length {settings.max_length}")
    if "confidence_mean" in truncation:
        log(f"steps weighted by confidence: mean {truncation['confidence_mean']:.3f} before scaling to 1")

    model = lora_attach(
        model,
        r=settings.lora_r,
        alpha=settings.lora_alpha,
        dropout=settings.lora_dropout,
        target_modules=settings.lora_target_modules,
        base_model=settings.base_model,
        seed=settings.seed,
    )
    if settings.gradient_checkpointing:
        activation_checkpointing_enable(model)
    scorer = PRMScorer(
        model,
        tokenizer,
        fmt=settings.format,
        tokens=tokens,
        max_length=settings.max_length,
        batch_size=settings.eval_batch_size or settings.batch_size,
        device=device,
    )
    eval_encoded = scorer.encode([(e.prompt, e.steps) for e in eval_examples])

    def evaluate() -> dict[str, Any] | None:
        if not eval_examples:
            return None
        return prm_evaluate(eval_examples, scorer.score_encoded(eval_encoded))

    eval_before = evaluate()
    if eval_before:
        log(f"held out before training: {metrics_line(eval_before)}")

    batches_per_epoch = math.ceil(len(items) / settings.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / settings.gradient_accumulation_steps)
    trainer = StepTrainer(scorer, settings, total_steps=steps_per_epoch * settings.epochs)
    order_rng = random.Random(settings.seed)
    epoch_losses: list[float] = []
    eval_per_epoch: list[dict[str, Any] | None] = []
    eval_seconds = 0.0
    started = time.perf_counter()
    model.train()
    bar = tqdm(
        total=len(items) * settings.epochs, unit="ex", desc="training", file=progress_file, disable=None, leave=False
    )
    try:
        for epoch in range(settings.epochs):
            order = list(range(len(items)))
            order_rng.shuffle(order)
            loss_sum = weight_sum = 0.0
            for batch_index in range(batches_per_epoch):
                start = batch_index * settings.batch_size
                chunk = [items[i] for i in order[start : start + settings.batch_size]]
                loss, weight = trainer.backward(chunk)
                loss_sum += loss * weight
                weight_sum += weight
                last = batch_index == batches_per_epoch - 1
                if (batch_index + 1) % settings.gradient_accumulation_steps == 0 or last:
                    trainer.optimizer_step()
                bar.update(len(chunk))
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / max(weight_sum, 1e-12):.4f}", refresh=False)
            epoch_losses.append(loss_sum / max(weight_sum, 1e-12))
            eval_started = time.perf_counter()
            evaluation = evaluate()
            eval_seconds += time.perf_counter() - eval_started
            eval_per_epoch.append(evaluation)
            line = f"epoch {epoch + 1}/{settings.epochs}: train loss {epoch_losses[-1]:.4f}"
            log(line + (f"; held out: {metrics_line(evaluation)}" if evaluation else ""))
    finally:
        bar.close()
    seconds = time.perf_counter() - started - eval_seconds  # training alone; the held-out passes are apart
    model.eval()

    metrics = {
        "prm_version": settings.prm_version,
        "base_model": settings.base_model,
        "data": {
            "train_examples": len(train_examples),
            "train_examples_used": len(items),
            "eval_examples": len(eval_examples),
            "train_steps": sum(len(item.targets) for item in items),
            **truncation,
        },
        "train": {
            "epochs": settings.epochs,
            "optimizer_steps": trainer.optimizer_steps,
            "loss_per_epoch": epoch_losses,
            "seconds": seconds,
            "eval_seconds": eval_seconds,
            "examples_per_second": len(items) * settings.epochs / seconds if seconds > 0 else None,
            "device": str(device),
            "dtype": str(dtype).removeprefix("torch."),
        },
        "eval_before": eval_before,
        "eval_per_epoch": eval_per_epoch,
        "eval": eval_per_epoch[-1] if eval_per_epoch else None,
        "settings": settings.as_dict(),
    }
    prm_config = PRMConfig(
        format=settings.format,
        token_ids=tokens.as_dict(),
        base_model=settings.base_model,
        max_length=settings.max_length,
        prm_version=settings.prm_version,
        training=metrics,
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the adapter folder is an ordinary output
    try:
        # Embedding layers are never trained here: "auto" would look the base model up (on the hub) to decide.
        model.save_pretrained(str(staging), safe_serialization=True, save_embedding_layers=False)
        prm_config.write(staging)
        _folder_replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    zip_path = adapter_zip_write(output_dir, output_dir.with_name(output_dir.name + ".zip"))
    return TrainResult(
        output_dir=output_dir,
        zip_path=zip_path,
        sha256=sha256_file(zip_path),
        size=zip_path.stat().st_size,
        metrics=metrics,
    )


class StepTrainer:
    """One training step of ``prm_train``: the step-tag forward pass of a batch, its weighted cross-entropy and
    backward (``backward``), then clipping, AdamW and the learning-rate schedule (``optimizer_step``).

    ``backward`` divides the loss by ``gradient_accumulation_steps``, so that many calls before one
    ``optimizer_step`` average their gradients.
    """

    def __init__(self, scorer: PRMScorer, settings: TrainSettings, *, total_steps: int) -> None:
        self.scorer = scorer
        self.settings = settings
        self.parameters = [p for p in scorer.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=settings.lr, weight_decay=settings.weight_decay)
        warmup = round(settings.warmup_ratio * total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(settings.lr_scheduler, total_steps=total_steps, warmup_steps=warmup)
        )
        self.optimizer_steps = 0

    def backward(self, chunk: Sequence[TrainItem]) -> tuple[float, float]:
        """Back-propagate the batch's loss, ``sum(weight * confidence * step loss) / sum(weight)`` (the weighted mean
        step loss when every confidence is 1); answer (that loss, the batch's total step weight)."""
        scorer = self.scorer
        device = scorer.device
        batch = collate([item.encoded for item in chunk], pad_id=scorer.tokens.pad_id, device=device)
        targets = torch.tensor([t for item in chunk for t in item.targets], dtype=torch.float32, device=device)
        weights = torch.tensor([w for item in chunk for w in item.weights], dtype=torch.float32, device=device)
        confidence = torch.tensor([c for item in chunk for c in item.confidence], dtype=torch.float32, device=device)
        margins = scorer.head.margins(scorer.model, batch)
        losses = F.binary_cross_entropy_with_logits(margins, targets, reduction="none")
        total = float(weights.sum())
        loss = (losses * weights * confidence).sum() / total
        (loss / self.settings.gradient_accumulation_steps).backward()
        return float(loss.detach()), total

    def optimizer_step(self) -> None:
        if self.settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1


def metrics_line(metrics: dict[str, Any]) -> str:
    parts = [f"loss {metrics['loss']:.4f}" if metrics.get("loss") is not None else "loss n/a"]
    if metrics.get("step_accuracy") is not None:
        parts.append(f"step accuracy {metrics['step_accuracy']:.3f}")
    f1 = (metrics.get("processbench") or {}).get("f1")
    if f1 is not None:
        parts.append(f"ProcessBench F1 {f1:.3f}")
    return ", ".join(parts)
