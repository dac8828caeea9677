"""Fixtures of the worker tests: the stub OpenAI-compatible server and a tiny tokenizer with a chat template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.forests.conftest import offline_hub, write_jsonl  # noqa: F401 - nothing reaches the hub here either
from tests.rollouts.worker.scripted import DELIMITER, PREDICTION
from tests.stub_openai import StubOpenAI

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture
def stub() -> Iterator[StubOpenAI]:
    with StubOpenAI() as server:
        yield server


@pytest.fixture
def tokenizer_dir(tmp_path) -> Path:
    """A word-level tokenizer with a chat template, saved like a model's tokenizer folder (no hub)."""
    # deferred: tokenizers and transformers are heavy
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|end|>": 1}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = CHAT_TEMPLATE
    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def dataset(tmp_path):
    rows = [{"statement": f"Statement #{i} holds.", "label": i % 2} for i in range(6)]
    data = write_jsonl(tmp_path / "data" / "train.jsonl", rows)
    template = tmp_path / "template.json"
    template.write_text(
        json.dumps(
            {
                "rollout_config_version": "test-v1",
                "template": "Judge this. {statement}",
                "reasoning_delimiter_pattern": DELIMITER,
                "prediction_pattern": PREDICTION,
                "dataset_name": str(data),
            }
        )
    )
    return template
