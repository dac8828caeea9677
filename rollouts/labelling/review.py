"""Where a scheme's labellers disagree, rollout by rollout. Pure: no Django.

Each label is read as its ratings (-1/0/+1 per step, None: not rated). On one rollout, a step is *compared* when two
labels or more rated it, and in conflict when they differ there:

- **rating differs**: the exact ratings differ (a 0 against a +1 counts);
- **verdict differs**: one label says wrong (-1) and another not (0 or +1), the reading of ``agreement`` and
  ``consensus`` (PRM800K's "neutral counts as right"), so a 0 against a +1 does not count.

**First error differs** when the labels name different first wrong steps (or one names none): a label that stopped
early without a -1 names none that is known and is left out, as in ``agreement.label_first_error``.

The list shows the rollouts with some disagreement of the kind asked for (``KINDS``): ``any`` (a rating or the first
error differs), ``verdict`` (a verdict differs) or ``first_error``. Most disagreement first (``sort_key``): the share
of compared steps whose verdict differs, then the share whose rating differs, then their numbers, then a differing
first error, then the rollout's id. A pair filter keeps only the two labellers' labels of the rollouts both labelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rollouts.labelling.agreement import label_first_error
from rollouts.labelling.rules import RATING_WRONG

KIND_ANY = "any"
KIND_VERDICT = "verdict"
KIND_FIRST_ERROR = "first_error"
KINDS = (KIND_ANY, KIND_VERDICT, KIND_FIRST_ERROR)
KIND_LABELS = {
    KIND_ANY: "any disagreement: a rating or the first error differs",
    KIND_VERDICT: "a verdict differs: wrong (\u22121) against not wrong (0 or +1)",
    KIND_FIRST_ERROR: "the first wrong step differs",
}

FIRST_ERROR_NONE = "none"
FIRST_ERROR_UNKNOWN = "unknown (stopped early)"

NOT_A_KIND = "kind must be one of {kinds}, not {value!r}."
NOT_A_PAIR = "pair must name two different labellers, as pair=alice,bob; not {value!r}."


class ReviewQueryInvalid(ValueError):
    """The list was asked for with a kind or a pair it does not know; ``str()`` says why in one line."""


@dataclass(frozen=True)
class ReviewLabel:
    """One labeller's label of one rollout, as the review reads it."""

    rollout_id: int
    labeller: str
    ratings: Sequence[int | None]  # -1 / 0 / +1 per step; None: not rated


@dataclass(frozen=True)
class Disagreement:
    """How the labels of one rollout differ."""

    rollout_id: int
    labellers: tuple[str, ...]  # sorted
    steps: int  # steps of the rollout (the longest label)
    compared: int  # steps rated by two labels or more
    rating_steps: tuple[int, ...]  # indices of compared steps whose ratings differ
    verdict_steps: tuple[int, ...]  # indices of compared steps whose verdicts differ (a subset of rating_steps)
    first_errors: tuple[tuple[str, int | None], ...]  # (labeller, first wrong step, -1: none, None: unknown)

    @property
    def first_error_differs(self) -> bool:
        known = {index for _, index in self.first_errors if index is not None}
        return len(known) > 1

    @property
    def rating_share(self) -> float:
        return len(self.rating_steps) / self.compared if self.compared else 0.0

    @property
    def verdict_share(self) -> float:
        return len(self.verdict_steps) / self.compared if self.compared else 0.0

    @property
    def first_errors_described(self) -> list[tuple[str, str]]:
        return [(labeller, first_error_text(index)) for labeller, index in self.first_errors]

    def disagrees(self, kind: str = KIND_ANY) -> bool:
        if kind == KIND_VERDICT:
            return bool(self.verdict_steps)
        if kind == KIND_FIRST_ERROR:
            return self.first_error_differs
        return bool(self.rating_steps) or self.first_error_differs

    def sort_key(self) -> tuple:
        """Ascending order of this key is "most disagreement first"."""
        return (
            -self.verdict_share,
            -self.rating_share,
            -len(self.verdict_steps),
            -len(self.rating_steps),
            not self.first_error_differs,
            self.rollout_id,
        )


def first_error_of(ratings: Sequence[int | None]) -> int | None:
    """The first wrong step a label names (-1: none; None: it stopped early without one)."""
    return label_first_error([None if rating is None else rating != RATING_WRONG for rating in ratings])


def first_error_text(index: int | None) -> str:
    """A first error as the pages say it: "step 3", "none", or unknown."""
    if index is None:
        return FIRST_ERROR_UNKNOWN
    return FIRST_ERROR_NONE if index < 0 else f"step {index + 1}"


def disagreement(rollout_id: int, labels: Sequence[ReviewLabel]) -> Disagreement:
    """How ``labels`` (one per labeller, all of rollout ``rollout_id``) differ."""
    ordered = sorted(labels, key=lambda label: label.labeller)
    steps = max((len(label.ratings) for label in ordered), default=0)
    compared = 0
    rating_steps: list[int] = []
    verdict_steps: list[int] = []
    for step in range(steps):
        given = [label.ratings[step] for label in ordered if step < len(label.ratings)]
        given = [rating for rating in given if rating is not None]
        if len(given) < 2:
            continue
        compared += 1
        if len(set(given)) > 1:
            rating_steps.append(step)
        if len({rating == RATING_WRONG for rating in given}) > 1:
            verdict_steps.append(step)
    return Disagreement(
        rollout_id=rollout_id,
        labellers=tuple(label.labeller for label in ordered),
        steps=steps,
        compared=compared,
        rating_steps=tuple(rating_steps),
        verdict_steps=tuple(verdict_steps),
        first_errors=tuple((label.labeller, first_error_of(label.ratings)) for label in ordered),
    )


def parse_kind(value: str | None) -> str:
    """The kind asked for (blank: ``any``); ``ReviewQueryInvalid`` for another word."""
    if not value:
        return KIND_ANY
    if value not in KINDS:
        raise ReviewQueryInvalid(NOT_A_KIND.format(kinds=", ".join(KINDS), value=value))
    return value


def parse_pair(value: str | None) -> tuple[str, str] | None:
    """``"alice,bob"`` as the pair ``("alice", "bob")`` (sorted); blank: no pair; ``ReviewQueryInvalid`` otherwise."""
    if not value:
        return None
    names = [name.strip() for name in value.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise ReviewQueryInvalid(NOT_A_PAIR.format(value=value[:200]))
    a, b = sorted(names)
    return a, b


def _by_rollout(labels: Iterable[ReviewLabel]) -> dict[int, dict[str, ReviewLabel]]:
    grouped: dict[int, dict[str, ReviewLabel]] = {}
    for label in labels:
        grouped.setdefault(label.rollout_id, {}).setdefault(label.labeller, label)  # a labeller's first label
    return grouped


def disagreements(
    labels: Iterable[ReviewLabel], *, kind: str = KIND_ANY, pair: tuple[str, str] | None = None
) -> list[Disagreement]:
    """The rollouts whose labels disagree (of ``kind``), most disagreement first. With ``pair``, only the rollouts
    both labelled, and only their two labels. A labeller counts once per rollout (their first label there)."""
    if kind not in KINDS:
        raise ReviewQueryInvalid(NOT_A_KIND.format(kinds=", ".join(KINDS), value=kind))
    found: list[Disagreement] = []
    for rollout_id, by_labeller in _by_rollout(labels).items():
        group = list(by_labeller.values())
        if pair is not None:
            group = [label for label in group if label.labeller in pair]
        if len(group) < 2:
            continue
        result = disagreement(rollout_id, group)
        if result.disagrees(kind):
            found.append(result)
    found.sort(key=Disagreement.sort_key)
    return found


def labeller_pairs(labels: Iterable[ReviewLabel]) -> list[tuple[str, str]]:
    """Every pair of labellers who labelled a rollout in common, sorted."""
    pairs: set[tuple[str, str]] = set()
    for by_labeller in _by_rollout(labels).values():
        names = sorted(by_labeller)
        pairs.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
    return sorted(pairs)
