"""Loading base models and the step-tag forward pass: one pass per rollout reads every step as a pass per prefix
would, batching and padding change nothing, and the two-row LM head shortcut equals the model's own logits."""

from __future__ import annotations

import pytest
import torch

from adapters.prm.errors import PRMError
from adapters.prm.format import StepTagFormat, format_tokens
from adapters.prm.modeling import (
    StepHead,
    base_model_load,
    base_model_source,
    device_resolve,
    dtype_resolve,
    lora_attach,
    lora_targets,
)
from adapters.prm.scoring import PRMScorer

CPU = torch.device("cpu")
ROLLOUTS = [
    ("Problem w1 w2 w3", ["step w4 m9 w5\n", "step m2 w6\n", "step w7 w8 m0\n"]),
    ("Problem w9", ["step m7\n"]),
    ("Problem w10 w11 w12 w13 w14 w15", ["step w16 m8\n", "step m6 w1\n"]),
]


def test_base_model_sources(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    gguf = tmp_path / "model.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert base_model_source(str(folder)) == (str(folder), {})
    assert base_model_source(str(gguf)) == (str(tmp_path), {"gguf_file": "model.Q4_1.gguf"})
    assert base_model_source("org/model-GGUF/model.Q8_0.gguf") == ("org/model-GGUF", {"gguf_file": "model.Q8_0.gguf"})
    assert base_model_source("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", {})
    with pytest.raises(PRMError, match=r"no such \.gguf file"):
        base_model_source(str(tmp_path / "missing.gguf"))
    with pytest.raises(PRMError, match="no such folder"):
        base_model_source(str(tmp_path / "missing-model"))
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(PRMError, match="is a file"):
        base_model_source(str(tmp_path / "weights.safetensors"))


def test_a_base_model_that_cannot_be_loaded_fails_with_one_line(tmp_path):
    with pytest.raises(PRMError, match="cannot load base model"):
        base_model_load(str(tmp_path), device=CPU, dtype=torch.float32)


def test_device_and_dtype_resolution():
    assert device_resolve("cpu") == CPU
    assert dtype_resolve("auto", CPU, training=True) == torch.float32
    assert dtype_resolve("bfloat16", CPU, training=False) == torch.bfloat16
    with pytest.raises(PRMError, match="no torch device"):
        device_resolve("gpu-please")
    with pytest.raises(PRMError, match="choose auto"):
        dtype_resolve("float8", CPU, training=True)
    if not torch.cuda.is_available():
        with pytest.raises(PRMError, match="no CUDA GPU"):
            device_resolve("cuda")
        assert device_resolve("auto") == CPU


def test_lora_targets_are_all_linear_or_named_modules():
    assert lora_targets("all-linear") == "all-linear"
    assert lora_targets("q_proj, v_proj") == ["q_proj", "v_proj"]
    with pytest.raises(PRMError):
        lora_targets(" , ")


def _scorer(tiny_base, batch_size: int = 8) -> PRMScorer:
    model, tokenizer = base_model_load(str(tiny_base), device=CPU, dtype=torch.float32)
    # A LoRA adapter with random B (not the identity start), so its layers take part in every number below.
    model = lora_attach(model, r=4, alpha=8, dropout=0.0, target_modules="all-linear", base_model="t", seed=1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    fmt = StepTagFormat()
    return PRMScorer(
        model, tokenizer, fmt=fmt, tokens=format_tokens(fmt, tokenizer), max_length=None, batch_size=batch_size,
        device=CPU,
    )  # fmt: skip


def _reward_by_prefix(scorer: PRMScorer, input_ids: tuple[int, ...], position: int) -> float:
    """The reward of one step read the slow way: the model's full logits at the end of the prefix through its tag."""
    ids = torch.tensor([input_ids[: position + 1]])
    with torch.no_grad():
        logits = scorer.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
    pair = logits[[scorer.tokens.good_id, scorer.tokens.bad_id]]
    return float(torch.softmax(pair, dim=0)[0])


def test_one_forward_pass_per_rollout_reads_every_step_as_a_pass_per_prefix_would(tiny_base):
    scorer = _scorer(tiny_base)
    assert scorer.head.headless
    rewards = scorer.score(ROLLOUTS)
    assert [len(r) for r in rewards] == [3, 1, 2]
    for encoded, values in zip(scorer.encode(ROLLOUTS), rewards, strict=True):
        slow = [_reward_by_prefix(scorer, encoded.input_ids, p) for p in encoded.tag_positions]
        assert values == pytest.approx(slow, abs=1e-5)
    assert len({round(v, 6) for r in rewards for v in r}) > 3  # not a constant


def test_batching_and_padding_do_not_change_the_rewards(tiny_base):
    together = _scorer(tiny_base, batch_size=3).score(ROLLOUTS)
    alone = _scorer(tiny_base, batch_size=1).score(ROLLOUTS)
    assert [r for rewards in together for r in rewards] == pytest.approx([r for rs in alone for r in rs], abs=1e-5)


def test_a_model_without_a_separate_decoder_is_scored_with_its_full_logits(tiny_base, monkeypatch):
    scorer = _scorer(tiny_base)
    expected = scorer.score(ROLLOUTS)
    lm = scorer.model.get_base_model()
    monkeypatch.setattr(lm, "get_decoder", lambda: lm)
    head = StepHead(scorer.model, good_id=scorer.tokens.good_id, bad_id=scorer.tokens.bad_id, probe_ids=[2, 4, 5])
    assert not head.headless
    scorer.head = head
    assert [v for r in scorer.score(ROLLOUTS) for v in r] == pytest.approx([v for r in expected for v in r], abs=1e-5)


def test_no_rollout_no_work(tiny_base):
    assert _scorer(tiny_base).score([]) == []
