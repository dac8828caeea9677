"""The staff page of a scheme's gold items: the list, "add a gold item" (a rollout and its expected ratings) and
"make gold" for adjudicated rollouts. Thin over ``gold``."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from rollouts.labelling import gold
from rollouts.labelling.access import scheme_or_404, staff_required
from rollouts.labelling.forms import GoldMarkForm
from rollouts.models import LabellingScheme

ACTION_ADD = "add"
ACTION_ADJUDICATION = "adjudication"
GOLD_ADDED = "Rollout #{rollout_id} is a gold item now ({rated} of {steps} steps checked)."
BAD_ADJUDICATION_ID = "Choose an adjudicated rollout."


def _page(
    request: HttpRequest, scheme: LabellingScheme, form: GoldMarkForm, *, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "scheme": scheme,
        "form": form,
        "error": error,
        "items": gold.gold_items(scheme=scheme),
        "adjudications": gold.adjudications_not_gold(scheme=scheme),
    }
    return render(request, "rollouts/labelling/gold.html", context, status=status)


@require_http_methods(["GET", "HEAD", "POST"])
@staff_required
def scheme_gold(request: HttpRequest, prm_version: str) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    if request.method != "POST":
        return _page(request, scheme, GoldMarkForm())
    try:
        if request.POST.get("action") == ACTION_ADJUDICATION:
            form = GoldMarkForm()
            rollout_id = request.POST.get("rollout_id", "")
            if not rollout_id.isdigit():
                return _page(request, scheme, form, error=BAD_ADJUDICATION_ID, status=400)
            item = gold.gold_from_adjudication(scheme=scheme, rollout_id=int(rollout_id), user=request.user)
        else:
            form = GoldMarkForm(request.POST)
            if not form.is_valid():
                return _page(request, scheme, form, status=400)
            item = gold.gold_mark(
                scheme=scheme,
                rollout_id=form.cleaned_data["rollout_id"],
                ratings=gold.ratings_parse(form.cleaned_data["ratings"]),
                user=request.user,
            )
    except gold.GoldError as exc:
        return _page(request, scheme, form, error=exc.message, status=400)
    messages.success(
        request, GOLD_ADDED.format(rollout_id=item.rollout_id, rated=item.rated_steps, steps=len(item.prm_output))
    )
    return redirect("labelling:gold", prm_version=scheme.prm_version)
