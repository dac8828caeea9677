"""The staff pages of a scheme: progress, labellers, agreement, and the consensus export."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from rollouts.labelling import gold, stats
from rollouts.labelling.access import markdown_html, page_budget, scheme_or_404, staff_required
from rollouts.labelling.exports import ConsensusOptions, consensus_records
from rollouts.labelling.forms import ConsensusExportForm
from rollouts.labelling.stepwise import ExportError, stepwise_write


def _comparison_choice(request: HttpRequest, candidates: list[stats.ComparisonCandidate]) -> tuple[list[str], bool]:
    known = [candidate.prm_version for candidate in candidates]
    if "compare" in request.GET or "mc" in request.GET:
        chosen = [v for v in request.GET.getlist("compare") if v in known]
        return chosen, request.GET.get("mc") == "1"
    return known, True


@require_safe
@staff_required
def scheme_stats(request: HttpRequest, prm_version: str) -> HttpResponse:
    scheme = scheme_or_404(prm_version)
    now = timezone.now()
    labels = list(stats.label_rows(prm_version=scheme.prm_version))
    candidates = stats.comparison_candidates(scheme=scheme)
    versions, mc = _comparison_choice(request, candidates)
    context = {
        "scheme": scheme,
        "progress": stats.scheme_progress(scheme=scheme, now=now),
        "labellers": stats.labeller_stats(scheme=scheme, now=now, labels=labels),
        "agreement": stats.scheme_agreement(labels=labels),
        "candidates": candidates,
        "chosen_versions": versions,
        "mc": mc,
        "comparisons": stats.scheme_comparisons(scheme=scheme, labels=labels, versions=versions, mc=mc),
        "gold": gold.gold_summary(scheme=scheme),
        "export_form": ConsensusExportForm(
            versions=[c.prm_version for c in candidates],
            initial={"min_labels": scheme.labels_per_rollout, "mc": False},
        ),
    }
    return render(request, "rollouts/labelling/scheme_stats.html", context)


def _download_name(prm_version: str, fmt: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', prm_version)}-consensus.{fmt}"


def _record_texts(record: dict) -> dict:
    """A stepwise record's prompt and steps as the pages show them (markdown and math, sanitised), within one page
    budget, beside the record's JSON: LaTeX is checked as people read it, not as escaped source."""
    budget = page_budget()
    return {
        "prompt": markdown_html(str(record.get("prompt", "")), budget),
        "steps": [
            (markdown_html(str(step), budget), label)
            for step, label in zip(record.get("completions", []), record.get("labels", []), strict=False)
        ],
    }


@require_safe
@staff_required
def scheme_export(request: HttpRequest, prm_version: str) -> HttpResponse:
    """The consensus set: a preview of what would be kept (counts, reasons for what is left out) with a download
    button, or the file itself with ``download=1``."""
    scheme = scheme_or_404(prm_version)
    candidates = [c.prm_version for c in stats.comparison_candidates(scheme=scheme)]
    form = ConsensusExportForm(request.GET, versions=candidates)
    if not form.is_valid():
        return render(
            request, "rollouts/labelling/export.html", {"scheme": scheme, "form": form, "tally": None}, status=400
        )
    options = ConsensusOptions(
        mc=form.cleaned_data["mc"],
        versions=tuple(form.cleaned_data["versions"]),
        rule=form.cleaned_data["rule"],
        min_labels=form.cleaned_data["min_labels"],
        gold_min_accuracy=form.cleaned_data["gold_min_accuracy"],
        gold_min_answers=form.cleaned_data["gold_min_answers"],
        adjudicated_first=form.cleaned_data["adjudicated_first"],
    )
    records, tally = consensus_records(scheme=scheme, options=options)
    if request.GET.get("download") != "1" or not records:
        query = request.GET.copy()
        query["download"] = "1"
        context = {
            "scheme": scheme,
            "form": form,
            "tally": tally,
            "sources": options.sources(scheme),
            "download_query": query.urlencode(),
            "sample": json.dumps(records[0], ensure_ascii=False, indent=1) if records else None,
            "sample_texts": _record_texts(records[0]) if records else None,
        }
        return render(request, "rollouts/labelling/export.html", context)
    fmt = form.cleaned_data["format"]
    work = Path(tempfile.mkdtemp(prefix="consensus-"))
    try:
        path = work / _download_name(scheme.prm_version, fmt)
        try:
            stepwise_write(records, path, fmt)
        except ExportError as exc:
            raise Http404(str(exc)) from exc
        handle = path.open("rb")  # the file stays readable through the handle once its folder is removed
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FileResponse(handle, as_attachment=True, filename=_download_name(scheme.prm_version, fmt))
