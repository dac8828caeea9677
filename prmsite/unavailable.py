"""The database is unavailable for a moment: what every layer answers then (a 503 with a Retry-After, never a 500).

The HTTP shaping lives beside each layer (the API's exception handler, the middleware, the ASGI body guard); the rule
of what counts as "unavailable" and its message are written here once."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError

# The database is unreachable for a moment (restarted, connections refused, locked beyond the busy timeout, the
# connection pool exhausted): requests are answered 503 with this detail and a Retry-After, never a 500.
DATABASE_UNAVAILABLE = "The database is unavailable for the moment; retry in a few seconds."
DATABASE_UNAVAILABLE_CODE = "database_unavailable"
DATABASE_RETRY_AFTER_S = 5


def log_database_unavailable(exc: BaseException) -> None:
    """Log what made a request a 503, with its traceback: an ``OperationalError`` may also be a fault of ours (a
    missing table), which the operator must still see."""
    logging.getLogger("prmsite.database").error("Database unavailable, answered 503: %s", exc, exc_info=exc)


def is_database_unavailable(exc: BaseException) -> bool:
    """``exc`` says the database could not be reached or used right now (not that a query or the data is wrong).

    Django raises ``OperationalError`` for a refused or dropped connection, a lock held beyond SQLite's busy timeout
    and psycopg_pool's ``PoolTimeout`` (which it wraps), and ``InterfaceError`` for a connection already closed.
    """
    return isinstance(exc, OperationalError | InterfaceError)
