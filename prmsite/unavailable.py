"""The 503 "database unavailable" answer, in every form a layer needs it.

A request that finds the database unreachable (``is_database_unavailable``) is answered 503 with
``Retry-After``, never a 500: by DRF's exception handler inside an API view (``database_unavailable_api_response``),
by the middleware or Django's 500 handler outside one (``database_unavailable_response``: JSON for programs, a plain
page for browsers), and by the ASGI body guard before Django runs (``database_unavailable_body`` and
``RETRY_AFTER``). The detail is ``DATABASE_UNAVAILABLE`` everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import status
from rest_framework.response import Response

from prmsite.refusals import error_body, wants_json

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


# The value of the Retry-After header of every such 503.
RETRY_AFTER = str(DATABASE_RETRY_AFTER_S)

DATABASE_UNAVAILABLE_PAGE = (
    '<!doctype html><html lang="en"><head><title>Service unavailable</title></head><body>'
    "<h1>Service unavailable</h1><p>The database is unavailable for the moment. Reload the page in a few seconds."
    "</p></body></html>"
)


def database_unavailable_body() -> dict[str, Any]:
    """The JSON body of the 503."""
    return error_body(DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_CODE)


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    """The 503 outside DRF: the API's JSON error shape for programs, a plain page for browsers."""
    if wants_json(request):
        response: HttpResponse = JsonResponse(database_unavailable_body(), status=503)
    else:
        response = HttpResponse(DATABASE_UNAVAILABLE_PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = RETRY_AFTER
    return response


def database_unavailable_api_response() -> Response:
    """The 503 inside a DRF view, rendered as the view renders its answers."""
    return Response(
        database_unavailable_body(),
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": RETRY_AFTER},
    )
