"""A synthetic step-labelling task and a tiny causal LM with its tokenizer, built in code (no download).

For the tests and benchmarks, and to try the whole loop on a laptop: ``tiny_base_model_save(folder)`` writes a model
folder that ``--base_model`` accepts like any other, and ``synthetic_rows`` writes ``stepwise`` rows.

The task: each step carries one *marker* word among filler words; the marker decides the step's value (``m0`` 0.05,
``m1`` 0.15, … ``m9`` 0.95), so step correctness is learnable from the step's text alone, while the model has to find
the marker at a varying place. A rollout is either right throughout (every marker above 0.5) or has a first error,
after which every step is wrong, like a Monte-Carlo value that drops once a solution goes astray. Hard labels are
``value > 0.5``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
FORMAT_TOKENS = ("ки", "+", "-")
WORDS = ("Problem", "step", "answer")
FILLERS = tuple(f"w{i}" for i in range(24))
MARKER_VALUES: dict[str, float] = {f"m{i}": round(0.05 + 0.1 * i, 2) for i in range(10)}
GOOD_MARKERS = tuple(m for m, v in MARKER_VALUES.items() if v > 0.5)
BAD_MARKERS = tuple(m for m, v in MARKER_VALUES.items() if v < 0.5)
VOCABULARY = (*SPECIAL_TOKENS, *FORMAT_TOKENS, *WORDS, *FILLERS, *MARKER_VALUES)


def _step(rng: random.Random, marker: str) -> str:
    words = rng.sample(FILLERS, rng.randint(2, 4))
    words.insert(rng.randint(0, len(words)), marker)
    return "step " + " ".join(words) + "\n"


def synthetic_rollout(rng: random.Random, *, max_steps: int = 5, correct_share: float = 0.4) -> tuple[list, list]:
    """(steps, soft values) of one rollout."""
    count = rng.randint(2, max_steps)
    first_error = count if rng.random() < correct_share else rng.randrange(count)
    markers = [rng.choice(GOOD_MARKERS if i < first_error else BAD_MARKERS) for i in range(count)]
    return [_step(rng, m) for m in markers], [MARKER_VALUES[m] for m in markers]


def synthetic_rows(
    *, prompts: int, rollouts_per_prompt: int = 2, seed: int = 0, soft: bool = False
) -> list[dict[str, Any]]:
    """Rows of a ``stepwise`` export: ``prompt``, ``completions``, ``labels`` (bools, or the soft values), plus
    ``values`` (always the soft values) and ``id``."""
    rng = random.Random(seed)
    rows = []
    for p in range(prompts):
        prompt = "Problem " + " ".join(rng.sample(FILLERS, 5)) + f" {p % 10}"
        for r in range(rollouts_per_prompt):
            steps, values = synthetic_rollout(rng)
            labels = list(values) if soft else [v > 0.5 for v in values]
            rows.append({"id": f"{p}-{r}", "prompt": prompt, "completions": steps, "labels": labels, "values": values})
    return rows


def tiny_tokenizer() -> Any:
    """A word-level tokenizer over ``VOCABULARY`` that puts ``<s>`` before a text, like Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: PLC0415 (deferred: tokenizers is heavy)
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 (deferred: transformers is heavy)

    vocab = {token: index for index, token in enumerate(VOCABULARY)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))  # noqa: S106 - tokens, not secrets
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


def tiny_base_model_save(
    folder: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    vocab_size: int | None = None,
) -> Path:
    """A randomly initialised Llama (about 90,000 parameters) and its tokenizer, saved as safetensors.

    ``vocab_size`` larger than the tokenizer's vocabulary gives the model a realistic LM head (rows the tokenizer
    never produces), for measuring what the head costs."""
    import torch  # noqa: PLC0415 (deferred: torch is heavy)
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: PLC0415 (deferred: transformers is heavy)

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(VOCABULARY)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
