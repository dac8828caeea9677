"""Visit tokens: the labelling page carries the signed instant it was shown to a person, so that the form it posts
proves which rollout, scheme and person it was shown for, and when (the time spent on a label counts from it)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core import signing
from django.http import HttpRequest

from rollouts.models import LabellingScheme

VISIT_SALT = "rollouts.labelling.visit"
# A visit token is about 150 characters; anything much longer is not one (the form refuses it too).
VISIT_TOKEN_MAX_CHARS = 1000


def visit_token(request: HttpRequest, scheme: LabellingScheme, rollout_id: int, now: datetime) -> str:
    """Signed proof that the page of ``rollout_id`` in ``scheme`` was shown to this person at ``now``."""
    visit = {"r": rollout_id, "v": scheme.prm_version, "u": request.user.pk, "t": now.timestamp()}
    return signing.dumps(visit, salt=VISIT_SALT)


def visit_started(request: HttpRequest, token: str, scheme: LabellingScheme, rollout_id: int) -> datetime | None:
    """When the page whose form this is was shown to this person (None when the token is missing, forged, or of
    another rollout, scheme or person)."""
    if len(token) > VISIT_TOKEN_MAX_CHARS:
        return None
    try:
        visit = signing.loads(token, salt=VISIT_SALT)
    except signing.BadSignature:
        return None
    if (
        not isinstance(visit, dict)
        or visit.get("r") != rollout_id
        or visit.get("v") != scheme.prm_version
        or visit.get("u") != request.user.pk
        or not isinstance(visit.get("t"), int | float)
    ):
        return None
    try:
        return datetime.fromtimestamp(visit["t"], tz=UTC)
    except (OverflowError, OSError, ValueError):  # a signed token is ours, but stay safe on what it holds
        return None
