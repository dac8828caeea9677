"""Agreement between labellers. Pure: no Django.

- **Cohen's kappa** (two raters, the same items): ``(p_o - p_e) / (1 - p_e)``, where ``p_o`` is the share of items
  both rated alike and ``p_e`` the share expected by chance from each rater's own category shares.
- **Fleiss' kappa** (any raters, several per item): ``(P - P_e) / (1 - P_e)``, where ``P`` is the mean over items of
  the share of agreeing rater pairs within the item and ``P_e`` the sum of squared overall category shares. Items
  with fewer than two ratings say nothing and are left out. When every item has the same number of ratings this is
  Fleiss (1971) exactly; when the numbers differ (a rollout still waiting for its K-th label) each item's share is
  taken over its own pairs, as in the usual generalisation.
- **First-error agreement**: each label names the index of the first wrong step (``-1``: none); two labels agree
  when they name the same one. A label that stopped before the end without a wrong step names none and is left out.

Both kappas are undefined (``None``) when chance agreement is total (every rating in one category): then there is
nothing to correct for, and ``observed`` still says how often the raters agreed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from prmsite.core.processbench import NO_ERROR, first_error


@dataclass(frozen=True)
class Kappa:
    kappa: float | None  # None: undefined (no items, or every rating in one category)
    observed: float | None  # share of agreement observed
    expected: float | None  # share of agreement expected by chance
    items: int  # items the figure rests on


def _kappa(observed: float, expected: float, items: int) -> Kappa:
    if expected >= 1.0:
        return Kappa(kappa=None, observed=observed, expected=expected, items=items)
    return Kappa(kappa=(observed - expected) / (1.0 - expected), observed=observed, expected=expected, items=items)


def cohen_kappa(pairs: Iterable[tuple[Hashable, Hashable]]) -> Kappa:
    """Cohen's kappa of two raters from their ``(rating_a, rating_b)`` on each item both rated."""
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return Kappa(kappa=None, observed=None, expected=None, items=0)
    observed = sum(a == b for a, b in pairs) / n
    share_a = Counter(a for a, _ in pairs)
    share_b = Counter(b for _, b in pairs)
    expected = sum(share_a[c] * share_b[c] for c in share_a) / (n * n)
    return _kappa(observed, expected, n)


def fleiss_kappa(items: Iterable[Sequence[Hashable]]) -> Kappa:
    """Fleiss' kappa from the ratings given to each item (one sequence of ratings per item, any length)."""
    per_item: list[float] = []
    totals: Counter = Counter()
    ratings = 0
    for item in items:
        n = len(item)
        if n < 2:
            continue
        counts = Counter(item)
        per_item.append(sum(c * (c - 1) for c in counts.values()) / (n * (n - 1)))
        totals.update(counts)
        ratings += n
    if not per_item:
        return Kappa(kappa=None, observed=None, expected=None, items=0)
    observed = sum(per_item) / len(per_item)
    expected = sum((count / ratings) ** 2 for count in totals.values())
    return _kappa(observed, expected, len(per_item))


def label_first_error(step_ok: Sequence[bool | None]) -> int | None:
    """Index of the first wrong step of one label (``NO_ERROR``, -1, when every step is right); ``None`` when the
    label stopped, without a wrong step, before rating every step (``None`` marks an unrated step)."""
    known: list[bool] = []
    for ok in step_ok:
        if ok is None:
            break
        known.append(ok)
    index = first_error(known)
    if index != NO_ERROR:
        return index
    return NO_ERROR if len(known) == len(step_ok) else None


@dataclass(frozen=True)
class FirstErrorAgreement:
    pairs: int  # pairs of labels of one rollout that both name a first error
    agreeing_pairs: int
    rollouts: int  # rollouts with at least two such labels
    unanimous_rollouts: int  # … whose labels all name the same first error

    @property
    def pair_rate(self) -> float | None:
        return self.agreeing_pairs / self.pairs if self.pairs else None

    @property
    def unanimous_rate(self) -> float | None:
        return self.unanimous_rollouts / self.rollouts if self.rollouts else None


def first_error_agreement(rollouts: Iterable[Sequence[int | None]]) -> FirstErrorAgreement:
    """First-error agreement over rollouts, each given as the first-error indices of its labels (None: unknown)."""
    pairs = agreeing = counted = unanimous = 0
    for indices in rollouts:
        known = [index for index in indices if index is not None]
        if len(known) < 2:
            continue
        counted += 1
        unanimous += len(set(known)) == 1
        for a, b in combinations(known, 2):
            pairs += 1
            agreeing += a == b
    return FirstErrorAgreement(pairs=pairs, agreeing_pairs=agreeing, rollouts=counted, unanimous_rollouts=unanimous)


@dataclass(frozen=True)
class PairAgreement:
    """Two labellers on the rollouts they both labelled."""

    a: str
    b: str
    rollouts: int
    steps: Kappa  # Cohen's kappa on the steps both rated (ratings -1/0/+1)
    first_error: FirstErrorAgreement


@dataclass(frozen=True)
class AgreementReport:
    """Agreement among the labellers of one scheme."""

    pairs: list[PairAgreement]  # every pair of labellers with a rollout in common, most shared rollouts first
    fleiss: Kappa  # over every step rated by two labels or more
    first_error: FirstErrorAgreement  # over rollouts with two labels or more
    rollouts: int  # rollouts with two labels or more


@dataclass(frozen=True)
class LabelRatings:
    """One label as agreement reads it."""

    rollout_id: int
    labeller: str
    ratings: Sequence[Hashable | None]  # one per step; None: not rated
    first_error: int | None  # index of the first wrong step, NO_ERROR, or None (unknown)


def agreement_report(labels: Iterable[LabelRatings]) -> AgreementReport:
    """Cohen's kappa per pair of labellers, Fleiss' kappa over all step ratings and first-error agreement, from the
    labels of one scheme. A labeller counts once per rollout (their first label there)."""
    by_rollout: dict[int, dict[str, LabelRatings]] = {}
    for label in labels:
        by_rollout.setdefault(label.rollout_id, {}).setdefault(label.labeller, label)
    pair_ratings: dict[tuple[str, str], list[tuple[Hashable, Hashable]]] = {}
    pair_first_errors: dict[tuple[str, str], list[tuple[int | None, int | None]]] = {}
    items: list[list[Hashable]] = []
    first_errors: list[list[int | None]] = []
    for rollout_labels in by_rollout.values():
        if len(rollout_labels) < 2:
            continue
        ordered = [rollout_labels[name] for name in sorted(rollout_labels)]
        steps = max(len(label.ratings) for label in ordered)
        for step in range(steps):
            items.append(
                [
                    label.ratings[step]
                    for label in ordered
                    if step < len(label.ratings) and label.ratings[step] is not None
                ]
            )
        first_errors.append([label.first_error for label in ordered])
        for x, y in combinations(ordered, 2):
            key = (x.labeller, y.labeller)
            pair_first_errors.setdefault(key, []).append((x.first_error, y.first_error))
            pair_ratings.setdefault(key, []).extend(
                (rx, ry) for rx, ry in zip(x.ratings, y.ratings, strict=False) if rx is not None and ry is not None
            )
    pairs = [
        PairAgreement(
            a=a,
            b=b,
            rollouts=len(pair_first_errors[(a, b)]),
            steps=cohen_kappa(pair_ratings[(a, b)]),
            first_error=first_error_agreement(pair_first_errors[(a, b)]),
        )
        for a, b in pair_first_errors
    ]
    pairs.sort(key=lambda pair: (-pair.rollouts, pair.a, pair.b))
    return AgreementReport(
        pairs=pairs,
        fleiss=fleiss_kappa(items),
        first_error=first_error_agreement(first_errors),
        rollouts=len(first_errors),
    )


@dataclass(frozen=True)
class SourceAgreement:
    """A scheme's labels against another source's verdicts on the same rollouts (right/wrong per step)."""

    source: str
    rollouts: int  # rollouts with a label of the scheme and a verdict of the source
    comparisons: int  # (label, source voter) pairs compared
    steps: Kappa  # Cohen's kappa of right/wrong over the steps both judged
    first_error: FirstErrorAgreement


def source_agreement(
    source: str, pairs: Iterable[tuple[int, Sequence[bool | None], Sequence[bool | None]]]
) -> SourceAgreement:
    """Agreement of labels with a source, from ``(rollout_id, label_verdicts, source_verdicts)`` triples."""
    step_pairs: list[tuple[bool, bool]] = []
    first_errors: list[tuple[int | None, int | None]] = []
    rollouts: set[int] = set()
    for rollout_id, ours, theirs in pairs:
        rollouts.add(rollout_id)
        step_pairs.extend((a, b) for a, b in zip(ours, theirs, strict=False) if a is not None and b is not None)
        first_errors.append((label_first_error(ours), label_first_error(theirs)))
    return SourceAgreement(
        source=source,
        rollouts=len(rollouts),
        comparisons=len(first_errors),
        steps=cohen_kappa(step_pairs),
        first_error=first_error_agreement(first_errors),
    )
