"""Shared pieces of the API: the exception handler (every domain error leaves as a 4xx JSON body
``{"detail": …, "code": …, …}``), the worker-or-staff permission and a size-bounded JSON parser."""

from __future__ import annotations

import io

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from prmsite.errors import ApplicationError

# The error answers every endpoint documents in the OpenAPI schema.
ERROR_RESPONSES = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Bad input: the JSON body says what is wrong."),
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="No or bad token."),
}


def exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, "code": exc.code, **exc.extra}, status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": exc.messages, "code": "invalid"}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body is larger than the server accepts.", "code": "too_large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    return drf_exception_handler(exc, context)


class IsWorkerOrStaff(BasePermission):
    """Workers authenticate with a token; people use the browsable API from a staff session (the admin login).

    Anonymous callers get 401 (TokenAuthentication, the first authenticator, supplies ``WWW-Authenticate``).
    """

    message = "Authenticate with 'Authorization: Token <token>', or log into the admin as staff."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return isinstance(request.auth, Token) or bool(user.is_staff)


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, refusing bodies larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with 413.

    DRF reads the request stream itself, past Django's own size check, so the limit is applied here.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            declared = request.META.get("CONTENT_LENGTH") if request is not None else None
            try:
                too_big = declared is not None and int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                raise RequestDataTooBig()
            data = stream.read(limit + 1)
            if len(data) > limit:
                raise RequestDataTooBig()
            stream = io.BytesIO(data)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError("JSON parse error - nested too deeply.") from exc
