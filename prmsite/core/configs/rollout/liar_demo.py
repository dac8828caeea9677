"""The demo forest of ``make run`` and ``make demo``: LIAR-style statements, twenty invented ones shipped in
``forests/demo/``, asked of a small model.

The statements are made up for this project (no real claims or people); labels use the LIAR class names, made binary
as the ``liar`` config does. The prompt is the ``liar`` config's task, shortened for a small model: with the original
template, SmolLM2-135M-Instruct rambled for 200 tokens and never stated a verdict (0 of 12 answers parsed, measured
with llama.cpp); asked for three short "Step" lines and a verdict line, about 4 answers in 10 end with a verdict the
prediction pattern reads (case-insensitively: the model writes "Code: 0" as often as "code: 0"). Steps are also split
before "Verdict", so the verdict is a step of its own.
"""

from __future__ import annotations

from pathlib import Path

from prmsite.core.configs.rollout import liar

DEMO_DATASET = Path(__file__).resolve().parents[4] / "forests" / "demo" / "liar_demo_{split}.jsonl"


class Config(liar.Config):
    dataset_name = str(DEMO_DATASET)
    dataset_env_var = ""
    rollout_config_version = "liar-demo-small-model-1"
    template = (
        "Statement: {statement}\n\nIs the statement true or false? First write three short lines of reasoning: "
        '"Step 1: ...", "Step 2: ...", "Step 3: ...". Then write the verdict line: "Verdict: True (code: 1)" or '
        '"Verdict: False (code: 0)".'
    )
    reasoning_delimiter_pattern = r"Step|Verdict"
    prediction_pattern = r"(?i)code:\s*([-0-1]+)"
    sample_response = (
        "Step 1: The statement is about library hours.\nStep 2: Doubling hours costs money.\n"
        "Step 3: A budget that did not grow makes that unlikely.\nVerdict: False (code: 0)"
    )
