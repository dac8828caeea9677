"""Training a LoRA PRM on the synthetic task: it learns (held out, read back from disk the way the worker reads it),
soft labels are fitted better by soft training than by hard, and what is saved is safetensors the server accepts."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from dataclasses import replace

import pytest
import torch

from adapters.prm.archive import sha256_file
from adapters.prm.errors import PRMError
from adapters.prm.examples import StepExample
from adapters.prm.format import EncodedRollout, PRMConfig, StepTagFormat, format_tokens
from adapters.prm.metrics import prm_evaluate
from adapters.prm.modeling import base_model_load, collate, lora_attach
from adapters.prm.scoring import PRMScorer
from adapters.prm.training import StepTrainer, TrainItem, TrainSettings, lr_lambda, prm_train, train_items
from adapters.validation import adapter_zip_validate
from forests.metrics.stats import wilson_interval
from tests.adapters.prm.conftest import EVAL_FRACTION, SEED, TINY_TRAINING

CPU = torch.device("cpu")


def _pairs(examples: list[StepExample]) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.prompt, e.steps) for e in examples]


def test_the_trained_adapter_beats_the_untrained_model_on_held_out_prompts(trained_soft, tiny_base):
    held_out = trained_soft.held_out
    assert len(held_out) >= 40
    train_prompts = {e.prompt for e in trained_soft.examples} - {e.prompt for e in held_out}
    assert train_prompts.isdisjoint({e.prompt for e in held_out})

    # The saved adapter, loaded from disk on its base model and merged, as prm_label_worker loads it.
    trained = PRMScorer.from_adapter_folder(trained_soft.result.output_dir, base_model=None, device=CPU)
    after = prm_evaluate(held_out, trained.score(_pairs(held_out)))
    # The same base model without any adapter.
    model, tokenizer = base_model_load(str(tiny_base), device=CPU, dtype=torch.float32)
    fmt = StepTagFormat()
    untrained = PRMScorer(
        model, tokenizer, fmt=fmt, tokens=format_tokens(fmt, tokenizer), max_length=256, batch_size=16, device=CPU
    )
    before = prm_evaluate(held_out, untrained.score(_pairs(held_out)))

    assert after["step_accuracy"] >= 0.85
    assert after["step_accuracy"] >= before["step_accuracy"] + 0.2
    assert after["loss"] <= before["loss"] - 0.1
    assert after["mae"] <= before["mae"] - 0.1
    assert after["processbench"]["f1"] >= 0.6
    assert after["processbench"]["f1"] >= (before["processbench"]["f1"] or 0.0) + 0.3
    # What training reported is what the saved adapter does, before and after.
    reported = trained_soft.result.metrics
    assert reported["eval"]["loss"] == pytest.approx(after["loss"], abs=1e-4)
    assert reported["eval"]["step_accuracy"] == pytest.approx(after["step_accuracy"])
    assert reported["eval_before"]["loss"] == pytest.approx(before["loss"], abs=1e-4)
    assert reported["train"]["loss_per_epoch"][-1] < reported["train"]["loss_per_epoch"][0]


def test_soft_label_training_fits_soft_targets_better_than_hard_label_training(trained_soft, tiny_base, tmp_path):
    settings = TrainSettings(
        base_model=str(tiny_base),
        prm_version="prm-hard",
        output_dir=tmp_path / "prm-hard",
        eval_fraction=EVAL_FRACTION,
        seed=SEED,
        device="cpu",
        hard_targets=True,
        **TINY_TRAINING,
    )
    hard = prm_train(settings, trained_soft.examples).metrics
    soft = trained_soft.result.metrics
    # Same data, same split, same held-out targets (the soft values): only the training targets differ.
    assert hard["eval_before"] == soft["eval_before"]
    assert hard["eval"]["step_accuracy"] >= 0.85  # hard training learned the task too ...
    assert soft["eval"]["mae"] <= hard["eval"]["mae"] - 0.05  # ... but only soft training fits the values
    assert soft["eval"]["loss"] <= hard["eval"]["loss"] - 0.03


def test_the_adapter_is_saved_as_safetensors_with_its_format_and_zipped_for_the_server(trained_soft, tiny_base):
    result = trained_soft.result
    names = sorted(p.name for p in result.output_dir.iterdir())
    assert names == ["README.md", "adapter_config.json", "adapter_model.safetensors", "prm_config.json"]
    adapter_config = json.loads((result.output_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_base)
    assert adapter_config["r"] == TINY_TRAINING["lora_r"]
    config = PRMConfig.read(result.output_dir)
    assert config.base_model == str(tiny_base)
    assert config.max_length == TINY_TRAINING["max_length"]
    assert config.token_ids == {"tag_ids": [4], "good_id": 5, "bad_id": 6}
    assert config.training["eval"] == result.metrics["eval"]
    assert result.zip_path == result.output_dir.with_name("prm-soft.zip")
    assert result.sha256 == sha256_file(result.zip_path)
    with zipfile.ZipFile(result.zip_path) as archive:
        assert sorted(archive.namelist()) == names
    archive = adapter_zip_validate(path=result.zip_path, max_uncompressed_bytes=10**8)
    assert archive.peft_type == "LORA"
    assert all(".lora_" in name for name in archive.tensor_names)


def test_an_existing_output_folder_is_kept_unless_overwrite(tiny_base, soft_examples, tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    settings = TrainSettings(base_model=str(tiny_base), prm_version="v", output_dir=target, epochs=1, device="cpu")
    with pytest.raises(PRMError, match="exists and is not empty"):
        prm_train(settings, soft_examples[:20])
    assert (target / "mine.txt").read_text() == "keep me"
    settings.overwrite = True
    settings.max_length = 24  # a prompt is ~7 tokens and a step ~6: long rollouts lose their last steps
    result = prm_train(settings, soft_examples[:20])
    assert not (target / "mine.txt").exists()
    assert (target / "adapter_model.safetensors").is_file()
    assert result.metrics["data"]["steps_truncated"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder or partial zip left


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"lr": -1.0}, "--lr must be a positive number"),
        ({"eval_fraction": 1.0}, r"--eval_fraction must be in \[0, 1\)"),
        ({"lr_scheduler": "step"}, "--lr_scheduler must be one of"),
        ({"neutral_weight": -0.5}, "--neutral_weight must be 0 or more"),
    ],
)
def test_impossible_settings_are_refused_before_any_model_is_loaded(changes, message, tmp_path):
    settings = TrainSettings(base_model="never/loaded", prm_version="v", output_dir=tmp_path / "a", **changes)
    with pytest.raises(PRMError, match=message):
        prm_train(settings, [])


def test_learning_rate_schedules_warm_up_linearly_then_decay():
    linear = lr_lambda("linear", total_steps=10, warmup_steps=2)
    assert [linear(s) for s in range(10)] == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    cosine = lr_lambda("cosine", total_steps=5, warmup_steps=0)
    assert [cosine(s) for s in range(5)] == pytest.approx([1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915])
    assert {lr_lambda("constant", total_steps=4, warmup_steps=0)(s) for s in range(4)} == {1.0}


def test_a_base_model_whose_tokenizer_reads_the_format_differently_is_refused(trained_soft, tmp_path):
    folder = tmp_path / "adapter"
    shutil.copytree(trained_soft.result.output_dir, folder)
    config = json.loads((folder / "prm_config.json").read_text())
    config["token_ids"]["good_id"] = 7  # as if trained on a base model whose "+" is another token
    (folder / "prm_config.json").write_text(json.dumps(config))
    with pytest.raises(PRMError, match="reads the step-tag format differently from training: good_id 7 at training, 5"):
        PRMScorer.from_adapter_folder(folder, base_model=None, device=CPU)


# --- train_prm --weight_by_confidence ------------------------------------------------------------------------------

PAIRS = [("Problem w1 w2", ["step w4 m9\n", "step m2 w6\n"]), ("Problem w9", ["step m7\n", "step w3\n"])]


def _step_trainer(tiny_base, tmp_path) -> StepTrainer:
    """A fresh LoRA on the tiny model, its scorer and one training step's machinery (nothing is saved)."""
    model, tokenizer = base_model_load(str(tiny_base), device=CPU, dtype=torch.float32)
    fmt = StepTagFormat()
    model = lora_attach(
        model, r=4, alpha=8.0, dropout=0.0, target_modules="all-linear", base_model=str(tiny_base), seed=SEED
    )
    scorer = PRMScorer(
        model, tokenizer, fmt=fmt, tokens=format_tokens(fmt, tokenizer), max_length=256, batch_size=8, device=CPU
    )
    settings = TrainSettings(base_model=str(tiny_base), prm_version="v", output_dir=tmp_path / "unused", device="cpu")
    return StepTrainer(scorer, settings, total_steps=1)


def _backward(trainer: StepTrainer, targets, weights, confidence) -> tuple[float, list[torch.Tensor]]:
    """The batch loss ``backward`` answers and the gradients it leaves, from zero."""
    encoded = trainer.scorer.encode(PAIRS)
    items = [
        TrainItem(encoded=enc, targets=t, weights=w, confidence=c)
        for enc, t, w, c in zip(encoded, targets, weights, confidence, strict=True)
    ]
    trainer.optimizer.zero_grad(set_to_none=True)
    loss, _ = trainer.backward(items)
    return loss, [p.grad.clone() for p in trainer.parameters if p.grad is not None]


def test_a_step_of_confidence_zero_moves_neither_the_loss_nor_the_gradient(tiny_base, tmp_path):
    trainer = _step_trainer(tiny_base, tmp_path)
    weights = ((1.0, 1.0), (1.0, 1.0))
    # The second step of the second rollout: its target flipped, at confidence 0 and then at confidence 1.
    silent = ((1.0, 1.0), (1.0, 0.0))
    loss_a, grads_a = _backward(trainer, ((1.0, 0.0), (1.0, 1.0)), weights, silent)
    loss_b, grads_b = _backward(trainer, ((1.0, 0.0), (1.0, 0.0)), weights, silent)
    assert grads_a and any(bool(g.abs().sum() > 0) for g in grads_a)
    assert loss_a == loss_b
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    heard = ((1.0, 1.0), (1.0, 1.0))
    loss_c, grads_c = _backward(trainer, ((1.0, 0.0), (1.0, 1.0)), weights, heard)
    loss_d, grads_d = _backward(trainer, ((1.0, 0.0), (1.0, 0.0)), weights, heard)
    assert loss_c != loss_d
    assert not all(torch.equal(c, d) for c, d in zip(grads_c, grads_d, strict=True))


def test_the_batch_loss_is_the_confidence_weighted_sum_over_the_weight(tiny_base, tmp_path):
    trainer = _step_trainer(tiny_base, tmp_path)
    targets, weights, confidence = ((1.0, 0.0), (0.3, 1.0)), ((1.0, 0.5), (1.0, 0.0)), ((0.2, 1.5), (1.0, 3.0))
    loss, _ = _backward(trainer, targets, weights, confidence)
    scorer = trainer.scorer
    batch = collate(scorer.encode(PAIRS), pad_id=scorer.tokens.pad_id, device=CPU)
    with torch.no_grad():
        margins = scorer.head.margins(scorer.model, batch).tolist()
    flat = [(t, w, c) for row in zip(targets, weights, confidence, strict=True) for t, w, c in zip(*row, strict=True)]
    step_losses = [
        -(t * math.log(1 / (1 + math.exp(-m))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-m))))
        for (t, _, _), m in zip(flat, margins, strict=True)
    ]
    expected = sum(w * c * s for (_, w, c), s in zip(flat, step_losses, strict=True)) / sum(w for _, w, _ in flat)
    assert loss == pytest.approx(expected, rel=1e-5)
    plain, _ = _backward(trainer, targets, weights, ((1.0, 1.0), (1.0, 1.0)))
    assert plain == pytest.approx(sum(w * s for (_, w, _), s in zip(flat, step_losses, strict=True)) / 2.5, rel=1e-5)
    assert loss != pytest.approx(plain, rel=1e-3)


def test_train_items_scale_the_kept_confidences_to_average_one_and_ignore_them_unless_asked():
    examples = [
        StepExample(prompt="p", steps=("a", "b", "c"), targets=(1.0, 0.0, 1.0), weights=(1.0, 1.0, 1.0),
                    confidence=(0.2, 0.6, 0.1)),
        StepExample(prompt="q", steps=("d",), targets=(1.0,), weights=(0.5,)),  # no confidences: 1
    ]  # fmt: skip
    encoded = [
        EncodedRollout(input_ids=(1, 2, 3, 4), tag_positions=(1, 2), steps_dropped=1),  # the third step cut
        EncodedRollout(input_ids=(1, 2), tag_positions=(1,)),
    ]
    items, stats = train_items(examples, encoded, weight_by_confidence=True)
    scale = 2.5 / (0.2 + 0.6 + 0.5)  # over the kept steps only, weighted by the weights
    assert [item.confidence for item in items] == [pytest.approx((0.2 * scale, 0.6 * scale)), pytest.approx((scale,))]
    assert stats["confidence_mean"] == pytest.approx(1 / scale)
    plain, plain_stats = train_items(examples, encoded)
    assert [item.confidence for item in plain] == [(1.0, 1.0), (1.0,)]
    assert "confidence_mean" not in plain_stats
    zero = [replace(examples[0], confidence=(0.0, 0.0, 1.0))]
    with pytest.raises(PRMError, match="every trained step has confidence 0"):
        train_items(zero, encoded[:1], weight_by_confidence=True)


def test_training_with_confidences_reports_them_and_learns(tiny_base, soft_examples, tmp_path):
    def confident(example: StepExample) -> StepExample:
        """Confidence 1 - width for a made-up number of completions behind each step (2, 4, 8, ...)."""
        counts = [2 ** (1 + i % 4) for i in range(len(example.targets))]
        intervals = [wilson_interval(v * n, n) for v, n in zip(example.targets, counts, strict=True)]
        return replace(example, confidence=tuple(1 - (high - low) for low, high in intervals))

    examples = [confident(e) for e in soft_examples[:60]]
    settings = TrainSettings(
        base_model=str(tiny_base),
        prm_version="prm-confident",
        output_dir=tmp_path / "prm-confident",
        eval_fraction=EVAL_FRACTION,
        seed=SEED,
        device="cpu",
        weight_by_confidence=True,
        **{**TINY_TRAINING, "epochs": 3},
    )
    metrics = prm_train(settings, examples).metrics
    assert metrics["settings"]["weight_by_confidence"] is True
    assert 0 < metrics["data"]["confidence_mean"] < 1
    assert metrics["train"]["loss_per_epoch"][-1] < metrics["train"]["loss_per_epoch"][0]
    assert metrics["eval"]["loss"] < metrics["eval_before"]["loss"]  # held out, scored against the labels as given
