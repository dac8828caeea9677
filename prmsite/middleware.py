"""Request guards that apply to every path, API and pages alike."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin

from prmsite.refusals import error_body
from prmsite.unavailable import database_unavailable_response, is_database_unavailable, log_database_unavailable

NUL_IN_REQUEST = "The URL or the query string contains a NUL character (%00)."


class RejectNulMiddleware(MiddlewareMixin):
    """Refuse a request whose path or query string holds a NUL character, with a 400, before any view runs.

    PostgreSQL cannot compare text with a NUL in it, so such a value reaching a query (``GET /%00`` looks up a forest
    named "\\x00") would be a 500; no legitimate URL holds one.
    """

    def process_request(self, request: HttpRequest):
        if "\x00" in request.path_info or any(
            "\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()
        ):
            return JsonResponse(error_body(NUL_IN_REQUEST, "bad_request"), status=400)
        return None


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """A view (a page, the admin, an API view whose error escaped DRF) that found the database unreachable answers
    503 with Retry-After instead of a 500. The server needs no restart: the next request opens a new connection
    (SQLite, or psycopg_pool, which drops broken connections and reconnects by itself).

    Errors raised before any view (in another middleware) reach ``prmsite.views.server_error``, which answers the
    same 503.
    """

    def process_exception(self, request: HttpRequest, exception: Exception):
        if is_database_unavailable(exception):
            log_database_unavailable(exception)
            return database_unavailable_response(request)
        return None
