"""Who may see the labelling pages, and helpers every labelling view shares.

Every page needs a login (through ``/label/login/``: labellers are not staff, so the admin's login is not theirs).
Labelling needs the permission ``rollouts.label_rollouts`` (the "labellers" group has it); the staff pages need staff.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

from prmsite.core.errors import NotFoundError
from prmsite.core.rendering import PageBudget
from rollouts.labelling import selectors
from rollouts.models import LabellingScheme

LABEL_PERMISSION = "rollouts.label_rollouts"


def asks_for_json(request: HttpRequest) -> bool:
    """The labelling page's script (``labelling.js``) rather than the browser's form: it asks for JSON."""
    return "application/json" in request.headers.get("Accept", "")


def forbidden(request: HttpRequest, *, staff: bool) -> HttpResponse:
    return render(request, "rollouts/labelling/forbidden.html", {"staff": staff}, status=403)


def _login_required(view: Callable, *, allow: Callable) -> Callable:
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), login_url=reverse("labelling:login"))
        if not allow(request.user):
            return forbidden(request, staff=allow is is_staff)
        return view(request, *args, **kwargs)

    return wrapper


def is_labeller(user) -> bool:
    return user.has_perm(LABEL_PERMISSION)


def is_staff(user) -> bool:
    return bool(user.is_staff)


def is_labeller_or_staff(user) -> bool:
    return is_labeller(user) or is_staff(user)


def labeller_required(view: Callable) -> Callable:
    return _login_required(view, allow=is_labeller)


def staff_required(view: Callable) -> Callable:
    return _login_required(view, allow=is_staff)


def labeller_or_staff_required(view: Callable) -> Callable:
    return _login_required(view, allow=is_labeller_or_staff)


def scheme_or_404(prm_version: str) -> LabellingScheme:
    try:
        return selectors.scheme_get(prm_version=prm_version)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc


def page_budget() -> PageBudget:
    """What one labelling page view may parse as markdown (PAGE_MARKDOWN_MAX_CHARS). No cap on the HTML: a labeller
    rates every step, so every character is shown (as plain text beyond the budget); a rollout's size is capped at
    intake (PRM_ROLLOUT_MAX_CHARS)."""
    return PageBudget(markdown_chars=settings.PAGE_MARKDOWN_MAX_CHARS)


def markdown_html(text: str, budget: PageBudget | None = None) -> SafeString:
    """Model output or user text as sanitised HTML (the forest pages' renderer), safe to put in a template: markdown
    within ``budget`` (a fresh page's budget when ``None``), escaped plain text beyond it."""
    shown = (budget or page_budget()).show(text)
    return mark_safe(shown.html)  # noqa: S308 - PageBudget.show returns sanitised or escaped HTML
