from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from forests.models import Forest, Node
from forests.selectors import forest_counts


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


@admin.register(Forest)
class ForestAdmin(admin.ModelAdmin):
    list_display = ["name", "config_name", "dataset_split", "tree_count", "rollout_count", "created_at"]
    list_filter = ["config_name", "dataset_split", "created_at"]
    search_fields = ["name", "config_name"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "counts",
        "created_at",
        "config_sha256",
        "config_git_commit",
        "config_git_dirty",
        "config_source",
    ]
    fieldsets = [
        (None, {"fields": ["name", "config_name", "dataset_split", "counts", "created_at"]}),
        ("Generation settings", {"fields": ["rollout_config", "attributes"]}),
        (
            "Provenance",
            {
                "classes": ["collapse"],
                "fields": ["config_sha256", "config_git_commit", "config_git_dirty", "config_source"],
            },
        ),
    ]

    def get_queryset(self, request):
        from rollouts.models import Rollout

        return (
            super()
            .get_queryset(request)
            .annotate(
                _tree_count=_count_subquery(Node, parent__isnull=True),
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


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ["id", "forest", "depth", "short_text", "is_leaf", "prediction", "ground_truth", "created_at"]
    list_filter = ["is_leaf", "depth", ("forest", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=id", "text"]
    list_select_related = ["forest"]
    raw_id_fields = ["forest", "tree", "parent"]
    readonly_fields = ["text_sha256", "created_at"]
    # Forests grow to millions of nodes: skip the second COUNT(*) of the unfiltered table on every page.
    show_full_result_count = False
    list_per_page = 50

    @admin.display(description="text")
    def short_text(self, obj: Node) -> str:
        text = obj.text.replace("\n", " ")
        return text if len(text) <= 80 else text[:79] + "…"
