"""Admin for forests: seeding a forest from a config ("Add forest"), its progress and pages, a delete that scales,
and two actions: computing search metrics (shown on the forest's page) and downloading an export.

Seeding, metrics and exports from the admin run in the request, so their work is bounded: every parameter is checked
by the validator the commands use (``parse_num_beam_values``: at most 16 values of N, each at most 1024;
``ExportOptions``: a placeholder of at most 32 printable characters, finite numbers), and the actions read at most
``ADMIN_ACTION_MAX_NODES`` nodes per request. Larger forests go through the commands (``seed_forest``,
``beam_search --save``, ``export_preferences``), which show progress bars. A download is streamed from the file the
export wrote, never read into memory.
"""

from __future__ import annotations

import shutil

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import FileResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from forests.exports import export_options, preferences_export_download
from forests.metrics.beam import Aggregation
from forests.metrics.export.names import DEFAULT_PLACEHOLDER, KINDS
from forests.metrics.export.options import PLACEHOLDER_MAX_CHARS, placeholder_token_check
from forests.metrics.preferences import PATH_MODES, PATHS_DISTINCT
from forests.metrics.search import MAX_BEAM_VALUES, MAX_NUM_BEAMS, parse_num_beam_values
from forests.metrics.values import LABELLED
from forests.models import Forest, Node
from forests.search_reports import forest_search_report, report_shown, value_source_choices
from forests.selectors import forest_counts, forest_progress
from forests.services import forest_delete, forest_search_report_save, forest_seed
from prmsite.admin import JSON_FORM_FIELDS
from prmsite.core.configs.data import local_location_allowed
from prmsite.core.configs.loader import config_discover, config_load
from prmsite.core.dataset_files import FORMATS
from prmsite.core.errors import ApplicationError
from rollouts.models import Rollout

ACTION_TOO_LARGE = (
    "The selected forests hold {nodes:,} nodes: the admin reads at most {max:,} in one request "
    "(ADMIN_ACTION_MAX_NODES). Use python manage.py {command} for them."
)
DATASET_OUTSIDE_ALLOWED = (
    "Local datasets are read only from the folders in PRM_DATASET_DIRS ({dirs}); give a hub name, a path inside one "
    "of them, or use the seed_forest command."
)


def _count_subquery(model, **filters):
    return Coalesce(
        Subquery(
            model.objects.filter(forest=OuterRef("pk"), **filters)
            .order_by()
            .values("forest")
            .annotate(n=Count("pk"))
            .values("n")[:1]
        ),
        0,
    )


def _config_choices() -> list[tuple[str, str]]:
    choices = []
    for location in config_discover():
        where = "built-in" if location.builtin else str(location.path.parent)
        kind = "" if location.kind == "module" else ", template JSON"
        choices.append((location.name, f"{location.name} ({where}{kind})"))
    return choices


class ForestSeedForm(forms.Form):
    config_name = forms.ChoiceField(
        label="Experiment config",
        help_text="Built-in configs and those found in EXPERIMENT_CONFIG_DIRS.",
    )
    dataset_split = forms.CharField(max_length=100, initial="test", help_text="Dataset split, e.g. test or train.")
    forest_name_suffix = forms.RegexField(
        regex=r"^[A-Za-z0-9_.-]*$",
        required=False,
        max_length=80,
        help_text="Last part of the forest name <config>-<split>-<suffix>; a UTC timestamp when empty.",
    )
    limit = forms.IntegerField(required=False, min_value=1, help_text="Seed only the first N items.")
    dataset_name = forms.CharField(
        required=False,
        max_length=500,
        help_text="Read the items from here instead: a hub name, or a save_to_disk folder or jsonl/csv/parquet file "
        "inside a folder listed in PRM_DATASET_DIRS.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["config_name"].choices = _config_choices()

    def clean_dataset_name(self) -> str:
        location = self.cleaned_data["dataset_name"].strip()
        if location and not local_location_allowed(location, allowed_dirs=settings.PRM_DATASET_DIRS):
            raise forms.ValidationError(DATASET_OUTSIDE_ALLOWED.format(dirs=", ".join(settings.PRM_DATASET_DIRS)))
        return location


def _action_too_large(forests, *, command: str) -> str | None:
    """Why an admin action may not read ``forests`` in one request (``None`` when it may): more nodes in all than
    ADMIN_ACTION_MAX_NODES."""
    nodes = Node.objects.filter(forest__in=[forest.pk for forest in forests]).count()
    if nodes > settings.ADMIN_ACTION_MAX_NODES:
        return ACTION_TOO_LARGE.format(nodes=nodes, max=settings.ADMIN_ACTION_MAX_NODES, command=command)
    return None


VALUE_SOURCE_UNKNOWN = "Choose one of the value sources listed; {value} is not one of this forest's."
SEARCH_NOTHING_KEPT = "Nothing was kept: {errors}"


class ValueSourceField(forms.ChoiceField):
    """The value sources that exist on the selected forests (``value_source_choices``), named in words."""

    def __init__(self, **kwargs) -> None:
        super().__init__(
            label="Value source",
            initial=LABELLED,
            error_messages={"invalid_choice": VALUE_SOURCE_UNKNOWN.replace("{value}", "%(value)s")},
            **kwargs,
        )


class SearchMetricsForm(forms.Form):
    num_beam_values = forms.CharField(
        label="Numbers of beams N",
        initial="1,5",
        max_length=200,
        help_text=f"Comma-separated, e.g. 1,2,4,8: at most {MAX_BEAM_VALUES} values, each from 1 to {MAX_NUM_BEAMS}.",
    )
    value_function_option = ValueSourceField(
        help_text="What scores the steps: exact values from the ground truth, a PRM's step scores, or a labelling "
        "scheme's step labels (those with labels on the selected forests' rollouts)."
    )
    aggregation = forms.ChoiceField(
        label="Aggregation",
        choices=[(a.value, a.value) for a in Aggregation],
        initial=Aggregation.LAST.value,
        help_text="How a beam's score aggregates the values of its steps below the root.",
    )

    def __init__(self, *args, forests=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["value_function_option"].choices = value_source_choices(forests=forests)

    def clean_num_beam_values(self) -> list[int]:
        try:
            return parse_num_beam_values(self.cleaned_data["num_beam_values"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


class ExportForm(forms.Form):
    kind = forms.ChoiceField(choices=[(k, k) for k in KINDS], initial="pairs")
    format = forms.ChoiceField(
        choices=[(f, f if f != "hf_disk" else "hf_disk (zip of the save_to_disk folder)") for f in FORMATS],
        initial="jsonl",
    )
    value_function_option = ValueSourceField(help_text="What gives the steps their values (pairs, stepwise).")
    min_margin = forms.FloatField(initial=0.0, min_value=0.0, help_text="pairs: smallest value difference kept.")
    max_pairs_per_node = forms.IntegerField(required=False, min_value=1, help_text="pairs: cap per node (empty: all).")
    neutral_pairs = forms.BooleanField(required=False, help_text="pairs: also equal-valued siblings, marked 2.")
    paths = forms.ChoiceField(
        choices=[(p, p) for p in PATH_MODES],
        initial=PATHS_DISTINCT,
        help_text="Path-based kinds: one record per distinct path, or one per rollout.",
    )
    threshold = forms.FloatField(initial=0.0, help_text="A step is good when its value is above this.")
    soft_labels = forms.BooleanField(required=False, help_text="stepwise: float labels (the values).")
    placeholder_token = forms.CharField(
        initial=DEFAULT_PLACEHOLDER,
        max_length=PLACEHOLDER_MAX_CHARS,
        help_text=f"openrlhf: token after each step (at most {PLACEHOLDER_MAX_CHARS} characters, on one line).",
    )

    def clean_placeholder_token(self) -> str:
        try:
            return placeholder_token_check(self.cleaned_data["placeholder_token"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc


@admin.register(Forest)
class ForestAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FORM_FIELDS
    list_display = ["name", "config_name", "dataset_split", "tree_count", "rollout_count", "pages", "created_at"]
    list_filter = ["config_name", "dataset_split", "created_at"]
    search_fields = ["name", "config_name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "counts",
        "progress",
        "pages",
        "created_at",
        "config_sha256",
        "config_git_commit",
        "config_git_dirty",
        "config_source",
    ]
    fieldsets = [
        (None, {"fields": ["name", "config_name", "dataset_split", "counts", "progress", "pages", "created_at"]}),
        ("Generation settings", {"fields": ["rollout_config", "attributes"]}),
        (
            "Provenance",
            {
                "classes": ["collapse"],
                "fields": ["config_sha256", "config_git_commit", "config_git_dirty", "config_source"],
            },
        ),
    ]
    seed_template = "forests/admin_seed_form.html"
    action_template = "forests/admin_action_form.html"
    actions = ["compute_search_metrics", "download_export"]

    def get_readonly_fields(self, request, obj=None):
        # The name is the forest's identity: workers post rollouts to it and its pages live under it.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "name", "config_name", "dataset_split"] if obj is not None else fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _tree_count=_count_subquery(Node, depth=0),
                _rollout_count=_count_subquery(Rollout),
            )
        )

    @admin.display(description="trees", ordering="_tree_count")
    def tree_count(self, obj: Forest) -> int:
        return obj._tree_count

    @admin.display(description="rollouts", ordering="_rollout_count")
    def rollout_count(self, obj: Forest) -> int:
        return obj._rollout_count

    @admin.display(description="counts")
    def counts(self, obj: Forest) -> str:
        if obj.pk is None:
            return "-"
        c = forest_counts(forest=obj)
        return f"{c.trees} trees, {c.nodes} nodes, {c.leaves} leaves, {c.rollouts} rollouts"

    @admin.display(description="progress")
    def progress(self, obj: Forest) -> str:
        if obj.pk is None:
            return "-"
        p = forest_progress(forest=obj)
        accuracy = (
            f"{p.accuracy:.3f} ({p.correct_rollouts}/{p.rollouts} rollouts correct)" if p.accuracy is not None else "-"
        )
        return f"{p.trees_with_rollouts} of {p.trees} trees have rollouts; accuracy so far {accuracy}"

    # --- Actions: search metrics (saved, shown on the forest's page) and an export download ------------------------

    def _action_page(self, request, queryset, *, action: str, title: str, form: forms.Form, intro: str):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "intro": intro,
            "form": form,
            "forests": list(queryset),
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, self.action_template, context)

    @admin.action(description="Compute search metrics (beam search and baselines)", permissions=["change"])
    def compute_search_metrics(self, request, queryset):
        forests = list(queryset)
        form = SearchMetricsForm(request.POST if "apply" in request.POST else None, forests=forests)
        too_large = _action_too_large(forests, command="beam_search --save") if form.is_bound else None
        if too_large:
            form.add_error(None, too_large)
        if "apply" in request.POST and form.is_valid():
            data = form.cleaned_data
            reports, errors = [], []
            for forest in forests:
                try:
                    report = forest_search_report(
                        forest=forest,
                        num_beam_values=data["num_beam_values"],
                        value_function_option=data["value_function_option"],
                        aggregation=data["aggregation"],
                    )
                except ApplicationError as exc:
                    errors.append(f"{forest.name}: {exc.message}")
                else:
                    reports.append((forest, report))
            if errors:  # nothing kept: the form comes back with its input and what went wrong
                form.add_error(None, SEARCH_NOTHING_KEPT.format(errors=" ".join(errors)))
            else:
                for forest, report in reports:
                    kept = forest_search_report_save(forest=forest, report=report.as_dict(), created_by=request.user)
                    best = [r for r in report.results if r.accuracy is not None]
                    figures = ", ".join(f"N={r.num_beams}: {r.accuracy:.3f}" for r in best) or "no tree with rollouts"
                    messages.success(
                        request,
                        format_html(
                            'Search report #{} of <a href="{}">{}</a> over {} trees: {}.',
                            kept.pk,
                            reverse("forests:search_reports", args=[forest.name]),
                            forest.name,
                            report.num_trees,
                            figures,
                        ),
                    )
                    warning = report_shown(kept)["coverage_warning"]
                    if warning:
                        messages.warning(request, f"{forest.name}: {warning}")
                return None
        return self._action_page(
            request,
            queryset,
            action="compute_search_metrics",
            title="Compute search metrics",
            form=form,
            intro="Beam search for each N and the baselines (random rollout, majority vote, best-of-N, weighted "
            "best-of-N, oracle) on each selected forest, as python manage.py beam_search computes them. Each report "
            "is kept beside the forest's earlier ones: the newest shows on the forest's page, and any of them can be "
            "compared on its search reports page.",
        )

    @admin.action(description="Download an export (preferences, step labels, trees)", permissions=["view"])
    def download_export(self, request, queryset):
        forests = list(queryset[:2])
        if len(forests) != 1:
            messages.error(request, "Select exactly one forest to export.")
            return None
        form = ExportForm(request.POST if "apply" in request.POST else None)
        form.fields["value_function_option"].choices = value_source_choices(forests=forests)
        too_large = _action_too_large(forests, command="export_preferences") if form.is_bound else None
        if too_large:
            form.add_error(None, too_large)
        if "apply" in request.POST and form.is_valid():
            data = dict(form.cleaned_data)
            fmt = data.pop("format")
            value_function_option = data.pop("value_function_option")
            try:
                path, name, _ = preferences_export_download(
                    forest=forests[0],
                    fmt=fmt,
                    options=export_options(**data),
                    value_function_option=value_function_option,
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                # Streamed from the file, FileResponse.block_size bytes at a time: never read into memory. The folder
                # is removed at once; the open handle keeps the bytes on disk until the response is closed (sent, or
                # the client went away).
                handle = open(path, "rb")  # noqa: SIM115 - FileResponse closes it when sent
                shutil.rmtree(path.parent, ignore_errors=True)
                return FileResponse(handle, as_attachment=True, filename=name)
        return self._action_page(
            request,
            forests,
            action="download_export",
            title="Download an export",
            form=form,
            intro="The same file as python manage.py export_preferences writes, built with datasets: it loads back "
            "with load_dataset (jsonl, parquet) or load_from_disk (hf_disk, unzipped).",
        )

    @admin.display(description="pages")
    def pages(self, obj: Forest) -> str:
        if obj.pk is None:
            return "-"
        return format_html('<a href="{}">forest page</a>', obj.get_absolute_url())

    # --- Adding a forest is seeding one -------------------------------------------------------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            return super().add_view(request, form_url, extra_context)  # the admin's own refusal
        form = ForestSeedForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                config = config_load(data["config_name"], dataset_name=data["dataset_name"] or None)
                result = forest_seed(
                    config=config,
                    dataset_split=data["dataset_split"],
                    forest_name_suffix=data["forest_name_suffix"],
                    limit=data["limit"],
                )
            except ApplicationError as exc:
                form.add_error(None, exc.message)
            else:
                self.log_addition(request, result.forest, [{"added": {}}])
                for warning in result.warnings:
                    messages.warning(request, warning)
                messages.success(request, f"Seeded forest {result.forest.name} with {result.trees} trees.")
                return HttpResponseRedirect(reverse("admin:forests_forest_change", args=[result.forest.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Seed a forest",
            "form": form,
            "add": True,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.seed_template, context)

    # --- Deleting without collecting a million nodes in Python --------------------------------------------------

    def get_deleted_objects(self, objs, request):
        """A summary for the confirmation page (one count per model) instead of the list of every node."""
        forests = list(objs)
        ids = [forest.pk for forest in forests]
        nodes = Node.objects.filter(forest_id__in=ids).count()
        rollouts = Rollout.objects.filter(forest_id__in=ids).count()
        summary = [
            format_html(
                '{}: <a href="{}">{}</a>', Forest._meta.verbose_name.capitalize(), forest.get_absolute_url(), forest
            )
            for forest in forests
        ]
        summary.append(f"{nodes} nodes of {'these forests' if len(forests) > 1 else 'this forest'}")
        if rollouts:
            summary.append(f"{rollouts} rollouts are kept, detached from the forest")
        model_count = {Forest._meta.verbose_name_plural: len(forests), Node._meta.verbose_name_plural: nodes}
        perms_needed = set()
        if nodes and not request.user.has_perm(f"{Node._meta.app_label}.delete_{Node._meta.model_name}"):
            perms_needed.add(Node._meta.verbose_name)
        return summary, model_count, perms_needed, []

    def delete_model(self, request, obj: Forest) -> None:
        forest_delete(forest=obj)

    def delete_queryset(self, request, queryset) -> None:
        for forest in queryset:
            forest_delete(forest=forest)


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FORM_FIELDS
    list_display = [
        "id", "forest", "depth", "short_text", "is_leaf", "prediction", "answer", "correct", "ground_truth",
        "reference_answer", "created_at",
    ]  # fmt: skip
    list_filter = ["is_leaf", "depth", ("forest", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=id", "text"]
    list_select_related = ["forest"]
    raw_id_fields = ["forest", "tree", "parent"]
    readonly_fields = ["text_sha256", "correct", "created_at"]  # the verdict: decided by the grader once
    # Forests grow to millions of nodes: skip the second COUNT(*) of the unfiltered table on every page.
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="text")
    def short_text(self, obj: Node) -> str:
        text = obj.text.replace("\n", " ")
        return text if len(text) <= 80 else text[:79] + "…"
