"""Writes of the labelling pages: the next rollout, drafts, labels and skips of a person.

People share the API's queue: ``labelling_next`` claims through ``rollouts.queue.checkout_claim`` and
``label_submit`` stores through ``label_create``, so the lease and label rules (one label per rollout and person, K
labellers per rollout, a leased rollout refused to others) are the same for people, AI judges and PRMs.

Time spent is measured by the server: each page view carries the instant it was shown (``visit_started``); a save or
a submit counts the time since then, or since the draft's ``counted_until`` when later, so no stretch of time is
counted twice (two tabs, a save on leaving the page and the submit after it). One stretch counts at most
``VISIT_SECONDS_MAX``, so a page left open overnight does not count the night; the page's script also reports when
it is hidden and shown again (``resume``), and the time it was hidden is not counted.

Who may work on which rollout (issue 17, item 12): a person saves a draft of, submits, or is shown a rollout only
when it was handed to them: they hold a live lease of it, they have a draft of it (drafts are only written for
rollouts handed to them), or the server showed them its page (``visit_started``: the view passes it only from a
signed visit token issued to this person for this rollout and scheme, so an expired lease does not lose the work in
hand). Anything else is ``NotHandedOut`` (403), and nothing is written.

Skipping keeps the work: ``label_skip`` gives the lease back, keeps the person's draft (ratings, notes, time) and
records a ``LabelSkip``, so the claim hands the rollout back to them behind the rest of their queue; labelling it drops
the skip. A label's author may revise it while the scheme is open (``label_revise``): the label row keeps the latest
values, each revision keeps the values it replaced (``LabelRevision``), and the time spent adds up.

A person holds at most one lease per scheme: ``labelling_next`` and ``label_skip`` run under a lock on the person's
user row (SQLite: the database's write lock, taken when the transaction begins), so twenty parallel clicks on *next*
read what the first one leased instead of each claiming a rollout of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from prmsite.core.errors import ApplicationError, ConflictError
from rollouts.labelling import gold, rules
from rollouts.labelling.selectors import leases_held
from rollouts.labels import label_create
from rollouts.models import (
    GoldAnswer,
    LabelDraft,
    LabellingScheme,
    LabelRevision,
    LabelSkip,
    ProcessRewardLabel,
    Rollout,
    RolloutCheckout,
)
from rollouts.queue import checkout_claim, checkout_release, checkout_renew

# The longest stretch of time on a page counted at once (seconds).
VISIT_SECONDS_MAX = 30 * 60
# Longest note per step (characters).
NOTE_MAX_CHARS = 5000

SCHEME_CLOSED = "The scheme {prm_version!r} is closed: it hands out no more rollouts."
RATINGS_INVALID = "ratings_invalid"
REVISION_CLOSED = "The scheme {prm_version!r} is closed: its labels can no longer be revised."
REVISION_NOT_AUTHOR = (
    "You have no label of rollout #{rollout_id} in {prm_version}: only a label's author may revise it. Nothing was "
    "stored."
)
NOT_HANDED_OUT = (
    "Rollout #{rollout_id} was not handed to you in {prm_version}: nothing was stored. Take the next one from the "
    "queue instead."
)


class NotHandedOut(ApplicationError):
    """Work on a rollout the person was never handed (no lease, no draft, no page shown to them): refused."""

    status_code = 403
    code = "not_checked_out"


class NotRevisable(ApplicationError):
    """A revision of a label the person did not give (they have none of the rollout): refused, nothing written."""

    status_code = 403
    code = "not_author"


class RevisionClosed(ApplicationError):
    """A revision in a closed scheme: refused, nothing written."""

    status_code = 409
    code = "scheme_closed"


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


def _person_lock(username: str) -> None:
    """Serialise the claims of one person: lock their user row until the transaction ends (PostgreSQL: FOR NO KEY
    UPDATE, which their draft inserts, taking a key-share lock, do not wait for; SQLite: the transaction holds the
    database's write lock from its start already). Must run inside ``transaction.atomic``."""
    list(get_user_model().objects.select_for_update(no_key=True).filter(username=username).values_list("pk"))


def _next_locked(*, scheme: LabellingScheme, username: str, now: datetime, exclude: Sequence[int] = ()) -> int | None:
    skipped = set(exclude)
    held = [i for i in leases_held(prm_version=scheme.prm_version, username=username, now=now) if i not in skipped]
    if held:
        return held[0]
    gold_id = gold.gold_next(scheme=scheme, username=username, now=now, exclude=list(skipped))
    if gold_id is not None:  # a gold item handed out before, or one due by the scheme's rate (rollouts.labelling.gold)
        return gold_id
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


def labelling_next(*, scheme: LabellingScheme, username: str, now: datetime) -> int | None:
    """The rollout ``username`` labels next in ``scheme``: one they hold a live lease of (the earliest claimed), else a
    new claim; None when the queue has nothing for them.

    A person holds at most one lease of the scheme: the check of what they hold and the claim run in one transaction
    under a lock on their user row, so concurrent calls (a page opened twice, twenty parallel clicks) claim one
    rollout and answer it to all of them.

    ``ApplicationError`` when the scheme is closed and they hold nothing."""
    with transaction.atomic():
        _person_lock(username)
        return _next_locked(scheme=scheme, username=username, now=now)


def labelling_access_check(
    *, user, prm_version: str, rollout_id: int, now: datetime, visit_started: datetime | None
) -> None:
    """Refuse (``NotHandedOut``) work on a rollout that was not handed to ``user`` in ``prm_version``.

    Allowed: they hold a live lease of it, have a draft of it, have labelled it, or were shown its page
    (``visit_started`` not None: the caller read it from a signed visit token issued to this person for this rollout
    and scheme). A closed scheme changes nothing here: it hands out no new rollouts, and what was handed out may be
    finished."""
    if visit_started is not None:
        return
    username = user.get_username()
    handed = (
        RolloutCheckout.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, claimed_by=username, expires_at__gt=now
        ).exists()
        or LabelDraft.objects.filter(user=user, prm_version=prm_version, rollout_id=rollout_id).exists()
        or ProcessRewardLabel.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, labelled_by=username
        ).exists()
        or gold.gold_handed(user=user, prm_version=prm_version, rollout_id=rollout_id)
    )
    if not handed:
        raise NotHandedOut(NOT_HANDED_OUT.format(rollout_id=rollout_id, prm_version=prm_version))


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

    Nothing is kept once they have labelled the rollout (a save sent as the page is left, after its submit).
    ``NotHandedOut``, and nothing written, for a rollout not handed to them (``labelling_access_check``)."""
    username = user.get_username()
    prm_version = scheme.prm_version
    if ProcessRewardLabel.objects.filter(
        prm_version=prm_version, rollout=rollout, labelled_by=username
    ).exists() or gold.gold_answered(user=user, prm_version=prm_version, rollout_id=rollout.pk):
        return DraftSaved(draft=None, lease_expires_at=None)
    labelling_access_check(
        user=user, prm_version=prm_version, rollout_id=rollout.pk, now=now, visit_started=visit_started
    )
    return _draft_write(
        user=user, scheme=scheme, rollout=rollout, data=data, visit_started=visit_started, now=now, resume=resume
    )


def _draft_write(
    *,
    user,
    scheme: LabellingScheme,
    rollout: Rollout,
    data: LabelInput,
    visit_started: datetime | None,
    now: datetime,
    resume: bool = False,
) -> DraftSaved:
    """``draft_save`` once the person's right to the rollout is established."""
    username = user.get_username()
    prm_version = scheme.prm_version
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


def _step_label(scheme: LabellingScheme, data: LabelInput) -> rules.StepLabel:
    """The ratings as a label (``ApplicationError`` with code ``ratings_invalid``, saying what to fix, when they
    cannot be one)."""
    try:
        return rules.label_from_ratings(
            data.ratings,
            [note[:NOTE_MAX_CHARS] for note in data.notes],
            finish_reason=data.finish_reason or None,
            stop_at_first_error=scheme.stop_at_first_error,
        )
    except rules.RatingsInvalid as exc:
        raise ApplicationError(str(exc), code=RATINGS_INVALID) from exc


def _label_attributes(step_label: rules.StepLabel, data: LabelInput, seconds: float) -> dict:
    return {
        "mode": step_label.mode,
        "finish_reason": step_label.finish_reason,
        "bad_problem": data.bad_problem or step_label.finish_reason == rules.FINISH_BAD_PROBLEM,
        "rated_steps": step_label.rated_steps,
        "seconds_spent": round(seconds, 1),
    }


def label_submit(
    *,
    user,
    scheme: LabellingScheme,
    rollout: Rollout,
    data: LabelInput,
    visit_started: datetime | None,
    now: datetime,
) -> ProcessRewardLabel | GoldAnswer:
    """Store the person's label of ``rollout`` for ``scheme`` and drop their draft; return the label (a gold item
    handed to them: their ``GoldAnswer``, never a label; ``rollouts.labelling.gold``).

    The ratings become a label by ``rules.label_from_ratings`` (``ApplicationError`` with code ``ratings_invalid``,
    saying what to fix, when they cannot). ``attributes`` record the mode, finish reason, bad-problem flag, rated
    steps and seconds spent. When ``label_create`` refuses (``ConflictError``: the lease expired and others took the
    rollout's place, or it has all its labels), the work is kept as the person's draft before the error goes up, so
    nothing they did is lost. ``NotHandedOut``, and nothing written, for a rollout not handed to them
    (``labelling_access_check``).
    """
    labelling_access_check(
        user=user, prm_version=scheme.prm_version, rollout_id=rollout.pk, now=now, visit_started=visit_started
    )
    step_label = _step_label(scheme, data)
    username = user.get_username()
    gold_answer = gold.gold_answer_of(user=user, prm_version=scheme.prm_version, rollout_id=rollout.pk)
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
            attributes = _label_attributes(step_label, data, seconds)
            if gold_answer is not None:  # a gold item: the answer is checked against the gold, never a label
                label = gold.gold_answer_store(
                    answer=gold_answer, step_label=step_label, attributes=attributes, now=now
                )
            else:
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
            LabelSkip.objects.filter(user=user, prm_version=scheme.prm_version, rollout=rollout).delete()
    except ConflictError:
        _draft_write(user=user, scheme=scheme, rollout=rollout, data=data, visit_started=visit_started, now=now)
        raise
    return label


def label_skip(
    *, user, scheme: LabellingScheme, rollout_id: int, now: datetime, visit_started: datetime | None = None
) -> int | None:
    """Give the rollout back to the queue, keep the person's draft of it and record their skip; answer the rollout
    they label next.

    The next one is claimed before the skipped one is released, and the skip (``LabelSkip``, its time renewed on each
    skip) makes the claim hand it back to them only behind the rest of their queue, oldest skip first; when it comes
    back, its page resumes from the draft. The time since ``visit_started`` (the skipped page's visit token, when the
    skip carried one) is added to the draft. Both happen in one transaction under the person's lock, so they never
    hold two leases of the scheme. Always works: a rollout they were not handed (or that does not exist) has nothing
    to give back and records no skip, and a closed scheme just hands out nothing new."""
    username = user.get_username()
    prm_version = scheme.prm_version
    with transaction.atomic():
        _person_lock(username)
        held = RolloutCheckout.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, claimed_by=username, expires_at__gt=now
        ).exists()
        draft = LabelDraft.objects.select_for_update().filter(user=user, prm_version=prm_version, rollout_id=rollout_id)
        draft = draft.first()
        labelled = ProcessRewardLabel.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, labelled_by=username
        ).exists()
        # A gold item is closed unanswered and its draft goes (rollouts.labelling.gold): it never comes back, so it
        # records no skip.
        if gold.gold_skip(user=user, scheme=scheme, rollout_id=rollout_id, now=now):
            draft, held = None, False
        if (held or draft is not None) and not labelled:
            LabelSkip.objects.update_or_create(
                user=user, prm_version=prm_version, rollout_id=rollout_id, defaults={"skipped_at": now}
            )
        if draft is not None and visit_started is not None:
            draft.seconds_spent += _visit_seconds(
                visit_started=visit_started, counted_until=draft.counted_until, now=now
            )
            draft.counted_until = now
            draft.save(update_fields=["seconds_spent", "counted_until", "updated_at"])
        try:
            next_id = _next_locked(scheme=scheme, username=username, now=now, exclude=[rollout_id])
        except ApplicationError:  # a closed scheme hands out nothing new; the skip still gives this one back
            next_id = None
        checkout_release(prm_version=prm_version, rollout_ids=[rollout_id], claimed_by=username)
    return next_id


def own_label(*, user, prm_version: str, rollout_id: int) -> ProcessRewardLabel | None:
    """The label the person gave (they are its caller, ``labelled_by``), if any: one at most per rollout."""
    return ProcessRewardLabel.objects.filter(
        prm_version=prm_version, rollout_id=rollout_id, labelled_by=user.get_username()
    ).first()


def label_revise_check(*, user, scheme: LabellingScheme, rollout_id: int) -> ProcessRewardLabel:
    """The person's label of the rollout, which they may revise; ``NotRevisable`` when they gave none (only a
    label's author revises it), ``RevisionClosed`` when the scheme is closed."""
    label = own_label(user=user, prm_version=scheme.prm_version, rollout_id=rollout_id)
    if label is None:
        raise NotRevisable(REVISION_NOT_AUTHOR.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    if not scheme.is_open:
        raise RevisionClosed(REVISION_CLOSED.format(prm_version=scheme.prm_version))
    return label


def label_revise(
    *,
    user,
    scheme: LabellingScheme,
    rollout: Rollout,
    data: LabelInput,
    visit_started: datetime | None,
    now: datetime,
) -> ProcessRewardLabel:
    """Replace the person's own label of ``rollout`` with new ratings, keeping what it held as a ``LabelRevision``.

    Only the label's author may (``NotRevisable``), and only while the scheme is open (``RevisionClosed``); the
    ratings are checked as for a submit (``ApplicationError`` ``ratings_invalid``). The label row is updated in place
    (so it stays the first label of its rollout where it was: another person's label is still refused when K=1), and
    the time of the revision's page (from ``visit_started``, or from the label's last change when later) is added to
    its ``seconds_spent``. Nothing is written when anything is refused."""
    with transaction.atomic():
        label = label_revise_check(user=user, scheme=scheme, rollout_id=rollout.pk)
        step_label = _step_label(scheme, data)
        label = ProcessRewardLabel.objects.select_for_update().get(pk=label.pk)
        last = LabelRevision.objects.filter(label=label).order_by("-revised_at", "-id").first()
        counted_until = max(label.created_at, last.revised_at) if last is not None else label.created_at
        old_attributes = dict(label.attributes or {})
        seconds = float(old_attributes.get("seconds_spent") or 0.0) + _visit_seconds(
            visit_started=visit_started, counted_until=counted_until, now=now
        )
        LabelRevision.objects.create(
            label=label,
            prm_output=label.prm_output,
            explanations=label.explanations,
            attributes=old_attributes,
            revised_at=now,
        )
        label.prm_output = step_label.prm_output
        label.explanations = step_label.explanations
        label.attributes = {**old_attributes, **_label_attributes(step_label, data, seconds)}
        label.final_reward = float(step_label.prm_output[-1]) if step_label.prm_output else None
        label.save(update_fields=["prm_output", "explanations", "attributes", "final_reward"])
    return label
