"""Reads of the review pages: the scheme's people's labels as the disagreement list reads them, and every source's
label of one rollout side by side (people, AI judges, PRMs, the forest's Monte-Carlo values, the adjudication).

The list reads the scheme's labels once (``values_list(...).iterator()``), computes the disagreements in memory
(``review``), and then reads the shown page's rollouts and adjudications with one query each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prmsite.core.domain import LABEL_VALUES
from rollouts.labelling import rules
from rollouts.labelling.review import Disagreement, ReviewLabel, disagreement, first_error_of, first_error_text
from rollouts.labelling.step_values import rollout_mc_values
from rollouts.models import Adjudication, LabellingScheme, ProcessRewardLabel, Rollout
from rollouts.scope import scheme_rollouts

# How a rating (-1/0/+1; None: not rated) is shown: the number and its word, never a stored code.
RATING_WORDS: dict[int | None, str] = {
    rules.RATING_WRONG: "\u22121 wrong",
    rules.RATING_NEUTRAL: "0 neutral",
    rules.RATING_RIGHT: "+1 right",
    None: "unrated",
}
NO_VALUE = "\u2013"  # an en dash: the source says nothing about the step
MC_COLUMN = "Monte-Carlo value"
ADJUDICATION_COLUMN = "adjudicated"


def _rated_steps(attributes: Any) -> int | None:
    rated = attributes.get("rated_steps") if isinstance(attributes, dict) else None
    return rated if isinstance(rated, int) and not isinstance(rated, bool) else None


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def review_labels(*, scheme: LabellingScheme) -> Iterator[ReviewLabel]:
    """The labels of the scheme's people (``labelled_by`` set), as ratings; values that are not codes are left out."""
    rows = (
        ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version)
        .exclude(labelled_by="")
        .order_by("id")
        .values_list("rollout_id", "labelled_by", "prm_output", "attributes")
        .iterator(chunk_size=2000)
    )
    for rollout_id, labelled_by, prm_output, attributes in rows:
        try:
            ratings = rules.ratings_of(list(prm_output or []), _rated_steps(attributes))
        except (TypeError, ValueError):
            continue
        yield ReviewLabel(rollout_id=rollout_id, labeller=labelled_by, ratings=ratings)


@dataclass(frozen=True)
class ReviewRow:
    """One row of the disagreement list."""

    disagreement: Disagreement
    rollout: Rollout | None
    adjudication: Adjudication | None


def review_rows(*, scheme: LabellingScheme, found: Sequence[Disagreement]) -> list[ReviewRow]:
    """The rows of one page of the list: its rollouts and adjudications read with one query each."""
    ids = [item.rollout_id for item in found]
    rollouts = Rollout.objects.only("id", "example", "model", "correct").in_bulk(ids)
    adjudications = {
        adjudication.rollout_id: adjudication
        for adjudication in Adjudication.objects.filter(scheme=scheme, rollout_id__in=ids).select_related("decided_by")
    }
    return [
        ReviewRow(
            disagreement=item, rollout=rollouts.get(item.rollout_id), adjudication=adjudications.get(item.rollout_id)
        )
        for item in found
    ]


def rollout_of_scheme(*, scheme: LabellingScheme, rollout_id: int) -> Rollout | None:
    """The rollout, when it is the scheme's: labelled in it, or in its scope."""
    rollout = Rollout.objects.select_related("forest", "node__tree").filter(pk=rollout_id).first()
    if rollout is None:
        return None
    labelled = ProcessRewardLabel.objects.filter(prm_version=scheme.prm_version, rollout_id=rollout_id).exists()
    if labelled or scheme_rollouts(scheme).filter(pk=rollout_id).exists():
        return rollout
    return None


@dataclass(frozen=True)
class Cell:
    text: str  # what is shown: a rating's number and word, a reward or a value, or a dash
    css: str  # "wrong", "neutral", "right", "unrated", "none" (a reward or value: "right" / "wrong" by its verdict)
    note: str = ""


@dataclass
class Column:
    """One source's say on every step of the rollout."""

    title: str
    kind: str  # "person", "label" (an AI judge's or another scheme's codes), "reward" (a PRM), "mc", "adjudication"
    version: str = ""
    cells: list[Cell] = field(default_factory=list)
    facts: list[tuple[str, Any]] = field(default_factory=list)  # (what, value) shown under the column
    seconds_spent: float | None = None


_RATING_CSS = {
    rules.RATING_WRONG: "wrong",
    rules.RATING_NEUTRAL: "neutral",
    rules.RATING_RIGHT: "right",
    None: "unrated",
}


def _rating_cells(ratings: Sequence[int | None], notes: Sequence[Any], steps: int) -> list[Cell]:
    cells = []
    for index in range(steps):
        if index >= len(ratings):
            cells.append(Cell(text=NO_VALUE, css="none"))
            continue
        note = notes[index] if index < len(notes) and isinstance(notes[index], str) else ""
        cells.append(Cell(text=RATING_WORDS[ratings[index]], css=_RATING_CSS[ratings[index]], note=note))
    return cells


def _number_cells(
    values: Sequence[Any], notes: Sequence[Any], steps: int, *, right_at: float, above: bool
) -> list[Cell]:
    cells = []
    for index in range(steps):
        value = values[index] if index < len(values) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            cells.append(Cell(text=NO_VALUE, css="none"))
            continue
        right = value > right_at if above else value >= right_at
        note = notes[index] if index < len(notes) and isinstance(notes[index], str) else ""
        cells.append(Cell(text=f"{float(value):.3f}", css="right" if right else "wrong", note=note))
    return cells


def _is_coded(prm_output: Sequence[Any], *, of_scheme: bool) -> bool:
    """Label codes (0, 1, 2) rather than rewards: integers only, or a labelling scheme's values."""
    if not prm_output:
        return False
    if of_scheme:
        return all(not isinstance(v, bool) and isinstance(v, int | float) and v in LABEL_VALUES for v in prm_output)
    return all(not isinstance(v, bool) and isinstance(v, int) and v in LABEL_VALUES for v in prm_output)


@dataclass
class RolloutReview:
    rollout: Rollout
    people: list[Column]  # the scheme's labellers
    others: list[Column]  # other versions' labels, then the Monte-Carlo values
    adjudication: Adjudication | None
    adjudication_column: Column | None
    disagreement: Disagreement | None  # among the scheme's people (None: fewer than two)

    @property
    def columns(self) -> list[Column]:
        return [*self.people, *([self.adjudication_column] if self.adjudication_column else []), *self.others]


def rollout_review(*, scheme: LabellingScheme, rollout: Rollout) -> RolloutReview:
    """Every label of ``rollout`` as columns, the scheme's people first; the Monte-Carlo values when it is in a
    forest; the scheme's adjudication; and where the people disagree."""
    steps = len(rollout.reasoning)
    labels = list(
        ProcessRewardLabel.objects.filter(rollout=rollout).order_by("prm_version", "labelled_by", "worker", "id")
    )
    schemes = set(
        LabellingScheme.objects.filter(prm_version__in={label.prm_version for label in labels}).values_list(
            "prm_version", flat=True
        )
    )
    people: list[Column] = []
    people_ratings: list[ReviewLabel] = []
    others: list[Column] = []
    for label in labels:
        attributes = label.attributes if isinstance(label.attributes, dict) else {}
        notes = label.explanations if isinstance(label.explanations, list) else []
        output = label.prm_output if isinstance(label.prm_output, list) else []
        ours = label.prm_version == scheme.prm_version
        person = ours and bool(label.labelled_by)
        who = label.labelled_by or label.worker
        if _is_coded(output, of_scheme=label.prm_version in schemes):
            ratings = rules.ratings_of([int(v) for v in output], _rated_steps(attributes))
            column = Column(
                title=who if person else f"{label.prm_version} \u00b7 {who}",
                kind="person" if person else "label",
                version=label.prm_version,
                cells=_rating_cells(ratings, notes, steps),
            )
            column.facts.append(("first error", first_error_text(first_error_of(ratings))))
            if person:
                people_ratings.append(ReviewLabel(rollout_id=rollout.pk, labeller=label.labelled_by, ratings=ratings))
        else:
            column = Column(
                title=f"{label.prm_version} \u00b7 {who}",
                kind="reward",
                version=label.prm_version,
                cells=_number_cells(output, notes, steps, right_at=0.5, above=False),
            )
        for key in ("finish_reason", "mode"):
            if isinstance(attributes.get(key), str) and attributes[key]:
                column.facts.append((key.replace("_", " "), attributes[key]))
        if attributes.get("bad_problem") is True:
            column.facts.append(("bad problem", "flagged"))
        seconds = attributes.get("seconds_spent")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool):
            column.seconds_spent = float(seconds)
        column.facts.append(("labelled", _when(label.created_at)))
        (people if person else others).append(column)
    if rollout.forest_id is not None:
        values = rollout_mc_values(steps_by_rollout={rollout.pk: steps}).get(rollout.pk)
        if values is not None:
            others.append(
                Column(
                    title=MC_COLUMN,
                    kind="mc",
                    cells=_number_cells(values, [], steps, right_at=0.0, above=True),
                    facts=[("forest", rollout.forest.name)],
                )
            )
    adjudication = Adjudication.objects.filter(scheme=scheme, rollout=rollout).select_related("decided_by").first()
    adjudication_column = None
    if adjudication is not None:
        ratings = rules.ratings_of(list(adjudication.prm_output), adjudication.rated_steps)
        notes = adjudication.explanations if isinstance(adjudication.explanations, list) else []
        decided_by = adjudication.decided_by.get_username() if adjudication.decided_by else "(user removed)"
        adjudication_column = Column(
            title=ADJUDICATION_COLUMN,
            kind="adjudication",
            version=scheme.prm_version,
            cells=_rating_cells(ratings, notes, steps),
            facts=[
                ("first error", first_error_text(first_error_of(ratings))),
                ("by", decided_by),
                ("at", _when(adjudication.decided_at)),
                ("why", adjudication.reason),
            ],
        )
    return RolloutReview(
        rollout=rollout,
        people=people,
        others=others,
        adjudication=adjudication,
        adjudication_column=adjudication_column,
        disagreement=disagreement(rollout.pk, people_ratings) if len(people_ratings) >= 2 else None,
    )
