"""Domain errors. Services raise these; the API's exception handler turns them into a 4xx with a JSON body, and
management commands into a one-line ``CommandError``. Services never raise HTTP exceptions."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """Bad input or a request the current state cannot satisfy. ``status_code`` is the HTTP status it maps to."""

    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # a finer code than the class's, for clients to branch on (e.g. "already_labelled")
        self.extra = extra or {}


class NotFoundError(ApplicationError):
    status_code = 404
    code = "not_found"


class ConflictError(ApplicationError):
    status_code = 409
    code = "conflict"


class UnprocessableError(ApplicationError):
    """Well-formed input that contradicts what is stored (a label's length against its rollout's steps, an example
    that names no tree of the forest): 422, so that a 400 always means the request itself breaks the API schema."""

    status_code = 422


class PayloadTooLargeError(ApplicationError):
    status_code = 413
    code = "too_large"


class InsufficientStorageError(ApplicationError):
    """The server's disk (or its quota) is full: nothing was stored, the same request may succeed later."""

    status_code = 507
    code = "insufficient_storage"


class StorageUnavailableError(ApplicationError):
    """The file storage (an object store over the network) could not be reached or refused the request: nothing was
    stored, the same request may succeed later."""

    status_code = 503
    code = "storage_unavailable"


class ConfigError(ApplicationError):
    """An experiment config cannot be found, loaded or used as it is."""

    code = "invalid_config"
