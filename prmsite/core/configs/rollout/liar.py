"""LIAR-style true/false statements (https://huggingface.co/datasets/ucsbnlp/liar or a local file of the same shape).

Items have a ``statement`` and a 6-way ``label``, either the name of the class or its index in the hub dataset's
order (``false``, ``half-true``, ``mostly-true``, ``true``, ``barely-true``, ``pants-fire``). The label is made
binary, as the template asks the model for True (code 1) or False (code 0):

    true, mostly-true, half-true        -> 1 (True)
    barely-true, false, pants-fire      -> 0 (False)

Set ``LIAR_DATASET`` (or pass ``--dataset_name``) to read another copy: a hub name, a ``save_to_disk`` folder, or a
jsonl/csv/parquet file (``{split}`` in the path picks one file per split).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prmsite.core.configs.interfaces import DatasetConfig
from prmsite.core.errors import ConfigError

# Index order of the ClassLabel of the hub dataset.
LIAR_LABELS = ("false", "half-true", "mostly-true", "true", "barely-true", "pants-fire")
BINARY_LABEL = {
    "true": 1,
    "mostly-true": 1,
    "half-true": 1,
    "barely-true": 0,
    "false": 0,
    "pants-fire": 0,
    "pants-on-fire": 0,
}


def liar_binary_label(label: Any) -> int:
    """The binary label of a LIAR 6-way label given by name or by its index in the hub dataset's order."""
    if isinstance(label, bool):
        raise ConfigError(f"LIAR label {label!r} is neither a class name nor a class index")
    if isinstance(label, int):
        if not 0 <= label < len(LIAR_LABELS):
            raise ConfigError(f"LIAR label index {label} is out of range 0..{len(LIAR_LABELS) - 1}")
        label = LIAR_LABELS[label]
    if isinstance(label, str):
        key = label.strip().lower().replace("_", "-").replace(" ", "-")
        if key in BINARY_LABEL:
            return BINARY_LABEL[key]
    raise ConfigError(f"LIAR label {label!r} is not one of {', '.join(LIAR_LABELS)}")


class Config(DatasetConfig):
    dataset_name = "ucsbnlp/liar"
    dataset_env_var = "LIAR_DATASET"

    rollout_config_version = "example-20231018a2"
    template = (
        "Below is a dubious statement: \n\n{statement} \n\nYour task is to present a careful step-by-step analysis of "
        "why and why not this statement should be considered as true or false. Present your analysis in this format: "
        "\n```\n<u>Step 1: Understanding the statement</u>\n...\n``` \nAFTER presenting a thorough analysis, you "
        "should summarize your reasoning and state whether you think this statement is True or False. To do so, end "
        "your response with a summary and then `<u>Verdict: True (code: 1)</u>` for True, or `<u>Verdict: False "
        "(code: 0)</u>` for False. You may also state `<u>Verdict: More info required (code: -1)</u>` if you need "
        "more information. Since you might change your mind as you write down your reasoning, you must not state "
        "your conclusion until you have presented a thorough step-by-step analysis. \n\n"
    )
    reasoning_delimiter_pattern = r"</?u>|Step|```"
    prediction_pattern = r"code: ([-0-1]+)"

    def get_label(self, item: Mapping[str, Any]) -> int:
        return liar_binary_label(item["label"])
