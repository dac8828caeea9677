"""Reads of the staff page of a scheme: progress, labellers and their speed, agreement among labellers, and agreement
of the scheme with the forest's Monte-Carlo values and with other versions' labels.

Labels are read once per page with ``values_list(...).iterator()`` and the figures computed in memory by the pure
modules (``agreement``, ``consensus``, ``rules``).
"""

from __future__ import annotations

import contextlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Count, Subquery

from rollouts.labelling import rules
from rollouts.labelling.agreement import (
    AgreementReport,
    LabelRatings,
    SourceAgreement,
    agreement_report,
    label_first_error,
    source_agreement,
)
from rollouts.labelling.consensus import label_verdicts, value_verdicts
from rollouts.labelling.step_values import rollout_mc_values
from rollouts.models import GoldItem, LabelDraft, LabellingScheme, ProcessRewardLabel, RolloutCheckout
from rollouts.scope import scheme_rollouts

# Rollouts read in one query (by id).
ROLLOUTS_PER_QUERY = 500
# Trees whose nodes are read in one query when Monte-Carlo values are computed.
# Other versions the staff page compares a scheme with, at most (those sharing the most rollouts with it).
COMPARISON_CANDIDATES_MAX = 20

MC_SOURCE = "Monte-Carlo values"


@dataclass(frozen=True)
class LabelRow:
    id: int
    rollout_id: int
    labeller: str  # who labelled: the login that posted it, else the worker name it was posted with
    prm_output: list
    attributes: dict
    created_at: datetime

    @property
    def rated_steps(self) -> int:
        rated = self.attributes.get("rated_steps") if isinstance(self.attributes, dict) else None
        if isinstance(rated, bool) or not isinstance(rated, int):
            return len(self.prm_output)
        return max(0, min(rated, len(self.prm_output)))

    @property
    def seconds_spent(self) -> float | None:
        seconds = self.attributes.get("seconds_spent") if isinstance(self.attributes, dict) else None
        return float(seconds) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None

    @property
    def bad_problem(self) -> bool:
        attributes = self.attributes if isinstance(self.attributes, dict) else {}
        return attributes.get("bad_problem") is True or attributes.get("finish_reason") == rules.FINISH_BAD_PROBLEM

    def verdicts(self) -> list[bool | None]:
        return label_verdicts(self.prm_output, self.attributes if isinstance(self.attributes, dict) else None)


def label_rows(*, prm_version: str, on_rollouts_of: str | None = None) -> Iterator[LabelRow]:
    """The labels of ``prm_version`` (only of rollouts that ``on_rollouts_of`` labelled too, when given), oldest
    first."""
    queryset = ProcessRewardLabel.objects.filter(prm_version=prm_version)
    if on_rollouts_of is not None:
        ours = ProcessRewardLabel.objects.filter(prm_version=on_rollouts_of).values("rollout_id")
        queryset = queryset.filter(rollout_id__in=Subquery(ours))
    for label_id, rollout_id, labelled_by, worker, prm_output, attributes, created_at in (
        queryset.order_by("id")
        .values_list("id", "rollout_id", "labelled_by", "worker", "prm_output", "attributes", "created_at")
        .iterator(chunk_size=2000)
    ):
        yield LabelRow(
            id=label_id,
            rollout_id=rollout_id,
            labeller=labelled_by or worker,
            prm_output=list(prm_output) if isinstance(prm_output, list) else [],
            attributes=attributes if isinstance(attributes, dict) else {},
            created_at=created_at,
        )


def _data_leases(*, scheme: LabellingScheme, now: datetime):
    """The scheme's live leases, less those of its gold items (the gold mix's, counted on the gold table)."""
    gold = GoldItem.objects.filter(scheme=scheme).values("rollout_id")
    return RolloutCheckout.objects.filter(prm_version=scheme.prm_version, expires_at__gt=now).exclude(
        rollout_id__in=gold
    )


@dataclass(frozen=True)
class SchemeProgress:
    rollouts: int  # in the queue: in the scheme's scope
    labels_per_rollout: int  # K
    complete: int  # rollouts with K labels
    partial: int  # rollouts with 1 … K-1 labels
    in_progress: int  # rollouts leased now
    labels: int
    leases: int  # live leases

    @property
    def remaining(self) -> int:
        """Rollouts still wanting a label."""
        return self.rollouts - self.complete

    @property
    def complete_share(self) -> float | None:
        return self.complete / self.rollouts if self.rollouts else None


def scheme_progress(*, scheme: LabellingScheme, now: datetime) -> SchemeProgress:
    k = scheme.labels_per_rollout
    per_rollout = (
        ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version)
        .filter(rollout_id__in=Subquery(scheme_rollouts(scheme).order_by().values("pk")))  # in scope only
        .order_by()
        .values_list("rollout")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    complete = partial = labels = 0
    for n in per_rollout.iterator(chunk_size=5000):
        labels += n
        if n >= k:
            complete += 1
        else:
            partial += 1
    live = _data_leases(scheme=scheme, now=now)
    return SchemeProgress(
        rollouts=scheme_rollouts(scheme).count(),
        labels_per_rollout=k,
        complete=complete,
        partial=partial,
        in_progress=live.order_by().values("rollout_id").distinct().count(),
        labels=labels,
        leases=live.count(),
    )


@dataclass
class LabellerStats:
    labeller: str
    labels: int = 0
    rated_steps: int = 0
    wrong_steps: int = 0  # steps rated -1
    timed_labels: int = 0  # labels that recorded the time spent (the labelling pages do)
    timed_steps: int = 0  # rated steps of those
    seconds_total: float = 0.0
    seconds: list[float] = field(default_factory=list, repr=False)
    bad_problems: int = 0
    finish_reasons: Counter = field(default_factory=Counter)
    leases: int = 0  # live now
    drafts: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def seconds_median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def steps_per_minute(self) -> float | None:
        return self.timed_steps / (self.seconds_total / 60) if self.seconds_total > 0 else None

    @property
    def finish_reason_counts(self) -> list[tuple[str, int]]:
        return sorted(self.finish_reasons.items())

    @property
    def wrong_share(self) -> float | None:
        return self.wrong_steps / self.rated_steps if self.rated_steps else None


def labeller_stats(*, scheme: LabellingScheme, now: datetime, labels: Sequence[LabelRow]) -> list[LabellerStats]:
    """Counts and speed of each labeller of the scheme (anyone with a label, a live lease or a draft), most labels
    first."""
    stats: dict[str, LabellerStats] = {}

    def of(name: str) -> LabellerStats:
        return stats.setdefault(name, LabellerStats(labeller=name))

    for label in labels:
        entry = of(label.labeller)
        entry.labels += 1
        rated = label.rated_steps
        entry.rated_steps += rated
        with contextlib.suppress(ValueError):  # a PRM's floats are not ratings
            entry.wrong_steps += sum(r == rules.RATING_WRONG for r in rules.ratings_of(label.prm_output, rated))
        seconds = label.seconds_spent
        if seconds is not None:
            entry.timed_labels += 1
            entry.timed_steps += rated
            entry.seconds_total += seconds
            entry.seconds.append(seconds)
        entry.bad_problems += label.bad_problem
        reason = label.attributes.get("finish_reason")
        if isinstance(reason, str) and reason:
            entry.finish_reasons[reason] += 1
        entry.first_at = min(entry.first_at or label.created_at, label.created_at)
        entry.last_at = max(entry.last_at or label.created_at, label.created_at)
    for name, n in _data_leases(scheme=scheme, now=now).order_by().values_list("claimed_by").annotate(n=Count("id")):
        of(name).leases = n
    for name, n in (
        LabelDraft.objects.filter(prm_version=scheme.prm_version)
        .order_by()
        .values_list("user__username")
        .annotate(n=Count("id"))
    ):
        of(name).drafts = n
    return sorted(stats.values(), key=lambda entry: (-entry.labels, entry.labeller))


def _label_ratings(label: LabelRow) -> LabelRatings | None:
    try:
        ratings = rules.ratings_of(label.prm_output, label.rated_steps)
    except ValueError:
        return None
    verdicts = [None if rating is None else rating != rules.RATING_WRONG for rating in ratings]
    return LabelRatings(
        rollout_id=label.rollout_id,
        labeller=label.labeller,
        ratings=ratings,
        first_error=label_first_error(verdicts),
    )


def scheme_agreement(*, labels: Iterable[LabelRow]) -> AgreementReport:
    """Agreement among the scheme's labellers on step ratings (labels whose values are not codes are left out)."""
    return agreement_report(rated for label in labels if (rated := _label_ratings(label)) is not None)


@dataclass(frozen=True)
class ComparisonCandidate:
    prm_version: str
    rollouts: int  # rollouts it shares with the scheme
    is_scheme: bool  # it is a labelling scheme (people or AI judges), not a PRM


def comparison_candidates(*, scheme: LabellingScheme) -> list[ComparisonCandidate]:
    """Other versions with labels of rollouts the scheme labelled, those sharing the most rollouts first."""
    ours = ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version).values("rollout_id")
    rows = list(
        ProcessRewardLabel.objects.filter(rollout_id__in=Subquery(ours))
        .exclude(prm_version=scheme.prm_version)
        .order_by()
        .values_list("prm_version")
        .annotate(n=Count("rollout", distinct=True))
        .order_by("-n", "prm_version")[:COMPARISON_CANDIDATES_MAX]
    )
    schemes = set(
        LabellingScheme.objects.filter(prm_version__in=[v for v, _ in rows]).values_list("prm_version", flat=True)
    )
    return [ComparisonCandidate(prm_version=v, rollouts=n, is_scheme=v in schemes) for v, n in rows]


def _by_rollout(labels: Iterable[LabelRow]) -> dict[int, list[LabelRow]]:
    grouped: dict[int, list[LabelRow]] = defaultdict(list)
    for label in labels:
        grouped[label.rollout_id].append(label)
    return grouped


def scheme_comparisons(
    *, scheme: LabellingScheme, labels: Sequence[LabelRow], versions: Sequence[str], mc: bool = True
) -> list[SourceAgreement]:
    """The scheme's labels against the Monte-Carlo values (``mc``) and against each of ``versions``: every label of
    the scheme is compared with every label of the other version on the same rollout."""
    ours = _by_rollout(labels)
    results: list[SourceAgreement] = []
    if mc:
        steps = {rollout_id: len(group[0].prm_output) for rollout_id, group in ours.items()}
        values = rollout_mc_values(steps_by_rollout=steps)
        triples = [
            (rollout_id, label.verdicts(), value_verdicts(values[rollout_id]))
            for rollout_id, group in ours.items()
            if rollout_id in values
            for label in group
        ]
        results.append(source_agreement(MC_SOURCE, triples))
    for version in versions:
        theirs = _by_rollout(label_rows(prm_version=version, on_rollouts_of=scheme.prm_version))
        triples = [
            (rollout_id, label.verdicts(), other.verdicts())
            for rollout_id, group in ours.items()
            for label in group
            for other in theirs.get(rollout_id, [])
            if len(other.prm_output) == len(label.prm_output)
        ]
        results.append(source_agreement(version, triples))
    return results
