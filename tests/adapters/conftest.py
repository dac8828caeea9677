"""A tiny real LoRA adapter (peft on a 1-layer Llama built from a config in code: no hub access) and API clients."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest


def _save_tiny_adapter(folder: Path, seed: int = 0) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64
    )
    model = get_peft_model(
        LlamaForCausalLM(config),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(folder)
    return folder


def zip_folder(folder: Path, *, prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def adapter_folder(tmp_path_factory) -> Path:
    os.environ.setdefault("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
    return _save_tiny_adapter(tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="session")
def other_adapter_folder(tmp_path_factory) -> Path:
    return _save_tiny_adapter(tmp_path_factory.mktemp("adapter-2"), seed=1)


@pytest.fixture(scope="session")
def adapter_zip(adapter_folder) -> bytes:
    return zip_folder(adapter_folder)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT
