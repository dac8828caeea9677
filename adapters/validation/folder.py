"""The files of an adapter folder: what peft's ``save_pretrained`` writes, and the PRM format ``train_prm`` adds."""

from __future__ import annotations

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
README_NAME = "README.md"
PRM_CONFIG_NAME = "prm_config.json"  # the PRM format train_prm adds (adapters.prm.format reads and writes it)
# The files an adapter folder may hold: what peft's save_pretrained writes, and the PRM format train_prm adds.
ADAPTER_FILES = (CONFIG_NAME, WEIGHTS_NAME, README_NAME, PRM_CONFIG_NAME)
# A small config file is all that adapter_config.json ever is (and the most a README or prm_config.json may be).
CONFIG_MAX_BYTES = 1024 * 1024
