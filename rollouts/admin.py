from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.validators import RegexValidator
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from prmsite.admin import JSON_FORM_FIELDS
from rollouts.labelling.urls import RESERVED_NAMES
from rollouts.labels import label_delete_many
from rollouts.models import LabelDraft, LabellingScheme, ProcessRewardLabel, Rollout, RolloutCheckout


class ProcessRewardLabelInline(admin.TabularInline):
    model = ProcessRewardLabel
    formfield_overrides = JSON_FORM_FIELDS
    extra = 0
    fields = ["prm_version", "worker", "prm_output", "created_at"]
    readonly_fields = ["created_at"]
    show_change_link = True
    # Deleting goes through ProcessRewardLabelAdmin, which rewinds the queue cursor so the rollout is handed out again.
    can_delete = False


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FORM_FIELDS
    list_display = ["id", "model", "worker", "prediction", "ground_truth", "answer", "correct", "forest", "created_at"]
    list_filter = ["model", "worker", "correct", ("forest", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["=id", "example", "worker", "model"]
    list_select_related = ["forest"]
    raw_id_fields = ["forest", "node"]
    # The grader decided these when the rollout was stored; every metric reads them, so they are not edited here.
    readonly_fields = ["correct", "verdict_reason", "created_at"]
    date_hierarchy = "created_at"
    inlines = [ProcessRewardLabelInline]
    show_full_result_count = False


@admin.register(ProcessRewardLabel)
class ProcessRewardLabelAdmin(admin.ModelAdmin):
    formfield_overrides = JSON_FORM_FIELDS
    list_display = ["id", "rollout", "prm_version", "worker", "labelled_by", "steps", "created_at"]
    list_filter = ["prm_version", "worker", "created_at"]
    search_fields = ["=id", "=rollout__id", "prm_version", "worker", "labelled_by"]
    raw_id_fields = ["rollout"]
    readonly_fields = ["created_at"]
    date_hierarchy = "created_at"
    show_full_result_count = False

    def delete_model(self, request, obj: ProcessRewardLabel) -> None:
        label_delete_many(labels=[obj])

    def delete_queryset(self, request, queryset) -> None:
        label_delete_many(labels=list(queryset))

    @admin.display(description="steps")
    def steps(self, obj: ProcessRewardLabel) -> int:
        return len(obj.prm_output) if isinstance(obj.prm_output, list) else 0


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
class RolloutCheckoutAdmin(admin.ModelAdmin):
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


class LabellingSchemeForm(forms.ModelForm):
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
        ]

    def clean_prm_version(self) -> str:
        prm_version = self.cleaned_data["prm_version"]
        PRM_VERSION_NAME(prm_version)
        if prm_version in RESERVED_NAMES:
            raise forms.ValidationError(f"{prm_version!r} names a page of its own: choose another version.")
        return prm_version


@admin.register(LabellingScheme)
class LabellingSchemeAdmin(admin.ModelAdmin):
    form = LabellingSchemeForm
    list_display = [
        "prm_version",
        "title",
        "labels_per_rollout",
        "stop_at_first_error",
        "is_open",
        "created_at",
        "pages",
    ]
    list_filter = ["is_open", "stop_at_first_error"]
    search_fields = ["prm_version", "title"]
    readonly_fields = ["created_by", "created_at", "pages"]

    def get_readonly_fields(self, request, obj=None):
        # Labels are stored under the prm_version: renaming it would orphan them.
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "prm_version"] if obj is not None else fields

    def save_model(self, request, obj: LabellingScheme, form, change) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="pages")
    def pages(self, obj: LabellingScheme) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}">labelling page</a> · <a href="{}">progress and agreement</a>',
            reverse("labelling:scheme", kwargs={"prm_version": obj.prm_version}),
            reverse("labelling:stats", kwargs={"prm_version": obj.prm_version}),
        )


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
