"""PRM scoring and training throughput on the CPU, each against a bare floor over the same batches, in the same run.

- **Scoring**: steps per second of ``PRMScorer.score`` — what ``prm_label_worker`` runs on every claim of
  ``batch_size`` rollouts: tokenizing, laying out the step tags, padding, the forward pass and reading every tag —
  with a trained adapter loaded from its zip and merged, as the worker loads it. Floor: a bare
  ``model(input_ids, attention_mask)`` of the same model over the same padded batches, built beforehand.
- **Training**: examples per second of ``prm_train``'s step (``StepTrainer``: collation, the step-tag forward pass,
  the weighted cross-entropy, backward, clipping, AdamW, the schedule). Floor: a bare LoRA training step — the
  model's own causal-LM loss, backward and AdamW — of an identical LoRA model over the same batches, built beforehand.

The machines are shared and noisy, so the two sides are measured batch by batch, alternately (which one goes first
alternates too), over several passes; each batch counts with its best time on each side, and a figure is the number
of steps (examples) over the sum of those best times. torch runs on one thread (two threads on two shared cores
measure the neighbours more than the code). The models are the synthetic task's Llama built in code
(``adapters.prm.synthetic``): a tiny one (the tests' model, 50-token vocabulary) and a small one with a 32,000-token
vocabulary, where reading only the two tag logits instead of the whole LM head shows. ``BENCH_PRM_ROLLOUTS`` sets the
number of rollouts (default 800), ``BENCH_PRM_PASSES`` the passes (default 3). Prints Markdown rows
``| benchmark | figure | floor | ratio |``; the goal is a ratio >= 0.8.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLLOUTS = int(os.environ.get("BENCH_PRM_ROLLOUTS", "800"))
PASSES = int(os.environ.get("BENCH_PRM_PASSES", "3"))
BATCH = 16
MAX_LENGTH = 256
SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "small": {
        "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 688,
        "vocab_size": 32000,
    },
}  # fmt: skip


def setup(tmp: Path) -> None:
    os.environ["HF_HOME"] = str(tmp / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prmsite.settings")
    sys.path.insert(0, str(ROOT))


def paired(ours, floor, batches: int) -> tuple[float, float]:
    """(sum of the best time of ``ours(i)``, same of ``floor(i)``) over batches ``i``, alternating per batch."""
    best_ours = [float("inf")] * batches
    best_floor = [float("inf")] * batches
    for run in range(PASSES):
        for i in range(batches):
            sides = [(ours, best_ours), (floor, best_floor)]
            for work, best in sides if (i + run) % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                work(i)
                best[i] = min(best[i], time.perf_counter() - started)
    return sum(best_ours), sum(best_floor)


def bench_size(name: str, dims: dict, tmp: Path) -> list[str]:
    import torch

    from adapters.prm.archive import adapter_zip_extract
    from adapters.prm.examples import examples_from_stepwise
    from adapters.prm.format import encode_rollouts
    from adapters.prm.modeling import base_model_load, collate, lora_attach
    from adapters.prm.scoring import PRMScorer
    from adapters.prm.synthetic import synthetic_rows, tiny_base_model_save
    from adapters.prm.training import StepTrainer, TrainSettings, prm_train, train_items

    cpu = torch.device("cpu")
    base = tiny_base_model_save(tmp / f"base-{name}", **dims)
    examples = examples_from_stepwise(synthetic_rows(prompts=ROLLOUTS // 2, rollouts_per_prompt=2, seed=1)).examples
    chunks = [examples[i : i + BATCH] for i in range(0, len(examples), BATCH)]
    steps = sum(len(e.steps) for e in examples)
    settings = TrainSettings(
        base_model=str(base), prm_version=f"bench-{name}", output_dir=tmp / f"adapter-{name}", epochs=1, lr=1e-3,
        batch_size=BATCH, max_length=MAX_LENGTH, eval_fraction=0.0, device="cpu",
    )  # fmt: skip

    # Scoring: the worker's path (adapter from its zip, merged) against a bare forward over the same batches.
    trained = prm_train(settings, examples[: 8 * BATCH])
    folder = adapter_zip_extract(trained.zip_path, tmp / f"extract-{name}")
    scorer = PRMScorer.from_adapter_folder(folder, base_model=None, device=cpu, batch_size=BATCH)
    parameters = sum(p.numel() for p in scorer.model.parameters())
    score_batches = [[(e.prompt, e.steps) for e in chunk] for chunk in chunks]
    forward_batches = []
    for pairs in score_batches:
        encoded = scorer.encode(pairs)
        batch = collate(encoded, pad_id=scorer.tokens.pad_id, device=cpu)
        forward_batches.append((batch.input_ids, batch.attention_mask))

    def score(i: int) -> None:
        scorer.score(score_batches[i])

    def forward(i: int) -> None:
        with torch.inference_mode():
            scorer.model(input_ids=forward_batches[i][0], attention_mask=forward_batches[i][1]).logits  # noqa: B018

    score_s, forward_s = paired(score, forward, len(chunks))

    # Training: prm_train's step against a bare causal-LM LoRA step, two identical LoRA models, the same batches.
    def lora_model():
        model, tokenizer = base_model_load(str(base), device=cpu, dtype=torch.float32)
        lora = lora_attach(model, r=settings.lora_r, alpha=settings.lora_alpha, dropout=0.0,
                           target_modules=settings.lora_target_modules, base_model=str(base), seed=0)  # fmt: skip
        return lora, tokenizer

    ours_model, tokenizer = lora_model()
    ours_scorer = PRMScorer(ours_model, tokenizer, fmt=scorer.fmt, tokens=scorer.tokens, max_length=MAX_LENGTH,
                            batch_size=BATCH, device=cpu)  # fmt: skip
    trainer = StepTrainer(ours_scorer, settings, total_steps=len(chunks) * PASSES)

    encoded = encode_rollouts(tokenizer, scorer.fmt, scorer.tokens, [(e.prompt, e.steps) for e in examples],
                              max_length=MAX_LENGTH, keep_all_steps=False)  # fmt: skip
    items, _ = train_items(examples, encoded)
    item_chunks = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    bare_model, _ = lora_model()
    bare_optimizer = torch.optim.AdamW([p for p in bare_model.parameters() if p.requires_grad], lr=settings.lr)
    bare_batches = []
    for chunk in item_chunks:
        batch = collate([item.encoded for item in chunk], pad_id=scorer.tokens.pad_id, device=cpu)
        labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
        bare_batches.append((batch.input_ids, batch.attention_mask, labels))
    ours_model.train()
    bare_model.train()

    def train_step(i: int) -> None:
        trainer.backward(item_chunks[i])
        trainer.optimizer_step()

    def bare_step(i: int) -> None:
        input_ids, mask, labels = bare_batches[i]
        bare_model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    train_s, bare_s = paired(train_step, bare_step, len(item_chunks))

    what = (
        f"{name} Llama ({parameters:,} parameters, vocabulary {scorer.model.config.vocab_size:,}), CPU, batch {BATCH}"
    )
    scored, floor = steps / score_s, steps / forward_s
    trained_rate, bare_rate = len(items) / train_s, len(items) / bare_s
    print(f"{name}: {len(examples)} rollouts, {steps} steps; scoring {score_s:.3f} s vs forward {forward_s:.3f} s; "
          f"training {train_s:.3f} s vs bare {bare_s:.3f} s")  # fmt: skip
    return [
        f"| prm_label_worker scoring path (PRMScorer.score), {what} | {scored:,.0f} steps/s "
        f"| bare forward over the same batches: {floor:,.0f} steps/s | {scored / floor:.2f} |",
        f"| train_prm training step (StepTrainer), {what} | {trained_rate:,.0f} examples/s "
        f"| bare LoRA step (causal-LM loss, AdamW) on the same batches: {bare_rate:,.0f} examples/s "
        f"| {trained_rate / bare_rate:.2f} |",
    ]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_prm_") as tmp_name:
        tmp = Path(tmp_name)
        setup(tmp)
        import torch

        torch.set_num_threads(1)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread; {PASSES} passes")
        rows = []
        for name, dims in SIZES.items():
            rows += bench_size(name, dims, tmp)
        print("| benchmark | figure | floor | ratio |")
        print("| --- | --- | --- | --- |")
        for row in rows:
            print(row)


if __name__ == "__main__":
    main()
