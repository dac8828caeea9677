"""Django-level error answers: the API's one JSON error shape for programs, Django's HTML pages for browsers.

DRF answers errors inside its views itself (``prmsite.api.exception_handler``); these cover what happens before a
view runs or outside DRF: an unknown path, a malformed request, a refused host, an uncaught exception.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from prmsite.refusals import error_body, wants_json
from prmsite.unavailable import database_unavailable_response, is_database_unavailable


def _error_handler(status: int, detail: str, code: str, html_view):
    """A handler answering the API's JSON shape to programs and ``html_view``'s page to browsers."""

    def handler(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if wants_json(request):
            return JsonResponse(error_body(detail, code), status=status)
        return html_view(request, *args, **kwargs)

    handler.__name__ = html_view.__name__
    return handler


bad_request = _error_handler(400, "Bad request.", "bad_request", defaults.bad_request)
permission_denied = _error_handler(
    403, "You do not have permission to do this.", "permission_denied", defaults.permission_denied
)
page_not_found = _error_handler(
    404, "Nothing here: see /api/docs/ for the endpoints.", "not_found", defaults.page_not_found
)
_server_error = _error_handler(500, "Server error; it has been logged.", "server_error", defaults.server_error)


def server_error(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    """A 500, except for an unreachable database raised outside a view (a middleware): a 503 with Retry-After."""
    exc = sys.exc_info()[1]
    if exc is not None and is_database_unavailable(exc):
        return database_unavailable_response(request)
    return _server_error(request, *args, **kwargs)


class _JsonRefusals:
    """Refusals (401, 403, 404, …) in the API's JSON shape for programs, not in the view's own format: the schema's
    renderers would write them as YAML and the docs' as an HTML page. Only a browser asking for HTML gets the view's
    format (``always_json`` = False)."""

    always_json = True

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and response.exception and (self.always_json or wants_json(request)):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


class SchemaView(_JsonRefusals, SpectacularAPIView):
    """The OpenAPI schema (``/api/schema/``)."""


class DocsView(_JsonRefusals, SpectacularSwaggerSplitView):
    """Swagger UI (``/api/docs/``); its start-up script is a file (Content-Security-Policy: no inline script)."""

    always_json = False
