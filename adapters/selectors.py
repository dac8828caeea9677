"""Reads of PRM adapters."""

from __future__ import annotations

from django.db.models import QuerySet

from adapters.models import PRMAdapter
from prmsite.errors import NotFoundError

ADAPTER_NOT_FOUND = "No adapter for prm_version {prm_version!r}."


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
