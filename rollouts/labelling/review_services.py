"""Staff's adjudicated label of a rollout: one per scheme and rollout, replaced by the next decision (the history,
django-simple-history, keeps every version with the user who made it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from rollouts.labelling import rules
from rollouts.models import Adjudication, LabellingScheme, Rollout

REASON_MAX_CHARS = 4000
REASON_REQUIRED = "Say why this is the label: the reason is required."


@dataclass(frozen=True)
class AdjudicationInput:
    ratings: Sequence[int | None]  # -1 / 0 / +1 per step; None: no decision
    notes: Sequence[str]
    finish_reason: str  # blank: from the ratings (rules.label_from_ratings)
    reason: str


def adjudication_record(
    *, scheme: LabellingScheme, rollout: Rollout, data: AdjudicationInput, user, now: datetime
) -> Adjudication:
    """Store (or replace) the scheme's adjudicated label of ``rollout``, by the rules of a person's label in the
    scheme's mode. ``rules.RatingsInvalid`` says what to fix; nothing is written then."""
    reason = data.reason.strip()
    if not reason:
        raise rules.RatingsInvalid(REASON_REQUIRED)
    if len(reason) > REASON_MAX_CHARS:
        raise rules.RatingsInvalid(f"The reason is longer than {REASON_MAX_CHARS} characters.")
    if len(data.ratings) != len(rollout.reasoning):
        raise rules.RatingsInvalid(
            rules.LENGTHS_DIFFER.format(ratings=len(data.ratings), notes=len(data.notes), steps=len(rollout.reasoning))
        )
    label = rules.label_from_ratings(
        data.ratings,
        data.notes,
        finish_reason=data.finish_reason or None,
        stop_at_first_error=scheme.stop_at_first_error,
    )
    with transaction.atomic():
        adjudication, _ = Adjudication.objects.update_or_create(
            scheme=scheme,
            rollout=rollout,
            defaults={
                "prm_output": label.prm_output,
                "rated_steps": label.rated_steps,
                "explanations": label.explanations,
                "reason": reason,
                "decided_by": user,
                "decided_at": now,
            },
        )
    return adjudication
