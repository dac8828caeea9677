"""Deleting a forest's growth rows."""

from __future__ import annotations

from forests.models import ErrorSearch, Expansion, Forest, ForestTally, GrowthPlan, RolloutGrowth, TreeTally


def forest_growth_delete(*, forest: Forest) -> None:
    """Delete a forest's growth rows with set-based statements (``forest_delete`` calls it before the nodes go)."""
    Expansion.objects.filter(forest=forest)._raw_delete(Expansion.objects.db)
    ErrorSearch.objects.filter(forest=forest)._raw_delete(ErrorSearch.objects.db)
    RolloutGrowth.objects.filter(forest=forest)._raw_delete(RolloutGrowth.objects.db)
    TreeTally.objects.filter(forest=forest)._raw_delete(TreeTally.objects.db)
    ForestTally.objects.filter(forest=forest)._raw_delete(ForestTally.objects.db)
    GrowthPlan.objects.filter(forest=forest)._raw_delete(GrowthPlan.objects.db)
