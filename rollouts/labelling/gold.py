"""Gold checks: rollouts of a scheme whose ratings staff know, mixed into labellers' queues unmarked, and each
labeller's answers checked against them (PRM800K's quality control).

- Staff mark a rollout gold with its expected ratings: entered on the gold page, taken from the scheme's adjudicated
  label of it, or imported (``import_gold``). The ratings pass the labelling page's rules
  (``rules.label_from_ratings``, the scheme's mode); the rollout must be in the scheme's scope (a gold item should
  look like the rest of the work), and once gold it is out of the scope (``rollouts.scope``), so the queue never
  hands it out and it gets no more data labels (labels it had before stay data).
- The mix: ``gold_next`` runs in ``services._next_locked`` under the person's lock, after the leases they hold. An
  open gold item of theirs comes first; else, in an open scheme, when ``gold_metrics.gold_due`` says so, the gold
  item with the smallest id they have not had (nor labelled) is handed to them: a ``GoldAnswer`` row and a lease
  in the scheme like any claim's, on the same page, so nothing tells it apart. Each labeller gets each gold item
  at most once.
- The answer: ``label_submit`` stores a gold item's ratings in its ``GoldAnswer`` (never a ``ProcessRewardLabel``),
  with the same attributes as a label, and ends the lease. A skipped gold item is closed unanswered: it never comes
  back to them and counts in no figure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Max

from prmsite.core.errors import ApplicationError
from rollouts.labelling import rules
from rollouts.labelling.gold_metrics import GoldCheck, GoldScore, gold_due, gold_scores, labellers_below
from rollouts.models import (
    GOLD_FROM_ADJUDICATION,
    GOLD_FROM_IMPORT,
    GOLD_FROM_STAFF,
    Adjudication,
    GoldAnswer,
    GoldItem,
    LabelDraft,
    LabellingScheme,
    ProcessRewardLabel,
    Rollout,
    RolloutCheckout,
)
from rollouts.queue import queue_cursor_rewind
from rollouts.scope import scheme_rollouts

# What a skipped gold item records in its answer's attributes.
SKIPPED = "skipped"
# Gold answers a labeller needs before the export may leave them out for a low accuracy (default).
GOLD_MIN_ANSWERS_DEFAULT = 5

NO_ROLLOUT = "No rollout #{rollout_id}."
NOT_IN_SCOPE = "Rollout #{rollout_id} is not in the scope of {prm_version}: gold items are rollouts the scheme labels."
ALREADY_GOLD = "Rollout #{rollout_id} is a gold item of {prm_version} already."
TOO_MANY_RATINGS = "{given} ratings for the {steps} steps of rollout #{rollout_id}."
NOT_RATINGS = "Ratings are -1, 0, +1 (or empty for an unrated step), separated by spaces or commas: {value!r}."
NO_ADJUDICATION = "Rollout #{rollout_id} has no adjudicated label in {prm_version}."
BAD_GOLD = "Rollout #{rollout_id}: {reason}"
IMPORT_LINE = "Line {number}: {reason} Nothing was imported."
IMPORT_NOT_JSON = "not a JSON object."
IMPORT_FIELDS = 'give "rollout_id" (an integer) and either "ratings" (-1, 0, +1, null) or "prm_output" (codes 0, 1, 2).'
IMPORT_TWICE = "rollout #{rollout_id} is on line {first} already."
IMPORT_EMPTY = "The file holds no gold item."


class GoldError(ApplicationError):
    """A gold item that cannot be stored as asked; ``message`` says why in one line."""

    code = "gold_invalid"


# --- marking gold -------------------------------------------------------------------------------------------------


def ratings_parse(text: str) -> list[int | None]:
    """The gold page's ratings field: ``-1 0 +1 …`` (spaces or commas; ``_`` or ``.`` for an unrated step)."""
    values: list[int | None] = []
    for token in [t for t in re.split(r"[\s,;]+", text.strip()) if t]:
        if token in ("_", "."):
            values.append(None)
        elif token in ("-1", "\u22121", "-"):
            values.append(rules.RATING_WRONG)
        elif token == "0":  # noqa: S105 (a rating, not a password)
            values.append(rules.RATING_NEUTRAL)
        elif token in ("1", "+1", "+"):
            values.append(rules.RATING_RIGHT)
        else:
            raise GoldError(NOT_RATINGS.format(value=token))
    return values


def _expected(scheme: LabellingScheme, rollout: Rollout, ratings: Sequence[int | None]) -> rules.StepLabel:
    """The gold's ratings as a label, by the labelling page's rules; fewer ratings than steps leave the last unrated."""
    steps = len(rollout.reasoning)
    if len(ratings) > steps:
        raise GoldError(TOO_MANY_RATINGS.format(given=len(ratings), steps=steps, rollout_id=rollout.pk))
    padded = list(ratings) + [None] * (steps - len(ratings))
    try:
        return rules.label_from_ratings(
            padded, [""] * steps, finish_reason=None, stop_at_first_error=scheme.stop_at_first_error
        )
    except rules.RatingsInvalid as exc:
        raise GoldError(BAD_GOLD.format(rollout_id=rollout.pk, reason=exc)) from exc


def _markable(scheme: LabellingScheme, rollout_id: int) -> Rollout:
    rollout = Rollout.objects.filter(pk=rollout_id).only("id", "reasoning").first()
    if rollout is None:
        raise GoldError(NO_ROLLOUT.format(rollout_id=rollout_id))
    if GoldItem.objects.filter(scheme=scheme, rollout_id=rollout_id).exists():
        raise GoldError(ALREADY_GOLD.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    if not scheme_rollouts(scheme).filter(pk=rollout_id).exists():
        raise GoldError(NOT_IN_SCOPE.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    return rollout


def _create(*, scheme: LabellingScheme, rollout_id: int, prm_output, rated_steps: int, source: str, user) -> GoldItem:
    try:
        with transaction.atomic():
            return GoldItem.objects.create(
                scheme=scheme,
                rollout_id=rollout_id,
                prm_output=list(prm_output),
                rated_steps=rated_steps,
                source=source,
                created_by=user,
            )
    except IntegrityError as exc:  # marked meanwhile (another tab)
        raise GoldError(ALREADY_GOLD.format(rollout_id=rollout_id, prm_version=scheme.prm_version)) from exc


def gold_mark(
    *, scheme: LabellingScheme, rollout_id: int, ratings: Sequence[int | None], user=None, source: str = GOLD_FROM_STAFF
) -> GoldItem:
    """Mark a rollout of the scheme's scope gold with these ratings (-1/0/+1, None); ``GoldError`` says why not."""
    rollout = _markable(scheme, rollout_id)
    expected = _expected(scheme, rollout, ratings)
    return _create(
        scheme=scheme,
        rollout_id=rollout.pk,
        prm_output=expected.prm_output,
        rated_steps=expected.rated_steps,
        source=source,
        user=user,
    )


def gold_from_adjudication(*, scheme: LabellingScheme, rollout_id: int, user=None) -> GoldItem:
    """Mark a rollout gold with the scheme's adjudicated label of it (its codes and rated steps, as decided)."""
    adjudication = Adjudication.objects.filter(scheme=scheme, rollout_id=rollout_id).first()
    if adjudication is None:
        raise GoldError(NO_ADJUDICATION.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    if GoldItem.objects.filter(scheme=scheme, rollout_id=rollout_id).exists():
        raise GoldError(ALREADY_GOLD.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    return _create(
        scheme=scheme,
        rollout_id=rollout_id,
        prm_output=adjudication.prm_output,
        rated_steps=adjudication.rated_steps,
        source=GOLD_FROM_ADJUDICATION,
        user=user,
    )


def gold_delete_many(*, items: Sequence[GoldItem]) -> int:
    """Delete gold items (their answers go with them); each rollout is back in its scheme's scope, so the scheme's
    queue cursors are put back to it and the queue hands it out again. Answer how many were deleted."""
    with transaction.atomic():
        for item in items:
            queue_cursor_rewind(prm_version=item.scheme.prm_version, rollout_id=item.rollout_id)
        deleted, _ = GoldItem.objects.filter(pk__in=[item.pk for item in items]).delete()
    return deleted


def adjudications_not_gold(*, scheme: LabellingScheme, limit: int = 50) -> list[Adjudication]:
    """The scheme's adjudicated rollouts that are not gold yet, latest decision first."""
    gold = GoldItem.objects.filter(scheme=scheme).values("rollout_id")
    return list(
        Adjudication.objects.filter(scheme=scheme)
        .exclude(rollout_id__in=gold)
        .select_related("decided_by")
        .order_by("-decided_at", "-id")[:limit]
    )


@dataclass(frozen=True)
class _ImportLine:
    number: int
    rollout_id: int
    ratings: list[int | None] | None
    prm_output: list | None


def _import_line(number: int, text: str) -> _ImportLine:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise GoldError(IMPORT_LINE.format(number=number, reason=IMPORT_NOT_JSON))
    rollout_id = data.get("rollout_id")
    ratings, codes = data.get("ratings"), data.get("prm_output")
    if (
        isinstance(rollout_id, bool)
        or not isinstance(rollout_id, int)
        or (ratings is None) == (codes is None)
        or not isinstance(ratings if ratings is not None else codes, list)
    ):
        raise GoldError(IMPORT_LINE.format(number=number, reason=IMPORT_FIELDS))
    return _ImportLine(number=number, rollout_id=rollout_id, ratings=ratings, prm_output=codes)


@dataclass
class ImportResult:
    prm_version: str
    gold_items: int = 0
    from_ratings: int = 0
    from_codes: int = 0
    rollout_ids: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "prm_version": self.prm_version,
            "gold_items": self.gold_items,
            "from_ratings": self.from_ratings,
            "from_codes": self.from_codes,
        }


def gold_import(*, scheme: LabellingScheme, lines: Iterable[str], user=None) -> ImportResult:
    """Mark gold the rollouts of a JSON-lines file (``{"rollout_id", "ratings"}`` or ``{"rollout_id",
    "prm_output"}`` a line; blank lines ignored). All or nothing: the first bad line raises ``GoldError`` naming it,
    and nothing is stored."""
    parsed: list[_ImportLine] = []
    seen: dict[int, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        line = _import_line(number, text)
        if line.rollout_id in seen:
            reason = IMPORT_TWICE.format(rollout_id=line.rollout_id, first=seen[line.rollout_id])
            raise GoldError(IMPORT_LINE.format(number=number, reason=reason))
        seen[line.rollout_id] = number
        parsed.append(line)
    if not parsed:
        raise GoldError(IMPORT_EMPTY)
    result = ImportResult(prm_version=scheme.prm_version)
    with transaction.atomic():
        for line in parsed:
            try:
                ratings = line.ratings
                if ratings is None:
                    try:
                        ratings = rules.ratings_of(line.prm_output or [])
                    except ValueError as exc:
                        raise GoldError(BAD_GOLD.format(rollout_id=line.rollout_id, reason=exc)) from exc
                elif any(r is not None and (isinstance(r, bool) or r not in rules.RATINGS) for r in ratings):
                    raise GoldError(NOT_RATINGS.format(value=ratings))
                gold_mark(
                    scheme=scheme, rollout_id=line.rollout_id, ratings=ratings, user=user, source=GOLD_FROM_IMPORT
                )
            except GoldError as exc:
                raise GoldError(IMPORT_LINE.format(number=line.number, reason=exc.message)) from exc
            result.gold_items += 1
            result.rollout_ids.append(line.rollout_id)
            if line.ratings is None:
                result.from_codes += 1
            else:
                result.from_ratings += 1
    return result


# --- the mix: handing gold out ------------------------------------------------------------------------------------


def _gold_lease(*, scheme: LabellingScheme, rollout_id: int, username: str, now: datetime) -> None:
    """A lease of a gold rollout for ``username``, like a claim's: their own row renewed, else an expired row taken
    over, else a new slot (a gold rollout is out of the scope, so its slots are the gold mix's alone)."""
    expires_at = now + timedelta(seconds=settings.PRM_CHECKOUT_TIMEOUT_S)
    rows = RolloutCheckout.objects.filter(prm_version=scheme.prm_version, rollout_id=rollout_id)
    if rows.filter(claimed_by=username).update(expires_at=expires_at):
        return
    for _attempt in range(5):
        stale = rows.filter(expires_at__lte=now).order_by("slot").values_list("slot", flat=True).first()
        if stale is not None:
            if rows.filter(slot=stale, expires_at__lte=now).update(
                claimed_by=username, expires_at=expires_at, created_at=now
            ):
                return
            continue
        top = rows.aggregate(top=Max("slot"))["top"]
        try:
            with transaction.atomic():
                RolloutCheckout.objects.create(
                    prm_version=scheme.prm_version,
                    rollout_id=rollout_id,
                    slot=0 if top is None else top + 1,
                    expires_at=expires_at,
                    claimed_by=username,
                )
            return
        except IntegrityError:  # another person's gold lease took that slot meanwhile
            continue


def _open_answers(*, scheme: LabellingScheme, user):
    return GoldAnswer.objects.filter(gold__scheme=scheme, user=user, answered_at__isnull=True)


def gold_next(*, scheme: LabellingScheme, username: str, now: datetime, exclude: Sequence[int] = ()) -> int | None:
    """The gold rollout ``username`` gets next, if any (run under their lock, after the leases they hold): the gold
    item handed to them and not answered yet (closed scheme or not), else, in an open scheme whose rate says a gold
    item is due, the first gold item they have not had nor labelled. Leases it to them; None when no gold is due."""
    user = get_user_model().objects.filter(username=username).first()
    if user is None:  # a worker's claim, not a person's
        return None
    pending = (
        _open_answers(scheme=scheme, user=user)
        .exclude(gold__rollout_id__in=list(exclude))
        .order_by("served_at", "id")
        .values_list("gold__rollout_id", flat=True)
        .first()
    )
    if pending is not None:
        _gold_lease(scheme=scheme, rollout_id=pending, username=username, now=now)
        return pending
    if not scheme.is_open or scheme.gold_rate <= 0:
        return None
    served = GoldAnswer.objects.filter(gold__scheme=scheme, user=user).count()
    labels = ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version, labelled_by=username).count()
    if not gold_due(rate=scheme.gold_rate, labels=labels, gold_served=served):
        return None
    labelled = ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version, labelled_by=username).values(
        "rollout_id"
    )
    item = (
        GoldItem.objects.filter(scheme=scheme)
        .exclude(answers__user=user)
        .exclude(rollout_id__in=labelled)
        .exclude(rollout_id__in=list(exclude))
        .order_by("id")
        .first()
    )
    if item is None:
        return None
    GoldAnswer.objects.create(gold=item, user=user, served_at=now)
    _gold_lease(scheme=scheme, rollout_id=item.rollout_id, username=username, now=now)
    return item.rollout_id


def gold_answer_of(*, user, prm_version: str, rollout_id: int) -> GoldAnswer | None:
    """The gold item of this rollout handed to ``user`` in the scheme (answered or not), if any."""
    return (
        GoldAnswer.objects.filter(gold__scheme__prm_version=prm_version, gold__rollout_id=rollout_id, user=user)
        .select_related("gold")
        .first()
    )


def gold_handed(*, user, prm_version: str, rollout_id: int) -> bool:
    """Whether this rollout was handed to ``user`` as a gold item of the scheme (so they may work on it)."""
    return GoldAnswer.objects.filter(
        gold__scheme__prm_version=prm_version, gold__rollout_id=rollout_id, user=user
    ).exists()


def gold_answered(*, user, prm_version: str, rollout_id: int) -> bool:
    """Whether ``user`` has answered (or skipped) this rollout as a gold item: a label of theirs, for the pages."""
    return GoldAnswer.objects.filter(
        gold__scheme__prm_version=prm_version, gold__rollout_id=rollout_id, user=user, answered_at__isnull=False
    ).exists()


def gold_answer_store(
    *, answer: GoldAnswer, step_label: rules.StepLabel, attributes: dict[str, Any], now: datetime
) -> GoldAnswer:
    """Store the person's ratings of a gold rollout in its ``GoldAnswer`` (never a label) and end their lease; an
    answer already stored (a submit sent twice, or after a skip) is answered unchanged. Inside the submit's
    transaction."""
    answer = GoldAnswer.objects.select_for_update(of=("self",)).select_related("gold__scheme", "user").get(pk=answer.pk)
    if answer.answered_at is None:
        answer.answered_at = now
        answer.prm_output = list(step_label.prm_output)
        answer.explanations = list(step_label.explanations)
        answer.attributes = dict(attributes)
        answer.save(update_fields=["answered_at", "prm_output", "explanations", "attributes"])
    RolloutCheckout.objects.filter(
        prm_version=answer.gold.scheme.prm_version,
        rollout_id=answer.gold.rollout_id,
        claimed_by=answer.user.get_username(),
    ).delete()
    return answer


def gold_skip(*, user, scheme: LabellingScheme, rollout_id: int, now: datetime) -> bool:
    """A skipped gold item is closed unanswered (it never comes back, and counts in no figure); its draft goes. Answer
    whether the rollout was an open gold item of theirs."""
    closed = (
        _open_answers(scheme=scheme, user=user)
        .filter(gold__rollout_id=rollout_id)
        .update(answered_at=now, attributes={SKIPPED: True})
    )
    if closed:
        LabelDraft.objects.filter(user=user, prm_version=scheme.prm_version, rollout_id=rollout_id).delete()
    return bool(closed)


@dataclass(frozen=True)
class AnsweredGold:
    """A gold answer shaped as the labelled page reads a label, so the page looks like any other."""

    pk: int
    rollout_id: int
    prm_output: list
    explanations: list
    attributes: dict
    created_at: datetime


def gold_answered_label(*, user, prm_version: str, rollout_id: int) -> AnsweredGold | None:
    """The person's answer to this gold rollout as the labelled page shows a label (None: none, or skipped)."""
    answer = gold_answer_of(user=user, prm_version=prm_version, rollout_id=rollout_id)
    if answer is None or answer.answered_at is None or answer.prm_output is None:
        return None
    return AnsweredGold(
        pk=answer.pk,
        rollout_id=rollout_id,
        prm_output=list(answer.prm_output),
        explanations=list(answer.explanations or []),
        attributes=dict(answer.attributes or {}),
        created_at=answer.answered_at,
    )


# --- figures ------------------------------------------------------------------------------------------------------


@dataclass
class GoldSummary:
    """The gold of a scheme on its staff page: items, what was handed out, and each labeller's figures."""

    items: int
    served: int
    answered: int
    skipped: int
    open: int
    scores: list[GoldScore]
    skipped_by: dict[str, int]
    open_by: dict[str, int]

    @property
    def rows(self) -> list[tuple[GoldScore, int, int]]:
        """Each labeller's figures with the gold items they skipped and hold unanswered."""
        return [(s, self.skipped_by.get(s.labeller, 0), self.open_by.get(s.labeller, 0)) for s in self.scores]


def _checks(scheme: LabellingScheme) -> Iterable[tuple[str, GoldCheck | None, bool]]:
    """Every gold answer of the scheme: (labeller, its check or None when not answered, whether skipped)."""
    rows = (
        GoldAnswer.objects.filter(gold__scheme=scheme)
        .order_by("id")
        .values_list(
            "user__username", "answered_at", "prm_output", "attributes", "gold__prm_output", "gold__rated_steps"
        )
    )
    for username, answered_at, given, attributes, expected, rated in rows.iterator(chunk_size=2000):
        attributes = attributes if isinstance(attributes, dict) else {}
        if answered_at is None or not isinstance(given, list):
            yield username, None, attributes.get(SKIPPED) is True
            continue
        try:
            check = GoldCheck(
                labeller=username,
                expected=rules.ratings_of(expected, rated),
                given=rules.ratings_of(given, attributes.get("rated_steps")),
            )
        except (TypeError, ValueError):
            continue
        if len(check.expected) == len(check.given):
            yield username, check, False


def gold_checks(*, scheme: LabellingScheme) -> list[GoldCheck]:
    """The scheme's answered gold items, as checks."""
    return [check for _name, check, _skipped in _checks(scheme) if check is not None]


def gold_summary(*, scheme: LabellingScheme) -> GoldSummary:
    checks: list[GoldCheck] = []
    skipped_by: dict[str, int] = {}
    open_by: dict[str, int] = {}
    served = 0
    for name, check, skipped in _checks(scheme):
        served += 1
        if check is not None:
            checks.append(check)
        elif skipped:
            skipped_by[name] = skipped_by.get(name, 0) + 1
        else:
            open_by[name] = open_by.get(name, 0) + 1
    scores = gold_scores(checks)
    names = {score.labeller for score in scores}
    scores += [GoldScore(labeller=name) for name in sorted((set(skipped_by) | set(open_by)) - names)]
    return GoldSummary(
        items=GoldItem.objects.filter(scheme=scheme).count(),
        served=served,
        answered=len(checks),
        skipped=sum(skipped_by.values()),
        open=sum(open_by.values()),
        scores=sorted(scores, key=lambda score: score.labeller),
        skipped_by=skipped_by,
        open_by=open_by,
    )


def labellers_below_gold(*, scheme: LabellingScheme, min_accuracy: float, min_answers: int) -> list[str]:
    """The scheme's labellers whose gold step accuracy is below ``min_accuracy`` over ``min_answers`` answers or
    more."""
    return labellers_below(gold_scores(gold_checks(scheme=scheme)), min_accuracy=min_accuracy, min_answers=min_answers)


def gold_items(*, scheme: LabellingScheme) -> list[dict[str, Any]]:
    """The scheme's gold items for the gold page: the item, its expected ratings and how many answered it."""
    items = list(GoldItem.objects.filter(scheme=scheme).select_related("created_by").order_by("id"))
    answered: dict[int, int] = {}
    for gold_id in GoldAnswer.objects.filter(
        gold__scheme=scheme, answered_at__isnull=False, prm_output__isnull=False
    ).values_list("gold_id", flat=True):
        answered[gold_id] = answered.get(gold_id, 0) + 1
    rows = []
    for item in items:
        try:
            ratings = rules.ratings_of(item.prm_output, item.rated_steps)
        except ValueError:
            ratings = []
        rows.append({"item": item, "ratings": ratings, "answers": answered.get(item.pk, 0)})
    return rows
