"""Reads of PRM adapters."""

from __future__ import annotations

from django.db.models import QuerySet

from adapters.models import PRMAdapter
from adapters.storage import storage_failures_refused, storage_open_stream
from prmsite.core.errors import NotFoundError

ADAPTER_NOT_FOUND = "No adapter for prm_version {prm_version!r}."
ADAPTER_FILE_MISSING = (
    "The adapter of prm_version {prm_version!r} is recorded but its file {name!r} is missing from storage."
)


def adapter_list() -> QuerySet[PRMAdapter]:
    """Every adapter, oldest first (the last one is the newest PRM version)."""
    return PRMAdapter.objects.order_by("created_at", "id")


def adapter_get(*, prm_version: str) -> PRMAdapter:
    adapter = PRMAdapter.objects.filter(prm_version=prm_version).first()
    if adapter is None:
        raise NotFoundError(ADAPTER_NOT_FOUND.format(prm_version=prm_version))
    return adapter


def adapter_file_path(*, adapter: PRMAdapter) -> str:
    """Where the adapter's zip is on the server: a filesystem path, or the storage name for remote storage."""
    try:
        return adapter.file.path
    except NotImplementedError:
        return adapter.file.name


def adapter_file_open(*, adapter: PRMAdapter):
    """The stored zip, open for reading as a stream (from the object store as it is read, when the storage is one);
    ``NotFoundError`` when storage lost it (the row is kept: uploading the same bytes again puts the file back),
    ``StorageUnavailableError`` when an object store cannot be reached."""
    try:
        with storage_failures_refused():
            return storage_open_stream(adapter.file.storage, adapter.file.name)
    except FileNotFoundError as exc:
        raise NotFoundError(
            ADAPTER_FILE_MISSING.format(prm_version=adapter.prm_version, name=adapter.file.name)
        ) from exc
