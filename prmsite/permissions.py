"""The project's default API permission (``REST_FRAMEWORK["DEFAULT_PERMISSION_CLASSES"]``).

Kept apart from ``prmsite.api``: DRF imports its default classes while ``rest_framework.views`` is being imported.
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission


def is_token_request(request) -> bool:
    """The caller authenticated with a worker token (not a browser session)."""
    from knox.models import get_token_model  # noqa: PLC0415 (cycle: DRF loads this module before the app registry is ready)

    return isinstance(getattr(request, "auth", None), get_token_model())


class IsWorkerOrStaff(BasePermission):
    """Workers authenticate with a token; people use the browsable API from a staff session (the admin login).

    Anonymous callers get 401 (TokenAuthentication, the first authenticator, supplies ``WWW-Authenticate``).
    This is the project's default permission: a view that says nothing is closed to everyone else.
    """

    message = "Authenticate with 'Authorization: Token <token>', or log into the admin as staff."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return is_token_request(request) or bool(user.is_staff)
