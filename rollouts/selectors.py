"""Reads of rollouts and process reward labels: the claimable queue, the active-learning order, labels by key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Abs, Coalesce

from adapters.models import PRMAdapter
from prmsite.core.errors import NotFoundError
from prmsite.queries import correct_rollout_q
from rollouts.models import (
    LabellingScheme,
    LabelSkip,
    ProcessRewardLabel,
    Rollout,
    RolloutCheckout,
    RolloutQueueCursor,
)
from rollouts.scope import scope_cursor_key, scope_q

LABELS_NOT_FOUND = "No process reward label with id {ids}."
ROLLOUTS_NOT_FOUND = "No rollout with id {ids}."

# A reference PRM's final-step reward at or above this means "the PRM judges the answer correct".
PRM_CORRECT_THRESHOLD = 0.5

# Active-learning ranks, best first.
RANK_DISAGREES = 0
RANK_UNSCORED = 1
RANK_AGREES = 2


@dataclass(frozen=True)
class ClaimScope:
    """What a claim for ``prm_version`` reads of its labelling scheme, looked up once per claim."""

    prm_version: str
    scheme_id: int | None = None  # None: the version has no scheme
    labels_wanted: int = 1  # K
    condition: Q | None = None  # the scheme's scope (``rollouts.scope``); None: every rollout
    cursor_key: str = ""  # the queue cursor row its claims move (``rollouts.scope.scope_cursor_key``)

    def skipped_by(self, claimed_by: str) -> QuerySet[LabelSkip] | None:
        """The rollouts ``claimed_by`` skipped in the scheme (``LabelSkip``): they come to them last."""
        if self.scheme_id is None or not claimed_by:
            return None
        return LabelSkip.objects.filter(prm_version=self.prm_version, user__username=claimed_by)


def claim_scope(*, prm_version: str) -> ClaimScope:
    """The scheme of ``prm_version`` as a claim needs it: K, the scope and the cursor's key. One query (the scheme
    joined with its forests); a version without a scheme hands out every rollout, once, as before schemes existed."""
    rows = list(
        LabellingScheme.objects.filter(prm_version=prm_version).values_list(
            "pk", "labels_per_rollout", "scope_models", "scope_outcome", "forests__id"
        )
    )
    if not rows:
        return ClaimScope(prm_version=prm_version, cursor_key=prm_version)
    scheme_id, labels_wanted, models, outcome, _ = rows[0]
    forest_ids = sorted({row[4] for row in rows if row[4] is not None})
    models = [str(model) for model in models] if isinstance(models, list) else []
    return ClaimScope(
        prm_version=prm_version,
        scheme_id=scheme_id,
        labels_wanted=labels_wanted or 1,
        condition=scope_q(scheme_id=scheme_id, forest_ids=forest_ids, models=models, outcome=outcome),
        cursor_key=scope_cursor_key(
            prm_version=prm_version, scheme_id=scheme_id, forest_ids=forest_ids, models=models, outcome=outcome
        ),
    )


def rollout_claimable(
    *, prm_version: str, now: datetime, above_id: int = 0, scope: Q | None = None
) -> QuerySet[Rollout]:
    """Rollouts with no label for ``prm_version`` and no live checkout for it at ``now``, from id ``above_id`` on,
    in ``scope`` (a ``ClaimScope.condition``) when given.

    The exclusions are ``NOT IN`` subqueries restricted to ids from ``above_id`` on: each is evaluated once per query
    (PostgreSQL hashes it, SQLite builds a temporary index), whatever the table statistics say, instead of a join
    whose plan can turn quadratic while the statistics of a fast-growing table are stale.
    """
    labelled = ProcessRewardLabel.objects.filter(prm_version=prm_version, rollout_id__gte=above_id)
    leased = RolloutCheckout.objects.filter(prm_version=prm_version, expires_at__gt=now, rollout_id__gte=above_id)
    queryset = Rollout.objects.filter(pk__gte=above_id)
    if scope:
        queryset = queryset.filter(scope)
    return queryset.exclude(pk__in=labelled.values("rollout_id")).exclude(pk__in=leased.values("rollout_id"))


def rollout_claim_candidates(
    *,
    prm_version: str,
    now: datetime,
    above_id: int = 0,
    active_learning: bool = False,
    reference_prm_version: str | None = None,
    scope: Q | None = None,
) -> QuerySet[Rollout]:
    """The rollouts a claim for ``prm_version`` at ``now`` would hand out (in ``scope`` when given), in the order it
    would hand them out."""
    queryset = rollout_claimable(prm_version=prm_version, now=now, above_id=above_id, scope=scope)
    if active_learning:
        return rollout_active_learning_order(queryset=queryset, reference_prm_version=reference_prm_version)
    return queryset.order_by("id")


def labels_per_rollout(*, prm_version: str) -> int:
    """How many different labellers each rollout gets for ``prm_version``: its scheme's K, else 1."""
    return (
        LabellingScheme.objects.filter(prm_version=prm_version).values_list("labels_per_rollout", flat=True).first()
        or 1
    )


def _count_of(queryset: QuerySet) -> Coalesce:
    return Coalesce(Subquery(queryset.order_by().values("rollout").annotate(n=Count("pk")).values("n")[:1]), 0)


def rollout_claim_candidates_overlap(
    *,
    prm_version: str,
    now: datetime,
    labels_wanted: int,
    claimed_by: str,
    active_learning: bool = False,
    reference_prm_version: str | None = None,
    scope: Q | None = None,
) -> QuerySet[Rollout]:
    """What a claim by ``claimed_by`` for a version asking for K = ``labels_wanted`` labellers may hand out: rollouts
    (in ``scope`` when given) with fewer than K labels and live leases together, none of them ``claimed_by``'s.
    Rollouts others have started come first (complete sets of K labels make agreement measurable early), oldest
    first; with active learning, its order first."""
    labels = ProcessRewardLabel.objects.filter(prm_version=prm_version, rollout=OuterRef("pk"))
    leases = RolloutCheckout.objects.filter(prm_version=prm_version, rollout=OuterRef("pk"), expires_at__gt=now)
    queryset = (
        (Rollout.objects.filter(scope) if scope else Rollout.objects.all())
        .annotate(taken=_count_of(labels) + _count_of(leases))
        .filter(taken__lt=labels_wanted)
        .exclude(Exists(labels.filter(labelled_by=claimed_by)))
        .exclude(Exists(leases.filter(claimed_by=claimed_by)))
    )
    if active_learning:
        ordered = rollout_active_learning_order(queryset=queryset, reference_prm_version=reference_prm_version)
        return ordered.order_by(*ordered.query.order_by[:-1], "-taken", "id")
    return queryset.order_by("-taken", "id")


def rollout_claim_preview(
    *,
    prm_version: str,
    now: datetime,
    limit: int,
    active_learning: bool = False,
    reference_prm_version: str | None = None,
) -> list[Rollout]:
    """What a claim would hand out now, without leasing anything (the browsable API shows this to a browser): in the
    scheme's scope, in the claim's order (a claimer's skipped rollouts, which come to them last, are not told
    apart)."""
    if active_learning and reference_prm_version is None:
        reference_prm_version = reference_prm_version_default(prm_version=prm_version)
    scope = claim_scope(prm_version=prm_version)
    if scope.labels_wanted > 1:
        queryset = rollout_claim_candidates_overlap(
            prm_version=prm_version,
            now=now,
            labels_wanted=scope.labels_wanted,
            claimed_by="",
            active_learning=active_learning,
            reference_prm_version=reference_prm_version,
            scope=scope.condition,
        )
    else:
        queryset = rollout_claim_candidates(
            prm_version=prm_version,
            now=now,
            above_id=queue_cursor_floor(prm_version=prm_version, cursor_key=scope.cursor_key),
            active_learning=active_learning,
            reference_prm_version=reference_prm_version,
            scope=scope.condition,
        )
    return list(queryset.select_related("forest", "node")[:limit])


def rollouts_get_many(*, ids: Sequence[int]) -> list[Rollout]:
    """The rollouts with these ids, in the order asked (a repeated id is returned again); every id must exist."""
    found = Rollout.objects.select_related("forest", "node").in_bulk(set(ids))
    missing = sorted({i for i in ids if i not in found})
    if missing:
        raise NotFoundError(ROLLOUTS_NOT_FOUND.format(ids=", ".join(map(str, missing))), extra={"missing": missing})
    return [found[i] for i in ids]


def queue_cursor_read(*, prm_version: str, cursor_key: str | None = None) -> tuple[int, bool]:
    """Where claims of ``prm_version`` may start (every rollout below is labelled for it, or out of the scope of
    ``cursor_key``), and whether the row ``cursor_key`` exists. The version's own row (its claims without a scheme:
    every rollout below is labelled) holds for any scope, so the larger of the two is taken. One query."""
    key = cursor_key or prm_version
    rows = dict(
        RolloutQueueCursor.objects.filter(prm_version__in={key, prm_version}).values_list(
            "prm_version", "labelled_below"
        )
    )
    return max(rows.values(), default=0), key in rows


def queue_cursor_floor(*, prm_version: str, cursor_key: str | None = None) -> int:
    """The id below which every rollout is labelled for ``prm_version`` or out of the scope of ``cursor_key`` (a
    ``ClaimScope.cursor_key``; default: the version's own cursor); 0 when nothing is known."""
    return queue_cursor_read(prm_version=prm_version, cursor_key=cursor_key)[0]


def queue_cursor_candidate(
    *, prm_version: str, floor: int, settled_before: datetime, scope: Q | None = None
) -> int | None:
    """How far the cursor of ``prm_version`` may move from ``floor``: the id of the first rollout from ``floor`` on
    that is unlabelled and in ``scope`` (when given), or created at or after ``settled_before``; ``None`` when there
    is none (then one past the last rollout, if any). Walks only the rollouts labelled (or out of scope) since the
    cursor last moved."""
    labelled = ProcessRewardLabel.objects.filter(rollout=OuterRef("pk"), prm_version=prm_version)
    is_open = (scope & ~Q(Exists(labelled))) if scope else ~Q(Exists(labelled))
    first_open = (
        Rollout.objects.filter(pk__gte=floor)
        .filter(is_open | Q(created_at__gte=settled_before))
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    if first_open is not None:
        return first_open
    last = Rollout.objects.filter(pk__gte=floor).order_by("-pk").values_list("pk", flat=True).first()
    return None if last is None else last + 1


def reference_prm_version_default(*, prm_version: str) -> str | None:
    """The PRM version active learning compares against when the caller names none: the newest uploaded adapter's,
    other than ``prm_version`` itself (a labelling scheme is not a PRM). None when no adapter has been uploaded."""
    return (
        PRMAdapter.objects.exclude(prm_version=prm_version)
        .order_by("-created_at", "-id")
        .values_list("prm_version", flat=True)
        .first()
    )


def rollout_active_learning_order(*, queryset: QuerySet[Rollout], reference_prm_version: str | None) -> QuerySet:
    """``queryset`` ordered so that rollouts where the reference PRM disagrees with the ground truth come first.

    The reference PRM "judges a rollout correct" when the final-step reward of its latest label for that rollout is
    ``>= 0.5``; the ground truth says the rollout is correct when ``prediction == ground_truth`` (a missing prediction
    is wrong). They disagree when those two differ. Order: disagreements first, the strongest (reward farthest from
    0.5) before the others; then rollouts the reference PRM has not scored yet; then agreements; oldest first within
    each group.
    """
    if reference_prm_version is None:
        return queryset.order_by("id")
    latest_reward = (
        ProcessRewardLabel.objects.filter(rollout=OuterRef("pk"), prm_version=reference_prm_version)
        .order_by("-id")
        .values("final_reward")[:1]
    )
    correct = correct_rollout_q()
    judged_correct = Q(reference_reward__gte=PRM_CORRECT_THRESHOLD)
    judged_wrong = Q(reference_reward__lt=PRM_CORRECT_THRESHOLD)
    return (
        queryset.annotate(reference_reward=Subquery(latest_reward, output_field=FloatField()))
        .annotate(
            active_learning_rank=Case(
                When(reference_reward__isnull=True, then=Value(RANK_UNSCORED)),
                When(judged_correct & ~correct, then=Value(RANK_DISAGREES)),
                When(judged_wrong & correct, then=Value(RANK_DISAGREES)),
                default=Value(RANK_AGREES),
                output_field=IntegerField(),
            )
        )
        .annotate(
            disagreement=Case(
                When(
                    active_learning_rank=RANK_DISAGREES,
                    then=Abs(F("reference_reward") - Value(PRM_CORRECT_THRESHOLD)),
                ),
                default=Value(0.0),
                output_field=FloatField(),
            )
        )
        .order_by("active_learning_rank", "-disagreement", "id")
    )


def label_ids_for_version(*, prm_version: str) -> list[int]:
    """Ids of every label given under ``prm_version``, oldest first."""
    return list(ProcessRewardLabel.objects.filter(prm_version=prm_version).order_by("id").values_list("id", flat=True))


def labels_get_many(*, ids: Sequence[int]) -> list[ProcessRewardLabel]:
    """The labels with these ids, in the order asked (a repeated id is returned again); every id must exist."""
    found = {label.pk: label for label in ProcessRewardLabel.objects.filter(pk__in=set(ids))}
    missing = sorted({i for i in ids if i not in found})
    if missing:
        raise NotFoundError(LABELS_NOT_FOUND.format(ids=", ".join(map(str, missing))), extra={"missing": missing})
    return [found[i] for i in ids]
