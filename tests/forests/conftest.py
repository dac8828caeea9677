"""Fixtures of the forests tests: no network, no hub, small dataset files written by the tests themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def offline_hub(tmp_path_factory, monkeypatch):
    """Nothing may reach the hub: HF_HOME is a fresh folder and the hub is switched off."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for name in ("LIAR_DATASET", "GSM8K_DATASET"):
        monkeypatch.delenv(name, raising=False)
    # The libraries read these at import time: patch them too when another test imported them first.
    if "huggingface_hub.constants" in sys.modules:
        monkeypatch.setattr(sys.modules["huggingface_hub.constants"], "HF_HUB_OFFLINE", True)
    if "datasets.config" in sys.modules:
        config = sys.modules["datasets.config"]
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_CACHE", hf_home / "datasets")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


LIAR_ROWS = [
    {"id": "a", "statement": "The moon is made of cheese.", "label": "pants-fire"},
    {"id": "b", "statement": "Water boils at 100 °C at sea level.", "label": "true"},
    {"id": "c", "statement": "Half the town voted.", "label": "half-true"},
    {"id": "d", "statement": "Taxes fell every year.", "label": "barely-true"},
    {"id": "e", "statement": "Bus fares were cut in half.", "label": "mostly-true"},
]

GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples?", "answer": "3 + 4 = 7\n#### 7"},
    {"question": "A shop sells 1,200 pens a day. How many in 2 days?", "answer": "1200 * 2 = 2400\n#### 2,400"},
    {"question": "A debt of 5 grows by -8. What is it?", "answer": "5 - 8 = -3\n#### -3"},
]


@pytest.fixture
def liar_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "liar" / "liar_test.jsonl", LIAR_ROWS)


@pytest.fixture
def gsm8k_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "gsm8k" / "test.jsonl", GSM8K_ROWS)


@pytest.fixture
def config_dir(tmp_path, settings, monkeypatch) -> Path:
    """An empty extra config folder, listed in EXPERIMENT_CONFIG_DIRS (the environment the loader reads, and the
    setting the server shows)."""
    folder = tmp_path / "team_configs"
    folder.mkdir()
    monkeypatch.setenv("EXPERIMENT_CONFIG_DIRS", str(folder))
    settings.EXPERIMENT_CONFIG_DIRS = [str(folder)]
    return folder
