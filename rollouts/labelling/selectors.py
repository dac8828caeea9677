"""Reads of the labelling pages: schemes a person may label, what they hold, their drafts and labels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Subquery

from prmsite.core.errors import NotFoundError
from rollouts.models import LabelDraft, LabellingScheme, ProcessRewardLabel, Rollout, RolloutCheckout
from rollouts.scope import scheme_rollouts, scheme_scope_q, scheme_scope_words

SCHEME_NOT_FOUND = "No labelling scheme {prm_version!r}."


@dataclass(frozen=True)
class SchemeRow:
    """One scheme on the scheme picker, with the person's own counts and the scheme's progress."""

    scheme: LabellingScheme
    scope: str  # the scope in words (``rollouts.scope.scheme_scope_words``)
    rollouts: int  # in the queue: in the scheme's scope
    complete: int  # rollouts with all the labels the scheme asks for
    your_labels: int
    your_leases: int
    your_drafts: int


@dataclass(frozen=True)
class RolloutState:
    """Where a person stands with one rollout of a scheme."""

    lease: RolloutCheckout | None  # their live lease
    draft: LabelDraft | None  # their draft
    label: ProcessRewardLabel | None  # the label they gave

    @property
    def lease_lost(self) -> bool:
        """They were working on it (a draft) but hold no live lease any more."""
        return self.lease is None and self.draft is not None and self.label is None


def scheme_get(*, prm_version: str) -> LabellingScheme:
    scheme = LabellingScheme.objects.filter(prm_version=prm_version).first()
    if scheme is None:
        raise NotFoundError(SCHEME_NOT_FOUND.format(prm_version=prm_version))
    return scheme


def scheme_rollout_count(*, scheme: LabellingScheme) -> int:
    """Rollouts in the scheme's scope: what its queue hands out, labelled or not."""
    return scheme_rollouts(scheme).count()


def scheme_rollout_counts(*, schemes: list[LabellingScheme]) -> dict[int, int]:
    """Rollouts in each scheme's scope, by scheme id: one query for all of them (a conditional count per scheme)."""
    if not schemes:
        return {}
    counts = Rollout.objects.aggregate(
        **{f"s{scheme.pk}": Count("pk", filter=scheme_scope_q(scheme)) for scheme in schemes}
    )
    return {int(name[1:]): n for name, n in counts.items()}


def scheme_complete_count(*, scheme: LabellingScheme) -> int:
    """Rollouts in the scheme's scope with at least its K labels."""
    return (
        ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version)
        .filter(rollout_id__in=Subquery(scheme_rollouts(scheme).order_by().values("pk")))
        .order_by()
        .values("rollout")
        .annotate(n=Count("id"))
        .filter(n__gte=scheme.labels_per_rollout)
        .count()
    )


def schemes_for_user(*, user, now: datetime, include_closed: bool = False) -> list[SchemeRow]:
    """The schemes a person sees on the picker (open ones; all of them with ``include_closed``), newest first, with
    the rollouts in each one's scope. A fixed number of queries, and one per scheme (its complete rollouts)."""
    username = user.get_username()
    schemes = list(
        (
            LabellingScheme.objects.all() if include_closed else LabellingScheme.objects.filter(is_open=True)
        ).prefetch_related("forests")
    )
    versions = [scheme.prm_version for scheme in schemes]
    labels = dict(
        ProcessRewardLabel.objects.filter(prm_version__in=versions, labelled_by=username)
        .order_by()
        .values_list("prm_version")
        .annotate(n=Count("id"))
    )
    leases = dict(
        RolloutCheckout.objects.filter(prm_version__in=versions, claimed_by=username, expires_at__gt=now)
        .order_by()
        .values_list("prm_version")
        .annotate(n=Count("id"))
    )
    drafts = dict(
        LabelDraft.objects.filter(prm_version__in=versions, user=user)
        .order_by()
        .values_list("prm_version")
        .annotate(n=Count("id"))
    )
    rollouts = scheme_rollout_counts(schemes=schemes)
    return [
        SchemeRow(
            scheme=scheme,
            scope=scheme_scope_words(scheme),
            rollouts=rollouts[scheme.pk],
            complete=scheme_complete_count(scheme=scheme),
            your_labels=labels.get(scheme.prm_version, 0),
            your_leases=leases.get(scheme.prm_version, 0),
            your_drafts=drafts.get(scheme.prm_version, 0),
        )
        for scheme in schemes
    ]


def leases_held(*, prm_version: str, username: str, now: datetime) -> list[int]:
    """Rollouts ``username`` holds a live lease of for ``prm_version``, the earliest claimed first."""
    return list(
        RolloutCheckout.objects.filter(prm_version=prm_version, claimed_by=username, expires_at__gt=now)
        .order_by("created_at", "rollout_id")
        .values_list("rollout_id", flat=True)
    )


def rollout_state(*, user, prm_version: str, rollout_id: int, now: datetime) -> RolloutState:
    username = user.get_username()
    return RolloutState(
        lease=RolloutCheckout.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, claimed_by=username, expires_at__gt=now
        ).first(),
        draft=LabelDraft.objects.filter(user=user, prm_version=prm_version, rollout_id=rollout_id).first(),
        label=ProcessRewardLabel.objects.filter(
            prm_version=prm_version, rollout_id=rollout_id, labelled_by=username
        ).first(),
    )


def drafts_of(*, user, prm_version: str, now: datetime) -> list[tuple[LabelDraft, bool]]:
    """The person's drafts in a scheme, newest first, each with whether they still hold its lease."""
    drafts = list(LabelDraft.objects.filter(user=user, prm_version=prm_version).order_by("-updated_at", "-id"))
    held = set(leases_held(prm_version=prm_version, username=user.get_username(), now=now))
    return [(draft, draft.rollout_id in held) for draft in drafts]


def labels_of(*, username: str, prm_version: str, limit: int = 20) -> list[ProcessRewardLabel]:
    """The person's latest labels in a scheme."""
    return list(
        ProcessRewardLabel.objects.filter(prm_version=prm_version, labelled_by=username)
        .order_by("-created_at", "-id")
        .only("id", "rollout_id", "prm_output", "attributes", "created_at")[:limit]
    )


def rollout_get(*, rollout_id: int) -> Rollout:
    rollout = Rollout.objects.select_related("forest").filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFoundError(f"No rollout with id {rollout_id}.")
    return rollout
