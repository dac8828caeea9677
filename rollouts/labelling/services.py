"""Writes of the labelling pages: the next rollout, drafts, labels and skips of a person.

People share the API's queue: ``labelling_next`` claims through ``rollouts.services.checkout_claim`` and
``label_submit`` stores through ``label_create``, so the lease and label rules (one label per rollout and person, K
labellers per rollout, a leased rollout refused to others) are the same for people, AI judges and PRMs.

Time spent is measured by the server: each page view carries the instant it was shown (``visit_started``); a save or
a submit counts the time since then, or since the draft's ``counted_until`` when later, so no stretch of time is
counted twice (two tabs, a save on leaving the page and the submit after it). One stretch counts at most
``VISIT_SECONDS_MAX``, so a page left open overnight does not count the night; the page's script also reports when
it is hidden and shown again (``resume``), and the time it was hidden is not counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction

from prmsite.errors import ApplicationError, ConflictError
from rollouts.labelling import rules
from rollouts.labelling.selectors import leases_held
from rollouts.models import LabelDraft, LabellingScheme, ProcessRewardLabel, Rollout
from rollouts.services import checkout_claim, checkout_release, checkout_renew, label_create

# The longest stretch of time on a page counted at once (seconds).
VISIT_SECONDS_MAX = 30 * 60
# Longest note per step (characters).
NOTE_MAX_CHARS = 5000

SCHEME_CLOSED = "The scheme {prm_version!r} is closed: it hands out no more rollouts."
RATINGS_INVALID = "ratings_invalid"


@dataclass(frozen=True)
class LabelInput:
    """What the labelling form holds: a rating (-1/0/+1, None) and a note per step, the flag and the finish reason."""

    ratings: list[int | None]
    notes: list[str]
    bad_problem: bool = False
    finish_reason: str = ""  # blank: follows from the ratings


@dataclass(frozen=True)
class DraftSaved:
    draft: LabelDraft | None  # None: the person has labelled the rollout already, so no draft is kept
    lease_expires_at: datetime | None  # their lease after the save (renewed), None when they hold none


def _visit_seconds(*, visit_started: datetime | None, counted_until: datetime | None, now: datetime) -> float:
    if visit_started is None:
        return 0.0
    start = max(visit_started, counted_until) if counted_until is not None else visit_started
    return min(max((now - start).total_seconds(), 0.0), float(VISIT_SECONDS_MAX))


def labelling_next(*, scheme: LabellingScheme, username: str, now: datetime, exclude: Sequence[int] = ()) -> int | None:
    """The rollout ``username`` labels next in ``scheme``: one they hold a live lease of (the earliest claimed), else a
    new claim; None when the queue has nothing for them. A page opened twice never claims a second rollout.

    ``ApplicationError`` when the scheme is closed and they hold nothing."""
    skipped = set(exclude)
    held = [i for i in leases_held(prm_version=scheme.prm_version, username=username, now=now) if i not in skipped]
    if held:
        return held[0]
    if not scheme.is_open:
        raise ApplicationError(SCHEME_CLOSED.format(prm_version=scheme.prm_version), code="scheme_closed")
    result = checkout_claim(
        prm_version=scheme.prm_version,
        claimed_by=username,
        now=now,
        limit=1,
        active_learning=scheme.active_learning,
        reference_prm_version=scheme.reference_prm_version or None,
    )
    return result.ids[0] if result.ids else None


def _draft_fields(rollout: Rollout, data: LabelInput) -> dict:
    steps = len(rollout.reasoning)
    ratings = list(data.ratings)[:steps] + [None] * max(0, steps - len(data.ratings))
    notes = [note[:NOTE_MAX_CHARS] for note in list(data.notes)[:steps]]
    notes += [""] * (steps - len(notes))
    finish_reason = data.finish_reason if data.finish_reason in rules.FINISH_REASONS else ""
    return {"ratings": ratings, "notes": notes, "bad_problem": data.bad_problem, "finish_reason": finish_reason}


def draft_save(
    *,
    user,
    scheme: LabellingScheme,
    rollout: Rollout,
    data: LabelInput,
    visit_started: datetime | None,
    now: datetime,
    resume: bool = False,
) -> DraftSaved:
    """Keep the person's work on a rollout as their draft, add the time since the page was shown (``resume``: add
    none, the page was hidden until now), and renew their live lease of it.

    Nothing is kept once they have labelled the rollout (a save sent as the page is left, after its submit)."""
    username = user.get_username()
    prm_version = scheme.prm_version
    if ProcessRewardLabel.objects.filter(prm_version=prm_version, rollout=rollout, labelled_by=username).exists():
        return DraftSaved(draft=None, lease_expires_at=None)
    fields = _draft_fields(rollout, data)
    with transaction.atomic():
        draft = (
            LabelDraft.objects.select_for_update().filter(user=user, prm_version=prm_version, rollout=rollout).first()
        )
        if draft is None:
            try:
                with transaction.atomic():
                    draft = LabelDraft.objects.create(user=user, prm_version=prm_version, rollout=rollout, **fields)
            except IntegrityError:  # a concurrent save (another tab) created it
                draft = LabelDraft.objects.select_for_update().get(user=user, prm_version=prm_version, rollout=rollout)
        if not resume:
            draft.seconds_spent += _visit_seconds(
                visit_started=visit_started, counted_until=draft.counted_until, now=now
            )
        draft.counted_until = now
        for name, value in fields.items():
            setattr(draft, name, value)
        draft.save()
        expires_at = checkout_renew(prm_version=prm_version, rollout_id=rollout.pk, claimed_by=username, now=now)
    return DraftSaved(draft=draft, lease_expires_at=expires_at)


def draft_discard(*, user, prm_version: str, rollout_id: int) -> int:
    deleted, _ = LabelDraft.objects.filter(user=user, prm_version=prm_version, rollout_id=rollout_id).delete()
    return deleted


def label_submit(
    *,
    user,
    scheme: LabellingScheme,
    rollout: Rollout,
    data: LabelInput,
    visit_started: datetime | None,
    now: datetime,
) -> ProcessRewardLabel:
    """Store the person's label of ``rollout`` for ``scheme`` and drop their draft; return the label.

    The ratings become a label by ``rules.label_from_ratings`` (``ApplicationError`` with code ``ratings_invalid``,
    saying what to fix, when they cannot). ``attributes`` record the mode, finish reason, bad-problem flag, rated
    steps and seconds spent. When ``label_create`` refuses (``ConflictError``: the lease expired and others took the
    rollout's place, or it has all its labels), the work is kept as the person's draft before the error goes up, so
    nothing they did is lost.
    """
    try:
        step_label = rules.label_from_ratings(
            data.ratings,
            [note[:NOTE_MAX_CHARS] for note in data.notes],
            finish_reason=data.finish_reason or None,
            stop_at_first_error=scheme.stop_at_first_error,
        )
    except rules.RatingsInvalid as exc:
        raise ApplicationError(str(exc), code=RATINGS_INVALID) from exc
    username = user.get_username()
    try:
        with transaction.atomic():
            draft = (
                LabelDraft.objects.select_for_update()
                .filter(user=user, prm_version=scheme.prm_version, rollout=rollout)
                .first()
            )
            seconds = (draft.seconds_spent if draft else 0.0) + _visit_seconds(
                visit_started=visit_started, counted_until=draft.counted_until if draft else None, now=now
            )
            attributes = {
                "mode": step_label.mode,
                "finish_reason": step_label.finish_reason,
                "bad_problem": data.bad_problem or step_label.finish_reason == rules.FINISH_BAD_PROBLEM,
                "rated_steps": step_label.rated_steps,
                "seconds_spent": round(seconds, 1),
            }
            label, _created = label_create(
                rollout_id=rollout.pk,
                prm_version=scheme.prm_version,
                prm_output=step_label.prm_output,
                worker=username,
                labelled_by=username,
                explanations=step_label.explanations,
                attributes=attributes,
                now=now,
            )
            if draft is not None:
                draft.delete()
    except ConflictError:
        draft_save(user=user, scheme=scheme, rollout=rollout, data=data, visit_started=visit_started, now=now)
        raise
    return label


def label_skip(*, user, scheme: LabellingScheme, rollout_id: int, now: datetime) -> int | None:
    """Give the rollout back to the queue and drop the person's draft of it; answer the rollout they label next.

    The next one is claimed before the skipped one is released, so the skipped one does not come straight back to
    them (it goes to someone else, or back to them once the queue comes round to it)."""
    username = user.get_username()
    try:
        next_id = labelling_next(scheme=scheme, username=username, now=now, exclude=[rollout_id])
    except ApplicationError:  # a closed scheme hands out nothing new; the skip still gives this one back
        next_id = None
    checkout_release(prm_version=scheme.prm_version, rollout_ids=[rollout_id], claimed_by=username)
    draft_discard(user=user, prm_version=scheme.prm_version, rollout_id=rollout_id)
    return next_id
