"""The 503 "database unavailable" answer, in every form a layer needs it.

A request that finds the database unreachable (``prmsite.errors.is_database_unavailable``) is answered 503 with
``Retry-After``, never a 500: by DRF's exception handler inside an API view (``database_unavailable_api_response``),
by the middleware or Django's 500 handler outside one (``database_unavailable_response``: JSON for programs, a plain
page for browsers), and by the ASGI body guard before Django runs (``database_unavailable_body`` and
``RETRY_AFTER``). The detail is ``prmsite.errors.DATABASE_UNAVAILABLE`` everywhere.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import status
from rest_framework.response import Response

from prmsite.errors import DATABASE_RETRY_AFTER_S, DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_CODE
from prmsite.refusals import error_body, wants_json

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
