"""Uploading a PRM adapter: stream the body to a temporary file, check it, store it once per prm_version."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.db import IntegrityError, transaction

from adapters.models import PRMAdapter
from adapters.storage import STORAGE_FULL, storage_discard, storage_failures_refused
from adapters.validation import adapter_zip_validate
from prmsite.core.errors import ApplicationError, ConflictError, PayloadTooLargeError

EMPTY_BODY = "The body is empty: send the adapter zip as the raw request body (with a Content-Length)."
TOO_LARGE = "The adapter zip is larger than the {limit} bytes allowed (PRM_ADAPTER_MAX_BYTES)."
VERSION_TAKEN = (
    "prm_version {prm_version!r} already has an adapter with different content (sha256 {sha256}); "
    "a prm_version names one adapter for good, so upload under a new prm_version."
)
__all__ = ["EMPTY_BODY", "STORAGE_FULL", "TOO_LARGE", "VERSION_TAKEN", "adapter_upload", "storage_filename"]
_CHUNK = 1024 * 1024
_SPOOL_PREFIX = ".upload-"
_STALE_SPOOL_S = 3600  # a spool this old was left by a server killed mid-upload (no request lasts an hour)


class _SpooledFile(File):
    """The spooled upload; Django's file storage moves a file that has a ``temporary_file_path`` into place (a rename
    on the same file system), so no reader ever sees a half-written adapter under its final name."""

    def temporary_file_path(self) -> str:
        return self.name


@contextlib.contextmanager
def _spool_file() -> Iterator[tuple[Path, BinaryIO]]:
    """A temporary file for the upload, in the storage's own folder when it is a local one (so the final move is a
    rename; the system's temporary folder for an object store, which receives a copy), removed on the way out unless
    it was moved into place. Spools older than an hour, left by a server killed mid-upload, are removed first."""
    storage = PRMAdapter._meta.get_field("file").storage
    folder = None
    with contextlib.suppress(NotImplementedError):
        folder = Path(storage.path("prm_adapters"))
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{_SPOOL_PREFIX}*"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - stale.stat().st_mtime > _STALE_SPOOL_S:
                    stale.unlink()
    fd, name = tempfile.mkstemp(prefix=_SPOOL_PREFIX, suffix=".zip", dir=folder)
    try:
        with os.fdopen(fd, "w+b") as spool:
            yield Path(name), spool
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def storage_filename(prm_version: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", prm_version).strip("._") or "adapter")[:100] + ".zip"


def adapter_upload(
    *,
    prm_version: str,
    base_model: str,
    worker: str,
    body: BinaryIO,
    content_length: int | None,
    max_bytes: int | None = None,
) -> tuple[PRMAdapter, bool]:
    """Store the adapter zip read from ``body`` for ``prm_version``; return it and whether it is new.

    The zip must pass ``adapter_zip_validate`` and fit ``PRM_ADAPTER_MAX_BYTES``. A prm_version holds one adapter for
    good: the same bytes again return the stored adapter, other bytes are a ``ConflictError``. Nothing is kept when
    anything fails (the stored file is removed if its row cannot be written); the file appears under its name whole
    or not at all (a rename in a folder; one PUT, or a multipart upload completed or aborted, in an object store). A
    full disk or store is an ``InsufficientStorageError`` (507), an object store out of reach a
    ``StorageUnavailableError`` (503), with nothing stored either way.
    """
    limit = settings.PRM_ADAPTER_MAX_BYTES if max_bytes is None else max_bytes
    if content_length is not None and content_length > limit:
        raise PayloadTooLargeError(TOO_LARGE.format(limit=limit))
    with storage_failures_refused(), _spool_file() as (spool_path, spool):
        digest = hashlib.sha256()
        size = 0
        while chunk := body.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(TOO_LARGE.format(limit=limit))
            digest.update(chunk)
            spool.write(chunk)
        spool.flush()
        os.fsync(spool.fileno())
        if size == 0:
            raise ApplicationError(EMPTY_BODY)
        sha256 = digest.hexdigest()

        existing = PRMAdapter.objects.filter(prm_version=prm_version).first()
        if existing is not None:
            existing = _same_or_conflict(existing, sha256=sha256)
            storage = existing.file.storage
            if not storage.exists(existing.file.name):
                # Storage lost the file: the same bytes (same sha256, validated when first stored) put it back.
                name = storage.save(existing.file.name, _SpooledFile(spool, name=str(spool_path)))
                if name != existing.file.name:
                    PRMAdapter.objects.filter(pk=existing.pk).update(file=name)
                    existing.file.name = name
            return existing, False

        # A zip may unpack to no more than the upload limit itself (a zip bomb stops here, before anything is read).
        adapter_zip_validate(path=spool_path, max_uncompressed_bytes=limit)

        adapter = PRMAdapter(prm_version=prm_version, base_model=base_model, worker=worker, sha256=sha256, size=size)
        adapter.file.save(storage_filename(prm_version), _SpooledFile(spool, name=str(spool_path)), save=False)
    try:
        with transaction.atomic():
            adapter.save()
    except IntegrityError:
        # A concurrent upload of the same prm_version won; keep its file, not ours.
        storage_discard(adapter.file.storage, adapter.file.name)
        return _same_or_conflict(PRMAdapter.objects.get(prm_version=prm_version), sha256=sha256), False
    except BaseException:
        storage_discard(adapter.file.storage, adapter.file.name)
        raise
    return adapter, True


def _same_or_conflict(existing: PRMAdapter, *, sha256: str) -> PRMAdapter:
    if existing.sha256 != sha256:
        raise ConflictError(
            VERSION_TAKEN.format(prm_version=existing.prm_version, sha256=existing.sha256),
            extra={"prm_version": existing.prm_version, "sha256": existing.sha256},
        )
    return existing
