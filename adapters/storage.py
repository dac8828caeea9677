"""Adapter files in whichever storage ``STORAGES["default"]`` names: a local (or shared) folder, or an S3-compatible
bucket through django-storages. What differs between the two lives here: how a storage failure is answered, and how
a stored zip is read back as a stream.

Failures: a full disk or quota (ENOSPC, EDQUOT, EFBIG) and an object store that says it is full (HTTP 507, MinIO's
``XMinioStorageFull``) are ``InsufficientStorageError`` (507); an object store that cannot be reached or answers an
error is ``StorageUnavailableError`` (503). Either way nothing was stored.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.storage import Storage

from prmsite.core.errors import InsufficientStorageError, StorageUnavailableError

STORAGE_FULL = "The server's adapter storage is full; nothing was stored. Retry once space has been freed."
STORAGE_UNAVAILABLE = (
    "The server's adapter storage could not be reached or refused the request ({reason}); nothing was stored. "
    "Retry in a moment."
)
_STORAGE_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# What S3-compatible servers answer when they are out of space (MinIO; HTTP 507 from any of them).
_STORAGE_FULL_CODES = {"XMinioStorageFull", "InsufficientStorage", "QuotaExceeded"}
_OBJECT_STORE_ERRORS = (BotoCoreError, ClientError, Boto3Error)

logger = logging.getLogger("prmsite.adapters")


def _client_error_status(exc: ClientError) -> tuple[int | None, str]:
    response: dict[str, Any] = exc.response or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, str(response.get("Error", {}).get("Code", ""))


def _is_object_store_full(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    status, code = _client_error_status(exc)
    return status == 507 or code in _STORAGE_FULL_CODES


@contextlib.contextmanager
def storage_failures_refused() -> Iterator[None]:
    """Turn the storage's own failures into the domain's: full -> ``InsufficientStorageError`` (507), an object store
    out of reach or answering an error -> ``StorageUnavailableError`` (503). Other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _STORAGE_FULL_ERRNOS:
            raise InsufficientStorageError(STORAGE_FULL) from exc
        raise
    except _OBJECT_STORE_ERRORS as exc:
        if _is_object_store_full(exc):
            raise InsufficientStorageError(STORAGE_FULL) from exc
        logger.error("Adapter storage failed: %s", exc, exc_info=exc)
        raise StorageUnavailableError(STORAGE_UNAVAILABLE.format(reason=type(exc).__name__)) from exc


def storage_discard(storage: Storage, name: str) -> None:
    """Remove ``name`` from ``storage``, best effort: this runs while another failure is being reported, which must
    not be hidden by a storage that fails too. A file left behind here is named by nothing and only takes space."""
    try:
        storage.delete(name)
    except (OSError, *_OBJECT_STORE_ERRORS) as exc:
        logger.error("Could not remove the adapter file %r after a failed upload: %s", name, exc)


class ObjectStream:
    """An object's body read from the object store as it is sent on: ``read(n)`` and ``close()``, which is all
    ``FileResponse`` needs. No tell/seek, so ``FileResponse`` does not look for a local file of the same name to
    measure; the caller sets Content-Length."""

    def __init__(self, body: Any, size: int) -> None:
        self._body = body
        self.size = size

    def read(self, amount: int = -1) -> bytes:
        return self._body.read(None if amount is None or amount < 0 else amount)

    def close(self) -> None:
        self._body.close()


def storage_open_stream(storage: Storage, name: str):
    """The stored file ``name``, open for reading as a stream: a local file, or the object's body streamed from the
    object store (django-storages' ``S3File`` would download the whole object first). ``FileNotFoundError`` when
    the storage has no such file."""
    handle = storage.open(name, "rb")
    obj = getattr(handle, "obj", None)  # django-storages' S3File: the boto3 Object, already found by a HEAD
    if obj is None:
        return handle
    body = obj.get()["Body"]
    return ObjectStream(body, size=obj.content_length)
