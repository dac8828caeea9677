"""The labeller's pages: the scheme picker, a scheme's page, the claim of the next rollout and the labelling page.

Thin views over ``services`` and ``selectors``. Forms work without JavaScript; ``rollouts/labelling.js`` adds the
keys, the draft saved while the page is open and when it is left, and the lease's state.

The labelling view reads its own form body, with a bound of its own (``bounded_form``); the page carries a signed
visit token (``visits``). Skipping has a form of its own, with nothing in it but the CSRF token (``rollout_skip``):
whatever the labelling form holds, and whatever made the server refuse it, a person can always give the rollout back
(it keeps the person's draft; the script saves the draft just before). A label's author revises it on the same page in
revision mode (``rollout_revise``): no draft, no lease, only the submit.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.views import LoginView, LogoutView
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from prmsite.core.errors import ApplicationError, ConflictError, NotFoundError
from rollouts.labelling import gold, rules, selectors, services, visits
from rollouts.labelling.access import (
    asks_for_json,
    is_labeller,
    labeller_or_staff_required,
    labeller_required,
    markdown_html,
    page_budget,
    scheme_or_404,
)
from rollouts.labelling.bounded_form import bounded_label_form
from rollouts.labelling.forms import (
    ACTION_DISCARD,
    ACTION_SAVE,
    ACTION_SKIP,
    ACTION_SUBMIT,
    FINISH_CHOICES,
    RATING_KEYS,
    RATING_WORDS,
    LabelForm,
)
from rollouts.models import LabellingScheme, LabelRevision, LabelSkip, ProcessRewardLabel, Rollout

NOT_CHECKED_OUT = (
    "Rollout #{rollout_id} is not checked out to you in {prm_version}: take the next one from the queue instead."
)
NOTHING_LEFT = "Nothing left for you to label in {title}: every rollout has its labels or is being labelled."
LABEL_STORED = "Label of rollout #{rollout_id} stored ({rated} of {steps} steps rated, {finish_reason})."
SKIPPED = (
    "Rollout #{rollout_id} skipped: your draft of it is kept, and it comes back to you after the rest of your queue."
)
LABEL_REVISED = (
    "Label of rollout #{rollout_id} revised ({rated} of {steps} steps rated, {finish_reason}): revision {n}."
)
REVISE_SUBMIT_ONLY = "A revision is submitted whole: it keeps no draft and skips nothing."
DRAFT_SAVED = "Draft saved."
DRAFT_DISCARDED = "Draft discarded."
LEASE_LOST = (
    "Your work was not stored: {reason} Your ratings and notes are kept below as a draft, and in your drafts list."
)


class LabellingLoginView(LoginView):
    template_name = "rollouts/labelling/login.html"
    redirect_authenticated_user = True
    next_page = "labelling:schemes"


class LabellingLogoutView(LogoutView):
    next_page = "labelling:login"


@require_safe
@labeller_or_staff_required
def scheme_list(request: HttpRequest) -> HttpResponse:
    rows = selectors.schemes_for_user(user=request.user, now=timezone.now(), include_closed=request.user.is_staff)
    return render(
        request, "rollouts/labelling/scheme_list.html", {"rows": rows, "is_labeller": is_labeller(request.user)}
    )


def _with_revision_counts(labels: list[ProcessRewardLabel]) -> list[ProcessRewardLabel]:
    """The labels, each with ``revision_count``: how many times its author revised it."""
    counts = dict(
        LabelRevision.objects.filter(label__in=labels).order_by().values_list("label").annotate(n=Count("id"))
    )
    for label in labels:
        label.revision_count = counts.get(label.pk, 0)
    return labels


@require_safe
@labeller_required
def scheme_detail(request: HttpRequest, prm_version: str) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    now = timezone.now()
    username = request.user.get_username()
    context = {
        "scheme": scheme,
        "instructions": markdown_html(scheme.instructions),
        "held": selectors.leases_held(prm_version=scheme.prm_version, username=username, now=now),
        "drafts": selectors.drafts_of(user=request.user, prm_version=scheme.prm_version, now=now),
        "skipped": set(
            LabelSkip.objects.filter(user=request.user, prm_version=scheme.prm_version).values_list(
                "rollout_id", flat=True
            )
        ),
        "labels": [
            (label, label.attributes.get("rated_steps", len(label.prm_output)))
            for label in _with_revision_counts(selectors.labels_of(username=username, prm_version=scheme.prm_version))
        ],
        "complete": selectors.scheme_complete_count(scheme=scheme),
        "rollouts": selectors.scheme_rollout_count(scheme=scheme),
        "scope": selectors.scheme_scope_words(scheme),
    }
    return render(request, "rollouts/labelling/scheme_detail.html", context)


def _to_rollout_or_scheme(scheme: LabellingScheme, rollout_id: int | None) -> HttpResponse:
    if rollout_id is None:
        return redirect("labelling:scheme", prm_version=scheme.prm_version)
    return redirect("labelling:rollout", prm_version=scheme.prm_version, rollout_id=rollout_id)


@require_POST
@labeller_required
def scheme_next(request: HttpRequest, prm_version: str) -> HttpResponse:
    """Resume the rollout the person holds, or claim the next one (a POST: claiming leases a rollout)."""
    scheme = scheme_or_404(prm_version)
    try:
        rollout_id = services.labelling_next(scheme=scheme, username=request.user.get_username(), now=timezone.now())
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("labelling:scheme", prm_version=scheme.prm_version)
    if rollout_id is None:
        messages.info(request, NOTHING_LEFT.format(title=scheme.title))
    return _to_rollout_or_scheme(scheme, rollout_id)


def _page(
    request: HttpRequest,
    *,
    scheme: LabellingScheme,
    rollout: Rollout,
    state: selectors.RolloutState,
    data: services.LabelInput,
    seconds_before: float,
    now: datetime,
    errors: list[str] | None = None,
    conflict: str | None = None,
    status: int = 200,
    revising: ProcessRewardLabel | None = None,
) -> HttpResponse:
    """The labelling page of ``rollout`` showing ``data`` (a draft's, or what was just posted); with ``revising``,
    the page revising that label (the person's own)."""
    wrong = rules.first_wrong(data.ratings)
    budget = page_budget()  # one for the page's texts: the steps first, what the labeller rates
    steps = [
        {
            "index": index,
            "number": index + 1,
            "html": markdown_html(text, budget),
            "rating": "" if data.ratings[index] is None else str(data.ratings[index]),
            "note": data.notes[index] if index < len(data.notes) else "",
            "after_error": scheme.stop_at_first_error and wrong is not None and index > wrong,
        }
        for index, text in enumerate(rollout.reasoning)
    ]
    context = {
        "scheme": scheme,
        "rollout": rollout,
        "instructions": markdown_html(scheme.instructions, budget),
        "prompt": markdown_html(rollout.example, budget),
        "correct": rollout.correct,
        "steps": steps,
        "data": data,
        "finish_choices": FINISH_CHOICES,
        "state": state,
        "lease_expires_at": state.lease.expires_at if state.lease else None,
        "visit": visits.visit_token(request, scheme, rollout.pk, now),
        "seconds_before": round(seconds_before, 1),
        "errors": errors or [],
        "conflict": conflict,
        "revising": revising,
        "skipped": revising is None
        and LabelSkip.objects.filter(user=request.user, prm_version=scheme.prm_version, rollout=rollout).exists(),
        "rating_choices": RATING_WORDS,
        "rating_keys": json.dumps(RATING_KEYS),  # the script reads the keys from the form (data-rating-keys)
    }
    return render(request, "rollouts/labelling/label.html", context, status=status)


def _label_input(label: ProcessRewardLabel, steps: int) -> services.LabelInput:
    """A stored label as the form shows it (for revising it)."""
    attributes = label.attributes or {}
    ratings = rules.ratings_of(list(label.prm_output), attributes.get("rated_steps"))[:steps]
    notes = [str(n) for n in list(label.explanations or [])[:steps]]
    # found_error and solution follow from the ratings: left "from the ratings", a revised rating changes them too.
    finish_reason = attributes.get("finish_reason", "")
    if finish_reason not in rules.FINISH_EARLY:
        finish_reason = ""
    return services.LabelInput(
        ratings=ratings + [None] * (steps - len(ratings)),
        notes=notes + [""] * (steps - len(notes)),
        bad_problem=bool(attributes.get("bad_problem")),
        finish_reason=finish_reason,
    )


def _labelled_page(
    request: HttpRequest, *, scheme: LabellingScheme, rollout: Rollout, label: ProcessRewardLabel
) -> HttpResponse:
    """The person's label of ``rollout``, its revisions (oldest first) and, while the scheme is open, *Revise*."""
    steps = len(rollout.reasoning)
    ratings = rules.ratings_of(label.prm_output, (label.attributes or {}).get("rated_steps"))
    notes = list(label.explanations or [""] * steps)
    budget = page_budget()
    # Only a stored label has revisions and may be revised (another object shaped as a label, such as a gold
    # answer, has none).
    revisable = isinstance(label, ProcessRewardLabel)
    revisions = [
        {
            "revision": revision,
            "ratings": rules.ratings_of(revision.prm_output, (revision.attributes or {}).get("rated_steps")),
        }
        for revision in (LabelRevision.objects.filter(label=label).order_by("revised_at", "id") if revisable else [])
    ]
    context = {
        "scheme": scheme,
        "rollout": rollout,
        "label": label,
        "revisable": revisable,
        "revisions": revisions,
        "prompt": markdown_html(rollout.example, budget),
        "correct": rollout.correct,
        "steps": [
            {
                "number": i + 1,
                "html": markdown_html(text, budget),
                "rating": ratings[i] if i < len(ratings) else None,
                "note": notes[i] if i < len(notes) else "",
            }
            for i, text in enumerate(rollout.reasoning)
        ],
    }
    return render(request, "rollouts/labelling/labelled.html", context)


def _draft_input(state: selectors.RolloutState, steps: int) -> services.LabelInput:
    draft = state.draft
    if draft is None:
        return services.LabelInput(ratings=[None] * steps, notes=[""] * steps)
    ratings = [r if r in rules.RATINGS else None for r in list(draft.ratings)[:steps]]
    notes = [str(n) for n in list(draft.notes)[:steps]]
    return services.LabelInput(
        ratings=ratings + [None] * (steps - len(ratings)),
        notes=notes + [""] * (steps - len(notes)),
        bad_problem=draft.bad_problem,
        finish_reason=draft.finish_reason,
    )


@bounded_label_form
@require_http_methods(["GET", "HEAD", "POST"])
@labeller_required
def rollout_label(request: HttpRequest, prm_version: str, rollout_id: int) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    try:
        rollout = selectors.rollout_get(rollout_id=rollout_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    now = timezone.now()
    state = selectors.rollout_state(user=request.user, prm_version=scheme.prm_version, rollout_id=rollout.pk, now=now)
    steps = len(rollout.reasoning)
    if request.method == "POST":
        return _rollout_post(request, scheme=scheme, rollout=rollout, state=state, now=now)
    if state.label is None:  # an answered gold item shows as any labelled rollout (rollouts.labelling.gold)
        answered = gold.gold_answered_label(user=request.user, prm_version=scheme.prm_version, rollout_id=rollout.pk)
        state = dataclasses.replace(state, label=answered) if answered is not None else state
    if state.label is not None:
        return _labelled_page(request, scheme=scheme, rollout=rollout, label=state.label)
    if state.lease is None and state.draft is None:
        messages.warning(request, NOT_CHECKED_OUT.format(rollout_id=rollout.pk, prm_version=scheme.prm_version))
        return redirect("labelling:scheme", prm_version=scheme.prm_version)
    return _page(
        request,
        scheme=scheme,
        rollout=rollout,
        state=state,
        data=_draft_input(state, steps),
        seconds_before=state.draft.seconds_spent if state.draft else 0.0,
        now=now,
    )


def _skip(request: HttpRequest, *, scheme: LabellingScheme, rollout_id: int, now: datetime) -> HttpResponse:
    """Skip (the time since the page's visit token, when the form carries one, goes to the kept draft)."""
    visit_started = visits.visit_started(request, str(request.POST.get("visit", "")), scheme, rollout_id)
    next_id = services.label_skip(
        user=request.user, scheme=scheme, rollout_id=rollout_id, now=now, visit_started=visit_started
    )
    messages.info(request, SKIPPED.format(rollout_id=rollout_id))
    if next_id is None:
        messages.info(request, NOTHING_LEFT.format(title=scheme.title))
    return _to_rollout_or_scheme(scheme, next_id)


@require_POST
@labeller_required
def rollout_skip(request: HttpRequest, prm_version: str, rollout_id: int) -> HttpResponse:
    """Give the rollout back and go on to the next one. The form holds nothing but its CSRF token and the rollout
    need not exist or be held, so this works whatever the labelling form or the rollout's page would do."""
    scheme = scheme_or_404(prm_version)
    return _skip(request, scheme=scheme, rollout_id=rollout_id, now=timezone.now())


def _refused(request: HttpRequest, scheme: LabellingScheme, exc: services.NotHandedOut) -> HttpResponse:
    """The answer to work on a rollout not handed to the person: 403, the reason, nothing of the rollout."""
    if asks_for_json(request):
        return JsonResponse({"saved": False, "errors": [exc.message]}, status=exc.status_code)
    context = {"message": exc.message, "prm_version": scheme.prm_version, "rollout_id": None}
    return render(request, "rollouts/labelling/refused.html", context, status=exc.status_code)


def _rollout_post(
    request: HttpRequest, *, scheme: LabellingScheme, rollout: Rollout, state: selectors.RolloutState, now: datetime
) -> HttpResponse:
    if request.POST.get("action") == ACTION_SKIP:  # skipping reads nothing else, so nothing in the form can block it
        return _skip(request, scheme=scheme, rollout_id=rollout.pk, now=now)
    visit_started = visits.visit_started(request, str(request.POST.get("visit", "")), scheme, rollout.pk)
    try:
        services.labelling_access_check(
            user=request.user,
            prm_version=scheme.prm_version,
            rollout_id=rollout.pk,
            now=now,
            visit_started=visit_started,
        )
    except services.NotHandedOut as exc:
        return _refused(request, scheme, exc)
    form = LabelForm(request.POST, steps=len(rollout.reasoning))
    seconds_before = state.draft.seconds_spent if state.draft else 0.0
    if not form.is_valid():
        errors = form.error_messages()
        if asks_for_json(request):
            return JsonResponse({"saved": False, "errors": errors}, status=400)
        return _page(
            request,
            scheme=scheme,
            rollout=rollout,
            state=state,
            data=form.raw_input(),
            seconds_before=seconds_before,
            now=now,
            errors=errors,
            status=400,
        )
    user = request.user
    action = form.chosen_action
    data = form.label_input()
    if action == ACTION_SAVE:
        try:
            saved = services.draft_save(
                user=user,
                scheme=scheme,
                rollout=rollout,
                data=data,
                visit_started=visit_started,
                now=now,
                resume=form.cleaned_data.get("resume", False),
            )
        except services.NotHandedOut as exc:  # as for the submit below
            return _refused(request, scheme, exc)
        if asks_for_json(request):
            return JsonResponse(
                {
                    "saved": saved.draft is not None,
                    "labelled": saved.draft is None,
                    "lease_expires_at": saved.lease_expires_at.isoformat() if saved.lease_expires_at else None,
                    "seconds_spent": round(saved.draft.seconds_spent, 1) if saved.draft else None,
                    "visit": visits.visit_token(request, scheme, rollout.pk, now),
                }
            )
        messages.success(request, DRAFT_SAVED)
        return redirect("labelling:rollout", prm_version=scheme.prm_version, rollout_id=rollout.pk)
    if action == ACTION_DISCARD:
        services.draft_discard(user=user, prm_version=scheme.prm_version, rollout_id=rollout.pk)
        messages.info(request, DRAFT_DISCARDED)
        return redirect("labelling:rollout", prm_version=scheme.prm_version, rollout_id=rollout.pk)
    try:
        label = services.label_submit(
            user=user, scheme=scheme, rollout=rollout, data=data, visit_started=visit_started, now=now
        )
    except services.NotHandedOut as exc:  # the draft that gave the right was discarded meanwhile (another tab)
        return _refused(request, scheme, exc)
    except ConflictError as exc:
        state = selectors.rollout_state(user=user, prm_version=scheme.prm_version, rollout_id=rollout.pk, now=now)
        return _page(
            request,
            scheme=scheme,
            rollout=rollout,
            state=state,
            data=data,
            seconds_before=state.draft.seconds_spent if state.draft else seconds_before,
            now=now,
            conflict=LEASE_LOST.format(reason=exc.message),
            status=409,
        )
    except ApplicationError as exc:
        return _page(
            request,
            scheme=scheme,
            rollout=rollout,
            state=state,
            data=data,
            seconds_before=seconds_before,
            now=now,
            errors=[exc.message],
            status=400,
        )
    attributes = label.attributes or {}
    messages.success(
        request,
        LABEL_STORED.format(
            rollout_id=rollout.pk,
            rated=attributes.get("rated_steps", len(label.prm_output)),
            steps=len(label.prm_output),
            finish_reason=attributes.get("finish_reason", "stored"),
        ),
    )
    try:
        next_id = services.labelling_next(scheme=scheme, username=user.get_username(), now=timezone.now())
    except ApplicationError as exc:  # the scheme was closed meanwhile
        messages.info(request, exc.message)
        next_id = None
    else:
        if next_id is None:
            messages.info(request, NOTHING_LEFT.format(title=scheme.title))
    return _to_rollout_or_scheme(scheme, next_id)


def _revise_refused(request: HttpRequest, scheme: LabellingScheme, exc: ApplicationError) -> HttpResponse:
    """A revision refused (not the author: 403; a closed scheme: 409): the reason, nothing of the rollout."""
    if asks_for_json(request):
        return JsonResponse({"saved": False, "errors": [exc.message]}, status=exc.status_code)
    context = {"message": exc.message, "prm_version": scheme.prm_version, "rollout_id": None}
    return render(request, "rollouts/labelling/refused.html", context, status=exc.status_code)


@bounded_label_form
@require_http_methods(["GET", "HEAD", "POST"])
@labeller_required
def rollout_revise(request: HttpRequest, prm_version: str, rollout_id: int) -> HttpResponse:
    """The author's revision of their label: the labelling page filled with the label; its submit replaces the
    label's values and keeps the old ones as a revision. Refused to anyone else (403) and in a closed scheme (409)."""
    scheme = scheme_or_404(prm_version)
    try:
        rollout = selectors.rollout_get(rollout_id=rollout_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    try:
        label = services.label_revise_check(user=request.user, scheme=scheme, rollout_id=rollout.pk)
    except (services.NotRevisable, services.RevisionClosed) as exc:
        return _revise_refused(request, scheme, exc)
    now = timezone.now()
    state = selectors.rollout_state(user=request.user, prm_version=scheme.prm_version, rollout_id=rollout.pk, now=now)
    steps = len(rollout.reasoning)
    seconds_before = float((label.attributes or {}).get("seconds_spent") or 0.0)
    page = {"scheme": scheme, "rollout": rollout, "state": state, "seconds_before": seconds_before, "now": now}
    if request.method != "POST":
        return _page(request, **page, data=_label_input(label, steps), revising=label)
    form = LabelForm(request.POST, steps=steps)
    if not form.is_valid() or form.chosen_action != ACTION_SUBMIT:
        errors = form.error_messages() if form.errors else [REVISE_SUBMIT_ONLY]
        if asks_for_json(request):
            return JsonResponse({"saved": False, "errors": errors}, status=400)
        return _page(request, **page, data=form.raw_input(), errors=errors, status=400, revising=label)
    visit_started = visits.visit_started(request, str(request.POST.get("visit", "")), scheme, rollout.pk)
    data = form.label_input()
    try:
        label = services.label_revise(
            user=request.user, scheme=scheme, rollout=rollout, data=data, visit_started=visit_started, now=now
        )
    except (services.NotRevisable, services.RevisionClosed) as exc:  # changed meanwhile (the scheme was closed)
        return _revise_refused(request, scheme, exc)
    except ApplicationError as exc:
        return _page(request, **page, data=data, errors=[exc.message], status=400, revising=label)
    attributes = label.attributes or {}
    messages.success(
        request,
        LABEL_REVISED.format(
            rollout_id=rollout.pk,
            rated=attributes.get("rated_steps", len(label.prm_output)),
            steps=len(label.prm_output),
            finish_reason=attributes.get("finish_reason", "stored"),
            n=LabelRevision.objects.filter(label=label).count(),
        ),
    )
    return redirect("labelling:rollout", prm_version=scheme.prm_version, rollout_id=rollout.pk)
