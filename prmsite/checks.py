"""System checks of the project's own settings."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register

W001 = (
    "DJANGO_SECRET_KEY is not set: using the key generated on this machine in {path}. "
    "Pass a key of your own through the environment in production."
)


@register(Tags.security, deploy=True)
def check_secret_key_from_environment(app_configs, **kwargs):
    if settings.SECRET_KEY_FROM_ENV:
        return []
    return [Warning(W001.format(path=settings.SECRET_KEY_FILE), id="prmsite.W001")]
