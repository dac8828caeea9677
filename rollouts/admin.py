from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.validators import RegexValidator
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from prmsite.admin import JSON_FORM_FIELDS
from rollouts.labelling import step_codes
from rollouts.labelling.gold import gold_delete_many
from rollouts.labelling.urls import RESERVED_NAMES
from rollouts.labels import label_delete_many
from rollouts.models import (
    Adjudication,
    GoldAnswer,
    GoldItem,
    LabelDraft,
    LabellingScheme,
    LabelRevision,
    ProcessRewardLabel,
    Rollout,
    RolloutCheckout,
)


class ReadOnlyAdminMixin:
    """Rows the application writes (through the pages and the API): staff look and delete, never add or edit."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def _label_rated_steps(obj) -> int | None:
    output = obj.prm_output if isinstance(obj.prm_output, list) else []
    return step_codes.rated_steps_of(obj.attributes, len(output))


def _step_values_html(prm_output, rated_steps: int | None, explanations=None) -> str:
    """Each stored value in words, with its note: an ordered list (every text escaped)."""
    words = step_codes.step_words(prm_output, rated_steps)
    if not words:
        return "-"
    notes = explanations if isinstance(explanations, list) else []
    rows = [
        (word, f" - {notes[index]}" if index < len(notes) and isinstance(notes[index], str) and notes[index] else "")
        for index, word in enumerate(words)
    ]
    return format_html('<ol class="step-values">{}</ol>', format_html_join("", "<li>{}{}</li>", rows))


class ProcessRewardLabelInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = ProcessRewardLabel
    extra = 0
    fields = ["prm_version", "worker", "labelled_by", "step_values", "created_at"]
    readonly_fields = fields
    show_change_link = True
    # Deleting goes through ProcessRewardLabelAdmin, which rewinds the queue cursor so the rollout is handed out again.
    can_delete = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="step values")
    def step_values(self, obj: ProcessRewardLabel) -> str:
        return step_codes.step_words_summary(obj.prm_output, _label_rated_steps(obj))


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Stored rollouts are read-only: every metric, label and export reads them as the worker posted them and the
    grader judged them. Deleting one (and its labels) stays possible."""

    list_display = ["id", "model", "worker", "prediction", "ground_truth", "answer", "correct", "forest", "created_at"]
    list_filter = ["model", "worker", "correct", ("forest", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["=id", "example", "worker", "model"]
    list_select_related = ["forest"]
    raw_id_fields = ["forest", "node"]
    readonly_fields = ["correct", "verdict_reason", "created_at"]
    date_hierarchy = "created_at"
    inlines = [ProcessRewardLabelInline]
    show_full_result_count = False


class LabelRevisionInline(ReadOnlyAdminMixin, admin.TabularInline):
    """What a label held before each revision by its author, oldest first."""

    model = LabelRevision
    extra = 0
    fields = ["revised_at", "step_values", "attributes"]
    readonly_fields = fields
    can_delete = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="step values before the revision")
    def step_values(self, obj: LabelRevision) -> str:
        return step_codes.step_words_summary(obj.prm_output, _label_rated_steps(obj), limit=50)


@admin.register(ProcessRewardLabel)
class ProcessRewardLabelAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Labels are read-only (written by the labelling pages and the API); deleting one hands its rollout out again."""

    list_display = ["id", "rollout", "prm_version", "worker", "labelled_by", "step_values", "created_at"]
    list_filter = ["prm_version", "worker", "created_at"]
    search_fields = ["=id", "=rollout__id", "prm_version", "worker", "labelled_by"]
    list_select_related = ["rollout"]
    fields = [
        "rollout",
        "prm_version",
        "worker",
        "labelled_by",
        "step_values_detail",
        "prm_output",
        "explanations",
        "attributes",
        "final_reward",
        "created_at",
    ]
    readonly_fields = fields
    date_hierarchy = "created_at"
    inlines = [LabelRevisionInline]
    show_full_result_count = False

    def delete_model(self, request, obj: ProcessRewardLabel) -> None:
        label_delete_many(labels=[obj])

    def delete_queryset(self, request, queryset) -> None:
        label_delete_many(labels=list(queryset))

    @admin.display(description="step values")
    def step_values(self, obj: ProcessRewardLabel) -> str:
        return step_codes.step_words_summary(obj.prm_output, _label_rated_steps(obj))

    @admin.display(description="step values (stored codes: 0 wrong, 1 right, 2 neutral or unrated)")
    def step_values_detail(self, obj: ProcessRewardLabel) -> str:
        return _step_values_html(obj.prm_output, _label_rated_steps(obj), obj.explanations)


class LiveFilter(admin.SimpleListFilter):
    title = "lease"
    parameter_name = "live"

    def lookups(self, request, model_admin):
        return [("yes", "live"), ("no", "expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "no":
            return queryset.filter(expires_at__lte=now)
        return queryset


@admin.register(RolloutCheckout)
class RolloutCheckoutAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Leases are the queue's (one per rollout, version and slot; never two slots to one person): staff look, and
    delete one to hand its rollout out again at once."""

    list_display = ["id", "rollout", "prm_version", "claimed_by", "expires_at", "live"]
    list_filter = [LiveFilter, "prm_version"]
    search_fields = ["=rollout__id", "prm_version", "claimed_by"]
    raw_id_fields = ["rollout"]
    readonly_fields = ["created_at"]

    @admin.display(boolean=True, description="live")
    def live(self, obj: RolloutCheckout) -> bool:
        return obj.expires_at > timezone.now()


# A scheme's version names its pages (/label/<prm_version>/): one path segment, no spaces.
PRM_VERSION_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$",
    "Letters, digits and . _ : + - only, starting with a letter or digit (it names the scheme's pages).",
)


# Most models a scheme's scope may name, and their longest name (a rollout's model field).
SCOPE_MODELS_MAX = 200
SCOPE_MODEL_MAX_CHARS = Rollout._meta.get_field("model").max_length
SCOPE_MODELS_TOO_MANY = f"At most {SCOPE_MODELS_MAX} models."
SCOPE_MODEL_TOO_LONG = f"A model name has at most {SCOPE_MODEL_MAX_CHARS} characters: {{name}}…"


class ModelNamesField(forms.CharField):
    """A list of model names typed one per line (blank lines ignored, repeats dropped)."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 60})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(str(name) for name in value)
        return value

    def to_python(self, value) -> list[str]:
        names = list(dict.fromkeys(line.strip() for line in (super().to_python(value) or "").splitlines()))
        names = [name for name in names if name]
        if len(names) > SCOPE_MODELS_MAX:
            raise forms.ValidationError(SCOPE_MODELS_TOO_MANY)
        for name in names:
            if len(name) > SCOPE_MODEL_MAX_CHARS:
                raise forms.ValidationError(SCOPE_MODEL_TOO_LONG.format(name=name[:40]))
        return names

    def has_changed(self, initial, data) -> bool:
        return list(initial or []) != self.to_python(data)


class LabellingSchemeForm(forms.ModelForm):
    scope_models = ModelNamesField(
        required=False,
        label="Scope models",
        help_text="Label only the rollouts of these models, one per line (empty: any model).",
    )

    class Meta:
        model = LabellingScheme
        fields = [
            "prm_version",
            "title",
            "instructions",
            "labels_per_rollout",
            "stop_at_first_error",
            "active_learning",
            "reference_prm_version",
            "is_open",
            "forests",
            "scope_models",
            "scope_outcome",
            "gold_rate",
        ]

    def clean_prm_version(self) -> str:
        prm_version = self.cleaned_data["prm_version"]
        PRM_VERSION_NAME(prm_version)
        if prm_version in RESERVED_NAMES:
            raise forms.ValidationError(f"{prm_version!r} names a page of its own: choose another version.")
        return prm_version


class AuditedAdmin(SimpleHistoryAdmin):
    """Every change staff make here keeps a history row (simple-history): who, when, and each field before and after
    (the *History* page's *Changes* column). Reverting from the history is off: a change goes through the change form,
    with its checks, and is recorded as one more change."""

    def revert_disabled(self, request, obj=None) -> bool:
        return True

    def history_view(self, request, object_id, extra_context=None):
        # Who may not see the model learns nothing, not even whether the row exists (simple-history looks first).
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    def history_form_view(self, request, object_id, version_id, extra_context=None):
        if request.method != "GET":
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


@admin.register(LabellingScheme)
class LabellingSchemeAdmin(AuditedAdmin):
    form = LabellingSchemeForm
    list_display = [
        "prm_version",
        "title",
        "labels_per_rollout",
        "stop_at_first_error",
        "scope",
        "gold_rate",
        "is_open",
        "created_at",
        "pages",
    ]
    list_filter = ["is_open", "stop_at_first_error", "scope_outcome"]
    search_fields = ["prm_version", "title"]
    readonly_fields = ["created_by", "created_at", "pages"]
    autocomplete_fields = ["forests"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "prm_version",
                    "title",
                    "instructions",
                    "labels_per_rollout",
                    "stop_at_first_error",
                    "active_learning",
                    "reference_prm_version",
                    "is_open",
                ]
            },
        ),
        (
            "Scope: which rollouts are labelled (nothing chosen: every rollout)",
            {"fields": ["forests", "scope_models", "scope_outcome"]},
        ),
        ("Gold checks", {"fields": ["gold_rate"]}),
        ("Record", {"fields": ["created_by", "created_at", "pages"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        # Labels are stored under the prm_version: renaming it would orphan them.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "prm_version"] if obj is not None else fields

    def save_model(self, request, obj: LabellingScheme, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="scope")
    def scope(self, obj: LabellingScheme) -> str:
        parts = []
        forests = [forest.name for forest in obj.forests.all()]
        if forests:
            parts.append("forests: " + ", ".join(forests))
        if obj.scope_models:
            parts.append("models: " + ", ".join(str(name) for name in obj.scope_models))
        if obj.scope_outcome:
            parts.append(obj.get_scope_outcome_display())
        return "; ".join(parts) or "every rollout"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("forests")

    @admin.display(description="pages")
    def pages(self, obj: LabellingScheme) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}">labelling page</a> · <a href="{}">progress and agreement</a>',
            reverse("labelling:scheme", kwargs={"prm_version": obj.prm_version}),
            reverse("labelling:stats", kwargs={"prm_version": obj.prm_version}),
        )


class StepCodesForm(forms.ModelForm):
    """A gold item's or an adjudication's step codes, checked against its rollout (``step_codes_problem``)."""

    def clean(self):
        cleaned = super().clean()
        rollout = cleaned.get("rollout") or getattr(self.instance, "rollout", None)
        if rollout is None or self.errors:
            return cleaned
        problem = step_codes.step_codes_problem(
            cleaned.get("prm_output"),
            cleaned.get("rated_steps"),
            step_codes.steps_of(rollout.reasoning),
            cleaned.get("explanations"),
        )
        if problem:
            raise forms.ValidationError(problem)
        return cleaned


class GoldItemForm(StepCodesForm):
    class Meta:
        model = GoldItem
        fields = ["scheme", "rollout", "prm_output", "rated_steps", "source"]


class AdjudicationForm(StepCodesForm):
    class Meta:
        model = Adjudication
        fields = ["scheme", "rollout", "prm_output", "rated_steps", "explanations", "reason"]


class StepCodesAdmin(AuditedAdmin):
    formfield_overrides = JSON_FORM_FIELDS
    raw_id_fields = ["rollout"]
    list_select_related = ["scheme", "rollout"]
    search_fields = ["=rollout__id", "scheme__prm_version"]
    list_filter = [("scheme", admin.RelatedOnlyFieldListFilter)]

    def get_readonly_fields(self, request, obj=None):
        # Which scheme and rollout it is are part of its identity (and of its history): fixed once created.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "scheme", "rollout"] if obj is not None else fields

    @admin.display(description="step values")
    def step_values(self, obj) -> str:
        return step_codes.step_words_summary(obj.prm_output, obj.rated_steps)

    @admin.display(description="step values (stored codes: 0 wrong, 1 right, 2 neutral or unrated)")
    def step_values_detail(self, obj) -> str:
        if obj.pk is None:
            return "-"
        return _step_values_html(obj.prm_output, obj.rated_steps, getattr(obj, "explanations", None))


class GoldAnswerInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Who was handed the gold item, and what they answered (checked, never stored as a label)."""

    model = GoldAnswer
    extra = 0
    fields = ["user", "served_at", "answered_at", "step_values"]
    readonly_fields = fields
    can_delete = False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="their step values")
    def step_values(self, obj: GoldAnswer) -> str:
        if obj.prm_output is None:
            return "-"
        output = obj.prm_output if isinstance(obj.prm_output, list) else []
        return step_codes.step_words_summary(obj.prm_output, step_codes.rated_steps_of(obj.attributes, len(output)))


@admin.register(GoldItem)
class GoldItemAdmin(StepCodesAdmin):
    form = GoldItemForm
    list_display = ["id", "scheme", "rollout", "source", "step_values", "created_by", "created_at"]
    list_filter = [*StepCodesAdmin.list_filter, "source"]
    readonly_fields = ["step_values_detail", "created_by", "created_at"]
    inlines = [GoldAnswerInline]

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else []  # nobody has answered a gold item being added

    def save_model(self, request, obj: GoldItem, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # Deleting goes through gold_delete_many, which puts the scheme's queue cursors back so the rollout is handed out.
    def delete_model(self, request, obj: GoldItem) -> None:
        gold_delete_many(items=[obj])

    def delete_queryset(self, request, queryset) -> None:
        gold_delete_many(items=list(queryset.select_related("scheme")))


@admin.register(Adjudication)
class AdjudicationAdmin(StepCodesAdmin):
    form = AdjudicationForm
    list_display = ["id", "scheme", "rollout", "step_values", "decided_by", "decided_at"]
    readonly_fields = ["step_values_detail", "decided_by", "decided_at"]

    def save_model(self, request, obj: Adjudication, form, change) -> None:
        # Whoever changes the settled label decides it anew; the history keeps the earlier decisions.
        obj.decided_by = request.user
        obj.decided_at = timezone.now()
        super().save_model(request, obj, form, change)


@admin.register(LabelDraft)
class LabelDraftAdmin(admin.ModelAdmin):
    """Drafts are the labellers' own work in progress: staff may look and delete, not edit."""

    list_display = ["id", "user", "prm_version", "rollout", "seconds_spent", "updated_at"]
    list_filter = ["prm_version"]
    search_fields = ["=rollout__id", "prm_version", "user__username"]
    raw_id_fields = ["rollout", "user"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
