from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat

from adapters.models import PRMAdapter


@admin.register(PRMAdapter)
class PRMAdapterAdmin(admin.ModelAdmin):
    list_display = ["prm_version", "base_model", "worker", "human_size", "short_sha256", "created_at"]
    list_filter = ["base_model", "worker", "created_at"]
    search_fields = ["prm_version", "base_model", "worker", "sha256"]
    readonly_fields = ["sha256", "size", "created_at"]
    date_hierarchy = "created_at"

    @admin.display(description="size", ordering="size")
    def human_size(self, obj: PRMAdapter) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="sha256")
    def short_sha256(self, obj: PRMAdapter) -> str:
        return obj.sha256[:12]
