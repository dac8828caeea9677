"""Checking an uploaded adapter zip without trusting it: no Django here, only the file on disk.

An adapter is the folder peft's ``save_pretrained`` writes (``adapter_config.json`` + ``adapter_model.safetensors``,
maybe a README; ``train_prm`` adds ``prm_config.json``), zipped at its top level or inside one folder, and nothing
else: any other member is refused, whatever its name, so no pickle hides under another suffix, and every member
allowed is checked for what it must be (JSON, UTF-8 text, a safetensors file). Nothing is ever unpickled:
pickle-based weight files (``.bin``, ``.pt``, …) can run code when loaded and are named in their refusal. The zip
must be the whole body: bytes before its first member (a self-extracting archive) or after its end are refused.

Nothing is unpacked to disk but the config (at most 1 MiB, to a fixed name in a private folder, so member names never
become paths): the archive may unpack to no more than the upload limit itself, the weights are checked from the
safetensors header read out of the archive (every tensor's dtype, shape and byte range, which must tile the file
exactly), and the members' checksums are verified by streaming them. The config must be a LoRA config whose fields
have the types peft expects, and the tensors must be LoRA weights of the modules it targets, with matching ranks.
The regular expressions peft reads in a config are checked and matched by ``adapters.peft_patterns`` (with RE2,
never with ``re``, whose backtracking an uploaded pattern and uploaded tensor names could make exponential), and
checking the tensor names has a budget of steps.

One module per subject, each with the refusals it writes:

- ``folder``: the files an adapter folder holds (their names);
- ``archive``: the zip itself (member names, links, encryption, pickles, prefixes and trailing data, which members);
- ``config``: ``adapter_config.json`` (a LoRA config peft loads, its field types, its regular expressions);
- ``safetensors_header``: the weights' header (dtypes, shapes, byte ranges that tile the file);
- ``tensors``: the tensor names against the config (LoRA weights of targeted modules, paired, of the right rank);
- ``adapter_zip``: ``adapter_zip_validate``, which runs them all in order.
"""

from adapters.validation.adapter_zip import AdapterArchive, adapter_zip_validate
from adapters.validation.folder import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "AdapterArchive", "adapter_zip_validate"]
