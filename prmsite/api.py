"""Shared pieces of the API, made the project's DRF defaults in settings so that an endpoint is safe without saying so:

- ``IsWorkerOrStaff`` (``prmsite.permissions``): a worker token or a staff session; anything else is refused.
- ``BoundedJSONParser`` (``prmsite.parsers``): JSON bodies up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413 beyond), no
  deeper than ``JSON_MAX_DEPTH``, and no text a database cannot store (NUL characters, lone UTF-16 surrogates).
- ``exception_handler``: every refusal leaves as one JSON shape, ``{"detail": str, "code": str}``, plus
  ``"errors": {field: [messages]}`` for validation errors and whatever a domain error adds (``id``, ``missing``, …).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from prmsite.core.errors import ApplicationError
from prmsite.refusals import error_body
from prmsite.unavailable import database_unavailable_api_response, is_database_unavailable, log_database_unavailable

__all__ = [
    "ERROR_RESPONSES",
    "JSON_QUERY",
    "ApiAutoSchema",
    "ApiErrorSerializer",
    "error_response",
    "exception_handler",
    "json_encode",
]


class ApiErrorSerializer(serializers.Serializer):
    """The one shape of every refusal (``error_body``); a refusal may add fields of its own (``id``, ``missing``,
    ``expires_at``, ``stored``, …)."""

    detail = serializers.CharField(help_text="What is wrong, in a sentence.")
    code = serializers.CharField(help_text="Why, for programs: invalid, not_found, conflict, too_large, …")
    errors = serializers.DictField(required=False, help_text="Validation errors: field name to its messages.")


def error_response(description: str) -> OpenApiResponse:
    """An error answer in the OpenAPI schema: the one error shape, with what this status means here."""
    return OpenApiResponse(ApiErrorSerializer, description=description)


# The error answers every endpoint documents in the OpenAPI schema.
ERROR_RESPONSES = {
    400: error_response("Bad input: `detail`, `code` and per-field `errors`."),
    401: error_response("No or bad token."),
}

# Marks the schema of a query parameter that carries JSON (``keys=[1,2,3]``); see ``ApiAutoSchema``.
JSON_QUERY = "x-json-query"


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's schema, with query parameters described as the API reads them.

    An optional query parameter may be empty (``allowEmptyValue``), which means "not given". A field whose schema
    carries ``JSON_QUERY`` (``extend_schema_field({..., JSON_QUERY: True})``) becomes a parameter with
    ``content: {"application/json": {"schema": …}}``: the value is the JSON text of that schema's instances, so a
    client (or a fuzzer) knows ``keys`` is a JSON list of ids, not any string.
    """

    def _get_parameters(self) -> list[dict[str, Any]]:
        parameters = super()._get_parameters()
        for parameter in parameters:
            schema = parameter.get("schema", {})
            if schema.pop(JSON_QUERY, False):
                parameter["content"] = {"application/json": {"schema": parameter.pop("schema")}}
            if parameter["in"] == "query" and not parameter.get("required"):
                # DRF reads an optional query parameter given empty (``limit=``) as not given: its default applies.
                parameter["allowEmptyValue"] = True
        return parameters


BODY_TOO_LARGE = "Request body is larger than the server accepts ({limit} bytes)."
INVALID_INPUT = "Invalid input: {summary}"


def _first_message(messages: Any) -> str:
    while isinstance(messages, list | dict) and messages:
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    return str(messages)


def _validation_body(exc: ValidationError) -> dict[str, Any]:
    detail = exc.detail
    errors = (
        detail if isinstance(detail, dict) else {"non_field_errors": detail if isinstance(detail, list) else [detail]}
    )
    summary = "; ".join(
        f"{field}: {_first_message(messages)}" if field != "non_field_errors" else _first_message(messages)
        for field, messages in errors.items()
    )
    return error_body(INVALID_INPUT.format(summary=summary), "invalid", errors=errors)


def _api_exception_body(exc: APIException) -> dict[str, Any]:
    if isinstance(exc, ValidationError):
        return _validation_body(exc)
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    detail = exc.detail if isinstance(exc.detail, str) else _first_message(exc.detail)
    return error_body(detail, code)


def exception_handler(exc, context):
    # Django's own errors as DRF's (as DRF's handler does), so that they take the one shape too (content negotiation
    # raises Http404 for an unknown ``format``).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.message, exc.code, **exc.extra), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        messages = exc.messages
        return Response(
            error_body(
                INVALID_INPUT.format(summary="; ".join(messages)), "invalid", errors={"non_field_errors": messages}
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if is_database_unavailable(exc):
        log_database_unavailable(exc)
        return database_unavailable_api_response()
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body(BODY_TOO_LARGE.format(limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE), "too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, APIException):
        response.data = _api_exception_body(exc)
    return response


def json_encode(data: Any) -> bytes:
    """``data`` as compact UTF-8 JSON; text UTF-8 cannot hold (a lone surrogate stored before input was checked) is
    written as a JSON escape instead of failing, so an answer can always be rendered."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
