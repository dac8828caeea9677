"""Django-level error answers: the API's one JSON error shape for programs, Django's HTML pages for browsers.

DRF answers errors inside its views itself (``prmsite.api.exception_handler``); these cover what happens before a
view runs or outside DRF: an unknown path, a malformed request, a refused host, an uncaught exception.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

from prmsite.api import error_body


def wants_json(request: HttpRequest) -> bool:
    """A program rather than a browser: it sent a token, or it does not ask for HTML."""
    if request.META.get("HTTP_AUTHORIZATION"):
        return True
    return "text/html" not in request.META.get("HTTP_ACCEPT", "")


def _json_or(request: HttpRequest, *, status: int, detail: str, code: str, html) -> HttpResponse:
    if wants_json(request):
        return JsonResponse(error_body(detail, code), status=status)
    return html()


def bad_request(request: HttpRequest, exception=None) -> HttpResponse:
    return _json_or(
        request,
        status=400,
        detail="Bad request.",
        code="bad_request",
        html=lambda: defaults.bad_request(request, exception),
    )


def permission_denied(request: HttpRequest, exception=None) -> HttpResponse:
    return _json_or(
        request,
        status=403,
        detail="You do not have permission to do this.",
        code="permission_denied",
        html=lambda: defaults.permission_denied(request, exception),
    )


def page_not_found(request: HttpRequest, exception=None) -> HttpResponse:
    return _json_or(
        request,
        status=404,
        detail="Nothing here: see /api/docs/ for the endpoints.",
        code="not_found",
        html=lambda: defaults.page_not_found(request, exception),
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return _json_or(
        request,
        status=500,
        detail="Server error; it has been logged.",
        code="server_error",
        html=lambda: defaults.server_error(request),
    )
