"""The demo forest of ``make run``: the LIAR config on twenty invented statements shipped in ``forests/demo/``.

The statements are made up for this project (no real claims or people); labels use the LIAR class names.
"""

from __future__ import annotations

from pathlib import Path

from forests.experiment_configs.rollout import liar

DEMO_DATASET = Path(__file__).resolve().parents[2] / "demo" / "liar_demo_{split}.jsonl"


class Config(liar.Config):
    dataset_name = str(DEMO_DATASET)
    dataset_env_var = ""
