"""The one shape of every refusal, ``{"detail": str, "code": str, …}``, and whether a caller reads it as JSON.

Every layer that refuses a request (DRF's exception handler, Django's error handlers, the middleware, the ASGI body
guard) writes its body with ``error_body``; this module imports nothing of ours, so any of them may import it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    """The one shape of every refusal."""
    return {"detail": str(detail), "code": str(code), **extra}


def wants_json(request: HttpRequest) -> bool:
    """A program rather than a browser: it sent a token, or it does not ask for HTML."""
    if request.META.get("HTTP_AUTHORIZATION"):
        return True
    return "text/html" not in request.META.get("HTTP_ACCEPT", "")
