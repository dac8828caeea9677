"""Worker tokens, stored hashed (django-rest-knox): the database keeps a SHA-512 digest and a 15-character lookup
prefix, never the token; a token is shown once, when it is made (``create_worker_token``, or the admin's "Add auth
token"). Workers send it as ``Authorization: Token <token>``, as before.

``WorkerTokenAuthentication`` is knox's scheme, hardened against hostile headers: a token that is not 32 to 128
hexadecimal characters (knox makes 64; tokens from before hashing have 40) is refused before any database lookup, so
no bytes (non-UTF-8, NUL) ever reach a query.
"""

from __future__ import annotations

import re

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from rest_framework import exceptions

TOKEN_FORM = re.compile(rb"[0-9a-f]{32,128}")


class WorkerTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: bytes):
        if not TOKEN_FORM.fullmatch(token):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        return super().authenticate_credentials(token)


class WorkerTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes ``WorkerTokenAuthentication``: the ``Authorization: Token <token>`` header."""

    target_class = WorkerTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A worker token with the prefix "Token": `Authorization: Token <token>` '
            "(python manage.py create_worker_token NAME).",
        }
