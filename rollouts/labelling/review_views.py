"""The staff's review pages of a scheme: the rollouts whose labellers disagree, and one rollout's labels side by side
with the adjudication form. Staff open any rollout of the scheme, whoever holds it."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_safe

from rollouts.labelling import review, review_selectors, rules
from rollouts.labelling.access import markdown_html, page_budget, scheme_or_404, staff_required
from rollouts.labelling.bounded_form import bounded_label_form
from rollouts.labelling.forms import FINISH_CHOICES
from rollouts.labelling.review_forms import AdjudicationForm
from rollouts.labelling.review_services import adjudication_record
from rollouts.models import Adjudication, LabellingScheme, Rollout

REVIEW_PAGE_SIZE = 50
NOT_THE_SCHEMES = "Rollout #{rollout_id} is not a rollout of {prm_version}: not labelled in it, nor in its scope."
ADJUDICATED = "Adjudicated label of rollout #{rollout_id} stored ({rated} of {steps} steps decided)."


@require_safe
@staff_required
def review_list(request: HttpRequest, prm_version: str) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    context: dict = {"scheme": scheme, "kinds": review.KIND_LABELS}
    try:
        kind = review.parse_kind(request.GET.get("kind"))
        pair = review.parse_pair(request.GET.get("pair"))
    except review.ReviewQueryInvalid as exc:
        context.update({"error": str(exc), "kind": review.KIND_ANY, "pair": None, "pairs": [], "page": None})
        return render(request, "rollouts/labelling/review_list.html", context, status=400)
    labels = list(review_selectors.review_labels(scheme=scheme))
    found = review.disagreements(labels, kind=kind, pair=pair)
    page = Paginator(found, REVIEW_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context.update(
        {
            "kind": kind,
            "pair": ",".join(pair) if pair else "",
            "pairs": [f"{a},{b}" for a, b in review.labeller_pairs(labels)],
            "page": page,
            "rows": review_selectors.review_rows(scheme=scheme, found=page.object_list),
            "query": query.urlencode(),
        }
    )
    return render(request, "rollouts/labelling/review_list.html", context)


def _rollout_or_404(scheme: LabellingScheme, rollout_id: int) -> Rollout:
    rollout = review_selectors.rollout_of_scheme(scheme=scheme, rollout_id=rollout_id)
    if rollout is None:
        raise Http404(NOT_THE_SCHEMES.format(rollout_id=rollout_id, prm_version=scheme.prm_version))
    return rollout


def _initial(adjudication: Adjudication | None, steps: int) -> tuple[list[str], list[str], str, str]:
    """The form as an adjudication left it (nothing decided when there is none)."""
    if adjudication is None:
        return [""] * steps, [""] * steps, "", ""
    ratings = rules.ratings_of(list(adjudication.prm_output), adjudication.rated_steps)
    notes = list(adjudication.explanations or [])
    return (
        ["" if rating is None else str(rating) for rating in ratings] + [""] * (steps - len(ratings)),
        [str(note) for note in notes[:steps]] + [""] * (steps - len(notes)),
        "",
        adjudication.reason,
    )


def _review_page(
    request: HttpRequest,
    *,
    scheme: LabellingScheme,
    rollout: Rollout,
    shown: tuple[list[str], list[str], str, str] | None = None,
    errors: list[str] | None = None,
    status: int = 200,
) -> HttpResponse:
    found = review_selectors.rollout_review(scheme=scheme, rollout=rollout)
    columns = found.columns
    steps = len(rollout.reasoning)
    ratings, notes, finish_reason, reason = shown or _initial(found.adjudication, steps)
    rating_conflicts = set(found.disagreement.rating_steps) if found.disagreement else set()
    verdict_conflicts = set(found.disagreement.verdict_steps) if found.disagreement else set()
    budget = page_budget()
    rows = [
        {
            "index": index,
            "number": index + 1,
            "html": markdown_html(str(text), budget),
            "cells": [column.cells[index] for column in columns],
            "conflict": "verdict" if index in verdict_conflicts else "rating" if index in rating_conflicts else "",
            "rating": ratings[index],
            "note": notes[index],
        }
        for index, text in enumerate(rollout.reasoning)
    ]
    context = {
        "scheme": scheme,
        "rollout": rollout,
        "correct": rollout.correct,
        "prompt": markdown_html(rollout.example, budget),
        "review": found,
        "columns": columns,
        "rows": rows,
        "finish_choices": FINISH_CHOICES,
        "finish_reason": finish_reason,
        "reason": reason,
        "errors": errors or [],
    }
    return render(request, "rollouts/labelling/review_rollout.html", context, status=status)


@bounded_label_form
@require_http_methods(["GET", "HEAD", "POST"])
@staff_required
def review_rollout(request: HttpRequest, prm_version: str, rollout_id: int) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    rollout = _rollout_or_404(scheme, rollout_id)
    if request.method != "POST":
        return _review_page(request, scheme=scheme, rollout=rollout)
    steps = len(rollout.reasoning)
    form = AdjudicationForm(request.POST, steps=steps)
    if not form.is_valid():
        return _review_page(
            request, scheme=scheme, rollout=rollout, shown=form.shown(), errors=form.error_messages(), status=400
        )
    try:
        adjudication = adjudication_record(
            scheme=scheme, rollout=rollout, data=form.adjudication_input(), user=request.user, now=timezone.now()
        )
    except rules.RatingsInvalid as exc:
        return _review_page(request, scheme=scheme, rollout=rollout, shown=form.shown(), errors=[str(exc)], status=400)
    messages.success(request, ADJUDICATED.format(rollout_id=rollout.pk, rated=adjudication.rated_steps, steps=steps))
    return redirect("labelling:review_rollout", prm_version=scheme.prm_version, rollout_id=rollout.pk)
