"""The adapter zip: written by ``train_prm`` for ``POST /prm_adapter``, checked and unpacked by ``prm_label_worker``.

A downloaded zip is trusted no more than an upload: its sha256 must be the one ``GET /prm_adapters`` lists, it goes
through the server's own check (``adapters.validation.adapter_zip_validate``: no pickled files, no unsafe member
names, a config peft reads, tensors safetensors reads), and only the needed members are extracted, each to a fixed
name, so member names never become paths.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path, PurePosixPath

from adapters.prm.errors import PRMError
from adapters.validation import CONFIG_NAME, WEIGHTS_NAME, adapter_zip_validate
from adapters.validation.folder import PRM_CONFIG_NAME
from prmsite.core.errors import ApplicationError
from prmsite.core.files import atomic_path

# A downloaded adapter passed the server's size checks already; this only bounds a zip bomb from a rogue server.
EXTRACT_MAX_BYTES = 64 * 1024**3
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_zip_write(folder: Path, target: Path) -> Path:
    """Zip the files of ``folder`` (an adapter folder: flat) at the zip's top level into ``target``, atomically."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    target = Path(target)
    with atomic_path(target) as partial, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            # Weights barely compress: store them, deflate the small JSON and text files.
            compress = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            archive.write(path, path.name, compress_type=compress)
    return target


def adapter_zip_extract(zip_path: Path, folder: Path) -> Path:
    """Check the zip like the server does and extract ``adapter_config.json``, ``adapter_model.safetensors`` and, when
    it lies beside them, ``prm_config.json`` into ``folder``; answer ``folder``. ``PRMError`` says what is wrong."""
    try:
        adapter_zip_validate(path=Path(zip_path), max_uncompressed_bytes=EXTRACT_MAX_BYTES)
    except ApplicationError as exc:
        raise PRMError(f"the adapter zip fails its check: {exc.message}") from exc
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        config_member = next(n for n in names if PurePosixPath(n).name == CONFIG_NAME and not n.endswith("/"))
        parent = PurePosixPath(config_member).parent
        for wanted, required in ((CONFIG_NAME, True), (WEIGHTS_NAME, True), (PRM_CONFIG_NAME, False)):
            member = str(parent / wanted) if str(parent) != "." else wanted
            if member not in names:
                if required:
                    raise PRMError(f"the adapter zip has no {member}")
                continue
            with archive.open(member) as source, (folder / wanted).open("wb") as sink:
                while chunk := source.read(_CHUNK):
                    sink.write(chunk)
    return folder
