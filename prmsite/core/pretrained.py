"""Where ``transformers``' ``from_pretrained`` reads a model named on a command line. Pure: no Django, no torch.

One rule for every command that takes a model (``train_prm --base_model``, ``prm_label_worker --base_model``,
``rollout_worker --tokenizer``): a hub name (``owner/name``), a local ``save_pretrained`` folder, or a ``.gguf``
file, which transformers dequantizes (``from_pretrained(folder, gguf_file=name)``; tokenizer and chat template come
from the file too). A ``.gguf`` name that is not a local file is read as ``owner/repo/file.gguf`` on the hub.
"""

from __future__ import annotations

from pathlib import Path


def pretrained_source(name_or_path: str, *, what: str = "model") -> tuple[str, dict[str, str]]:
    """``(name or folder, extra from_pretrained keyword arguments)`` for ``name_or_path``; ``ValueError`` with one
    line saying what is wrong (``what`` names the flag in it)."""
    path = Path(name_or_path).expanduser()
    # A hub id is "owner/name": never absolute, never starting with "." or "~".
    local = path.is_absolute() or name_or_path.startswith((".", "~"))
    if name_or_path.lower().endswith(".gguf"):
        if path.is_file():
            return str(path.parent), {"gguf_file": path.name}
        repo, _, filename = name_or_path.rpartition("/")
        if local or repo.count("/") != 1 or path.exists():
            raise ValueError(f"{what} {name_or_path}: no such .gguf file (or owner/repo/file.gguf on the hub)")
        return repo, {"gguf_file": filename}
    if path.is_dir():
        return str(path), {}
    if path.exists():
        raise ValueError(f"{what} {name_or_path} is a file: pass a model folder, a .gguf file or a hub name")
    if local:
        raise ValueError(f"{what} {name_or_path}: no such folder")
    return name_or_path, {}
