"""Paths of the forest-growth endpoints and of POST /rollout/batch, at the server root like the documented API."""

from django.urls import path

from forests import api

urlpatterns = [
    path("rollout/batch", api.RolloutBatchView.as_view(), name="rollout-batch"),
    path("forest/<str:forest_name>/config", api.ForestConfigView.as_view(), name="forest-config"),
    path("forest/<str:forest_name>/growth", api.GrowthView.as_view(), name="forest-growth"),
    path("forest/<str:forest_name>/expansions/claim", api.ExpansionClaimView.as_view(), name="expansion-claim"),
    path("forest/<str:forest_name>/expansions/release", api.ExpansionReleaseView.as_view(), name="expansion-release"),
]
