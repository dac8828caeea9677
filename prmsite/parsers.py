"""The project's default API parser (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``) and the check of incoming text.

Kept apart from ``prmsite.api``: DRF imports its default classes while ``rest_framework.views`` is being imported.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deepest nesting of arrays and objects a JSON body may have (a rollout's extra fields are the deepest thing posted).
JSON_MAX_DEPTH = 32

JSON_TOO_DEEP = f"JSON parse error - nested too deeply (more than {JSON_MAX_DEPTH} levels)."
TEXT_NOT_STORABLE = (
    "Text at {where} cannot be stored: {problem}. Send UTF-8 text without NUL characters or lone UTF-16 surrogates."
)


def text_problem(value: Any, *, where: str = "body", depth: int = 0) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored as it is, naming where; ``None`` when it can.

    Refused: nesting deeper than ``JSON_MAX_DEPTH``, NUL characters (PostgreSQL text cannot hold them) and lone
    UTF-16 surrogates (``"\\ud800"``: valid JSON, but not encodable as UTF-8, so nothing could render it again).
    """
    if depth > JSON_MAX_DEPTH:
        return JSON_TOO_DEEP
    if isinstance(value, str):
        if "\x00" in value:
            return TEXT_NOT_STORABLE.format(where=where, problem="it contains a NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return TEXT_NOT_STORABLE.format(where=where, problem="it contains a lone UTF-16 surrogate")
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            if problem := text_problem(item, where=f"{where}[{index}]", depth=depth + 1):
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{where}.{key}" if where != "body" else str(key)
            if problem := text_problem(key, where=f"a key of {where}", depth=depth + 1) or text_problem(
                item, where=child, depth=depth + 1
            ):
                return problem
        return None
    return None


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the project's limits, every refusal a 4xx: bodies up to ``DATA_UPLOAD_MAX_MEMORY_SIZE``
    (413 beyond), nesting up to ``JSON_MAX_DEPTH``, text that ``text_problem`` accepts.

    DRF reads the request stream itself, past Django's own size check, so the size limit is applied here.
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
            data = stream.read(limit + 1) if stream is not None else b""
            if len(data) > limit:
                raise RequestDataTooBig()
            stream = io.BytesIO(data)
        try:
            parsed = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            raise ParseError(JSON_TOO_DEEP) from exc
        if problem := self.unstorable(parsed):
            raise ParseError(problem)
        return parsed

    def unstorable(self, parsed: Any) -> str | None:
        """Why the parsed body cannot be taken (``text_problem``), or ``None``. An endpoint that answers for each
        item of a body on its own (``POST /rollout/batch``) checks those items itself."""
        return text_problem(parsed)
