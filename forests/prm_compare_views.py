"""The PRM comparison page of a forest: its PRM versions and labelling schemes side by side against one reference
(see ``forests.prm_comparison``)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from forests.metrics.values import LABELLED, LABELS_PREFIX
from forests.prm_comparison import (
    DISAGREEMENTS_SHOWN,
    NO_SOURCES,
    SOURCES_MAX,
    comparison_request,
    prm_comparison,
)
from forests.selectors import forest_get
from forests.tree_sources import EXACT
from forests.views import forest_viewer_required
from prmsite.core.errors import ApplicationError, NotFoundError


def _tree_link(forest_name: str, root_id: int, node_id: int, source: str) -> str:
    """The tree page at ``node_id``, exact values and ``source`` side by side."""
    query = urlencode({"source": EXACT, "compare": source})
    return f"{reverse('forests:tree', args=[forest_name, root_id])}?{query}#node-{node_id}"


@require_safe
@forest_viewer_required
def prm_compare(request: HttpRequest, forest_name: str) -> HttpResponse:
    """``?sources=`` (repeated or comma-separated; none: every source on the forest), ``?reference=`` (``labelled``
    or ``labels:S``) and ``?threshold=``; a 400 in one line for a choice the page cannot compare."""
    try:
        forest = forest_get(name=forest_name)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    try:
        choice = comparison_request(
            forest=forest,
            sources=request.GET.getlist("sources"),
            reference=request.GET.get("reference"),
            threshold=request.GET.get("threshold"),
        )
        compared = prm_comparison(forest=forest, request=choice)
    except ApplicationError as exc:
        return HttpResponseBadRequest(exc.message, content_type="text/plain; charset=utf-8")
    rows = [
        {
            "c": c,
            "disagreements": [(d, _tree_link(forest.name, d.root_id, d.node_id, c.source)) for d in c.disagreements],
        }
        for c in compared
    ]
    report_ids = [c.report_id for c in compared if c.report_id is not None]
    context = {
        "forest": forest,
        "choice": choice,
        "rows": rows,
        "references": [LABELLED, *(o for o, _ in choice.available if o.startswith(LABELS_PREFIX))],
        "report_ids": ",".join(str(pk) for pk in report_ids),
        "missing_reports": [c.source for c in compared if c.report_id is None],
        "sources_max": SOURCES_MAX,
        "shown": DISAGREEMENTS_SHOWN,
        "no_sources": NO_SOURCES,
    }
    return render(request, "forests/prm_compare.html", context)
