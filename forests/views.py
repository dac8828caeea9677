"""The forest pages: the list of forests, one forest's trees, one tree. Logged-in users only."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.views import redirect_to_login
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponsePermanentRedirect,
)
from django.shortcuts import redirect, render
from django.urls import is_valid_path, reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from forests.forest_search import (
    SORTS,
    TreeQuery,
    TreeQueryError,
    forest_tree_query,
    order_by_disagreement,
    tree_disagreement,
    tree_page,
    tree_query_parse,
    tree_rows_load,
)
from forests.growth.selectors import forest_growth_summary, tree_tokens_many
from forests.metrics.plot import search_plot
from forests.metrics.search import BASELINE_TITLES
from forests.models import Forest
from forests.models import SearchReport as SearchReportRow
from forests.search_reports import forest_search_report_saved, forest_search_reports, report_shown
from forests.selectors import (
    FOREST_NOT_FOUND,
    forest_get,
    forest_progress,
    forest_progress_many,
    tree_node_get,
    tree_rollouts,
    tree_root_get,
    tree_rows,
    tree_stats_many,
)
from forests.tree_sources import EXACT, source_name, threshold_parse, tree_source_choices, tree_source_read
from forests.treeview import SourceInput, tree_layout
from prmsite.core.errors import ApplicationError, NotFoundError
from prmsite.core.rendering import PageBudget, ShownText

FORESTS_PER_PAGE = 50
TREES_PER_PAGE = 50
REPORTS_PER_PAGE = 50
COMPARE_MAX = 8  # reports on one comparison plot
COMPARE_CACHE_SECONDS = 24 * 3600
COMPARE_TOO_MANY = "Compare at most {max} search reports at once."
COMPARE_NOT_NUMBERS = "The reports to compare are given by their numbers, e.g. ?ids=3,5."
COMPARE_NOT_FOUND = "Some of these reports are not reports of this forest."
NO_REPORT = "This forest has no saved search report."
REPORT_NOT_FOUND = "This forest has no search report with that number."
SVG_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


def forest_viewer_required(view):
    """Logged in (else the login page), with permission to view forests (else 403).

    The pages show ground truths and exact values: a person labelling steps (issue 11's labellers log in too) must
    not see them, so a login alone is not enough. Staff superusers have the permission; give it to researchers
    through a group.
    """
    return login_required(permission_required("forests.view_forest", raise_exception=True)(view))


def _int_param(request: HttpRequest, name: str, default: int, *, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(request.GET.get(name, default))))
    except (TypeError, ValueError):
        return default


@require_safe
@forest_viewer_required
def forest_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(Forest.objects.order_by("-created_at", "-id"), FORESTS_PER_PAGE).get_page(request.GET.get("page"))
    progress = forest_progress_many(forest_ids=[forest.pk for forest in page])
    rows = [(forest, progress[forest.pk]) for forest in page]
    return render(request, "forests/forest_list.html", {"page": page, "rows": rows})


def _forest_or_404(forest_name: str) -> Forest:
    try:
        return forest_get(name=forest_name)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc


def _forest_tree_page(
    request: HttpRequest, forest: Forest, progress
) -> tuple[TreeQuery, object, list[int], dict[int, float]]:
    """The page of trees the request asks for (``forests.forest_search``): its query, page, root ids and, sorted by
    disagreement, each tree's disagreement.

    ``TreeQueryError`` for a parameter that cannot be read; ``ApplicationError`` for a value source that cannot."""
    query = tree_query_parse(request.GET, forest=forest)
    if query.sort == "disagreement":
        disagreement = tree_disagreement(
            forest=forest, source=query.source, nodes=progress.nodes, rollouts=progress.rollouts
        )
        ids = list(forest_tree_query(forest=forest, query=query, disagreement_ids=[]))
        page = Paginator(order_by_disagreement(ids, disagreement, descending=query.descending), TREES_PER_PAGE)
        page = page.get_page(request.GET.get("page"))
        return query, page, list(page), disagreement
    page, root_ids = tree_page(forest=forest, query=query, page_number=request.GET.get("page"), per_page=TREES_PER_PAGE)
    return query, page, root_ids, {}


@require_safe
@forest_viewer_required
def forest_detail(request: HttpRequest, forest_name: str) -> HttpResponse:
    forest = _forest_or_404(forest_name)
    progress = forest_progress(forest=forest)
    try:
        query, page, root_ids, disagreement = _forest_tree_page(request, forest, progress)
    except TreeQueryError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    except ApplicationError as exc:
        return HttpResponseBadRequest(exc.message, content_type="text/plain; charset=utf-8")
    stats = tree_stats_many(root_ids=root_ids)
    rows = [(row, stats[row.id]) for row in tree_rows_load(forest=forest, root_ids=root_ids)]
    report = forest_search_report_saved(forest=forest)
    baselines = []
    if report is not None:
        baselines = [
            (BASELINE_TITLES.get(name, name), baseline)
            for name, baseline in (report.get("baselines") or {}).items()
            if isinstance(baseline, dict)
        ]
    context = {
        "forest": forest,
        "progress": progress,
        "page": page,
        "rows": rows,
        "query": query,
        "sorts": SORTS,
        "disagreement": disagreement,
        "report": report,
        "baselines": baselines,
    }
    # Growth (rollout_worker --forest_name): the plan, the queue, tokens per forest and per tree.
    context["growth"] = forest_growth_summary(forest=forest, now=timezone.now())
    context["tree_tokens"] = tree_tokens_many(root_ids=root_ids)
    return render(request, "forests/forest_detail.html", context)


def _svg_response(svg: str | bytes) -> HttpResponse:
    """A plot we drew (matplotlib, texts as paths): served as an image, under a policy that runs nothing in it."""
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Content-Security-Policy"] = SVG_POLICY
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_safe
@forest_viewer_required
def forest_search_plot(request: HttpRequest, forest_name: str) -> HttpResponse:
    """The plot of the forest's newest search report (SVG), drawn when it was saved."""
    forest = _forest_or_404(forest_name)
    row = SearchReportRow.objects.filter(forest=forest).only("plot_svg").first()
    if row is not None:
        return _svg_response(row.plot_svg)
    report = forest_search_report_saved(forest=forest)
    if report is None:
        raise Http404(NO_REPORT)
    # A report an older version saved in the forest's attributes: drawn here until the next save keeps it as a row.
    return _svg_response(search_plot([report]))


@require_safe
@forest_viewer_required
def search_report_plot(request: HttpRequest, forest_name: str, report_id: int) -> HttpResponse:
    """One kept report's plot (SVG), drawn when it was saved."""
    forest = _forest_or_404(forest_name)
    row = SearchReportRow.objects.filter(forest=forest, pk=report_id).only("plot_svg").first()
    if row is None:
        raise Http404(REPORT_NOT_FOUND)
    return _svg_response(row.plot_svg)


def _compare_ids(request: HttpRequest) -> list[int] | None:
    """The report numbers asked for (``?ids=3&ids=5`` or ``?ids=3,5``), ``None`` when none; ``ValueError`` when they
    are not numbers or too many."""
    raw = [part for value in request.GET.getlist("ids") for part in value.split(",") if part.strip()]
    if not raw:
        return None
    if len(raw) > COMPARE_MAX:
        raise ValueError(COMPARE_TOO_MANY.format(max=COMPARE_MAX))
    try:
        ids = sorted({int(part) for part in raw})
    except ValueError:
        raise ValueError(COMPARE_NOT_NUMBERS) from None
    return ids


def _compared(forest: Forest, ids: list[int] | None) -> list[int]:
    """The reports to compare: ``ids`` (all of this forest's), or by default the newest report of each value function
    and aggregation, at most ``COMPARE_MAX``. One query."""
    rows = SearchReportRow.objects.filter(forest=forest).values_list("pk", "value_function", "aggregation")
    if ids is not None:
        found = {pk for pk, _, _ in rows.filter(pk__in=ids)}
        if found != set(ids):
            raise ValueError(COMPARE_NOT_FOUND)
        return ids
    newest: dict[tuple[str, str], int] = {}
    for pk, value_function, aggregation in rows:  # newest first
        newest.setdefault((value_function, aggregation), pk)
    return sorted(newest.values())[-COMPARE_MAX:]


@require_safe
@forest_viewer_required
def search_reports(request: HttpRequest, forest_name: str) -> HttpResponse:
    """Every kept search report of the forest, newest first, and the ones chosen compared on one plot."""
    forest = _forest_or_404(forest_name)
    try:
        compared = _compared(forest, _compare_ids(request))
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    page = Paginator(forest_search_reports(forest=forest), REPORTS_PER_PAGE).get_page(request.GET.get("page"))
    reports = [report_shown(row) for row in page]
    legacy = forest_search_report_saved(forest=forest) if not page.paginator.count else None
    context = {
        "forest": forest,
        "page": page,
        "reports": reports,
        "legacy": legacy,
        "compared": compared,
        "compared_query": ",".join(str(pk) for pk in compared),
        "compare_max": COMPARE_MAX,
    }
    return render(request, "forests/search_reports.html", context)


@require_safe
@forest_viewer_required
def search_reports_plot(request: HttpRequest, forest_name: str) -> HttpResponse:
    """The chosen reports on one plot (SVG). Reports never change once kept, so each choice is drawn once and then
    served from the cache."""
    forest = _forest_or_404(forest_name)
    try:
        ids = _compared(forest, _compare_ids(request))
    except ValueError as exc:
        return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")
    if not ids:
        raise Http404(NO_REPORT)
    key = f"forests:search-compare:{forest.pk}:{','.join(map(str, ids))}"
    svg = cache.get(key)
    if svg is None:
        rows = SearchReportRow.objects.filter(forest=forest, pk__in=ids).order_by("pk").defer("plot_svg")
        shown = [report_shown(row) for row in rows]
        svg = search_plot(shown, title=f"{forest.name}: {len(shown)} search reports").decode()
        cache.set(key, svg, COMPARE_CACHE_SECONDS)
    return _svg_response(svg)


def page_budget() -> PageBudget:
    """What one forest page view may spend on its texts (PAGE_MARKDOWN_MAX_CHARS, PAGE_TEXT_MAX_BYTES)."""
    return PageBudget(markdown_chars=settings.PAGE_MARKDOWN_MAX_CHARS, html_bytes=settings.PAGE_TEXT_MAX_BYTES)


def _item_fields(item: dict | None, budget: PageBudget, *, limit: int | None) -> list[tuple[str, ShownText]]:
    """The dataset item's fields: texts as markdown like every other text, other values as JSON in a code span."""
    fields = []
    for key, value in (item or {}).items():
        if isinstance(value, str):
            fields.append((key, budget.show(value, limit=limit)))
        else:
            fields.append((key, budget.show_code(json.dumps(value, ensure_ascii=False), limit=limit)))
    return fields


def _tree_root_or_404(forest: Forest, root_id: int):
    try:
        return tree_root_get(forest=forest, root_id=root_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc


def _tree_sources(request: HttpRequest, forest: Forest, root) -> tuple[list[SourceInput], float]:
    """The value sources (``?source=``, ``?compare=``: ``exact``, ``prm:V``, ``labels:S``) and ``?threshold=`` of a
    tree page; ``ApplicationError`` (one line) for a source or threshold the page cannot read."""
    threshold = threshold_parse(request.GET.get("threshold"))
    names = [source_name(request.GET.get("source") or EXACT)]
    compare = request.GET.get("compare", "").strip()
    if compare:
        names.append(source_name(compare))
    return [tree_source_read(forest=forest, root=root, name=name) for name in names], threshold


def _bad_tree_request(request: HttpRequest, forest: Forest, root, message: str) -> HttpResponse:
    context = {"forest": forest, "root": root, "message": message}
    return render(request, "forests/tree_bad_request.html", context, status=400)


@require_safe
@forest_viewer_required
def tree_detail(request: HttpRequest, forest_name: str, root_id: int) -> HttpResponse:
    forest = _forest_or_404(forest_name)
    root = _tree_root_or_404(forest, root_id)
    focus_id = None
    if request.GET.get("node"):
        try:
            focus_id = int(request.GET["node"])
        except ValueError as exc:
            raise Http404("node must be a node id") from exc
    open_depth = _int_param(request, "open", 3, low=0, high=1000)
    try:
        sources, threshold = _tree_sources(request, forest, root)
    except ApplicationError as exc:
        return _bad_tree_request(request, forest, root, exc.message)
    # One budget for every text of the view: the tree's steps (each cut to FOREST_TREE_STEP_CHARS, which is all the
    # database sends of it), then the dataset item. Whatever the texts, the page parses and emits a bounded amount.
    budget = page_budget()
    step_chars = settings.FOREST_TREE_STEP_CHARS
    try:
        layout = tree_layout(
            tree_rows(root=root, text_chars=step_chars),
            ground_truth=root.ground_truth,
            budget=budget,
            rollouts=tree_rollouts(root=root),
            focus_id=focus_id,
            open_depth=open_depth,
            max_nodes=settings.FOREST_TREE_MAX_NODES,
            step_chars=step_chars,
            sources=sources,
            threshold=threshold,
        )
    except KeyError as exc:
        raise Http404(f"Tree {root.pk} has no node {focus_id}.") from exc
    item_fields = _item_fields(root.serialized_item, budget, limit=step_chars)
    kept = {key: request.GET[key] for key in ("source", "compare", "threshold", "open") if request.GET.get(key)}
    context = {
        "forest": forest,
        "root": root,
        "layout": layout,
        "root_value": layout.values[root.pk],
        "item_fields": item_fields,
        "open_depth": open_depth,
        "choices": tree_source_choices(root=root),
        "source": sources[0].name,
        "compare": sources[1].name if len(sources) > 1 else "",
        "threshold": threshold,
        "kept": urlencode(kept),  # the view's settings, kept by the links to a subtree
        "deeper": urlencode({**kept, "open": open_depth + 2}),
        "tree_url": reverse("forests:tree", args=[forest.name, root.pk]),  # a node's page: {tree_url}nodes/{id}/
    }
    return render(request, "forests/tree_detail.html", context)


@require_safe
@forest_viewer_required
def node_detail(request: HttpRequest, forest_name: str, root_id: int, node_id: int) -> HttpResponse:
    """One node's whole text on a page of its own (where a tree page cut it), within the page's budget; beyond that,
    its plain text at ``node_text``. A root also shows its whole dataset item."""
    forest = _forest_or_404(forest_name)
    root = _tree_root_or_404(forest, root_id)
    try:
        node = tree_node_get(root=root, node_id=node_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    budget = page_budget()
    context = {
        "forest": forest,
        "root": root,
        "node": node,
        "text": budget.show(node.text),
        "item_fields": _item_fields(root.serialized_item, budget, limit=None) if node.pk == root.pk else [],
    }
    return render(request, "forests/node_detail.html", context)


@require_safe
@forest_viewer_required
def node_text(request: HttpRequest, forest_name: str, root_id: int, node_id: int) -> HttpResponse:
    """One node's text as it is stored, as plain text: every character, with no rendering at all."""
    forest = _forest_or_404(forest_name)
    root = _tree_root_or_404(forest, root_id)
    try:
        node = tree_node_get(root=root, node_id=node_id)
    except NotFoundError as exc:
        raise Http404(exc.message) from exc
    response = HttpResponse(node.text, content_type="text/plain; charset=utf-8")
    response["X-Content-Type-Options"] = "nosniff"  # never sniffed into HTML, whatever the text holds
    return response


@require_safe
def forest_redirect(request: HttpRequest, forest_name: str) -> HttpResponse:
    """``/<forest_name>``, as the specification writes a forest's address, goes to its page.

    Only a logged-in user learns whether a forest exists: anyone else is sent to the login page whatever the name,
    so the answer says nothing about which forests there are. This route matches every one-segment path, so
    CommonMiddleware's APPEND_SLASH cannot see that ``/admin`` has a page at ``/admin/``: when no forest has the name,
    this view does what APPEND_SLASH would, and 404s otherwise.
    """
    may_view = request.user.is_authenticated and request.user.has_perm("forests.view_forest")
    if may_view and Forest.objects.filter(name=forest_name).exists():
        return redirect("forests:detail", forest_name=forest_name)
    with_slash = request.path_info + "/"
    if settings.APPEND_SLASH and is_valid_path(with_slash, getattr(request, "urlconf", None)):
        query = request.META.get("QUERY_STRING", "")
        return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    raise Http404(FOREST_NOT_FOUND.format(name=forest_name))
