"""Worker tokens, stored hashed (django-rest-knox): the database keeps a SHA-512 digest and a 15-character lookup
prefix, never the token; a token is shown once, when it is made (``create_worker_token``, or the admin's "Add auth
token"). Workers send it as ``Authorization: Token <token>``, as before.

``WorkerTokenAuthentication`` is knox's scheme, hardened against hostile headers: a token that is not 32 to 128
hexadecimal characters (knox makes 64; tokens from before hashing have 40) is refused before any database lookup, so
no bytes (non-UTF-8, NUL) ever reach a query. It reads the database once a request: the token with its user. (knox
also loads every other token of the user on each request, to delete the expired ones: a second query on every
request of the API, for rows that can never authenticate. Here an expired token is refused and deleted when it is
presented, as knox does.)
"""

from __future__ import annotations

import re
from hmac import compare_digest

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS, knox_settings
from knox.signals import token_expired
from rest_framework import exceptions

TOKEN_FORM = re.compile(rb"[0-9a-f]{32,128}")


class WorkerTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, token: bytes):
        if not TOKEN_FORM.fullmatch(token):
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        text = token.decode("ascii")
        digest = hash_token(text)
        candidates = get_token_model().objects.filter(token_key=text[: CONSTANTS.TOKEN_KEY_LENGTH])
        for auth_token in candidates.select_related("user"):
            if auth_token.expiry is not None and auth_token.expiry < timezone.now():
                username = auth_token.user.get_username()
                auth_token.delete()
                token_expired.send(sender=self.__class__, username=username, source="auth_token")
                continue
            if compare_digest(digest, auth_token.digest):
                if knox_settings.AUTO_REFRESH and auth_token.expiry:
                    self.renew_token(auth_token)
                return self.validate_user(auth_token)
        raise exceptions.AuthenticationFailed(_("Invalid token."))


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
