"""Paths of the intake (POST /rollout, POST /rollout/batch) and of the forest-growth endpoints, at the server root
like the documented API."""

from django.urls import path

from forests import intake_api
from forests.growth import api as growth_api

urlpatterns = [
    # GET /rollout (the lease queue) is served by the same view, which extends rollouts.views.RolloutClaimView.
    path("rollout", intake_api.RolloutView.as_view(), name="rollout"),
    path("rollout/batch", intake_api.RolloutBatchView.as_view(), name="rollout-batch"),
    path("forest/<str:forest_name>/config", growth_api.ForestConfigView.as_view(), name="forest-config"),
    path("forest/<str:forest_name>/growth", growth_api.GrowthView.as_view(), name="forest-growth"),
    path("forest/<str:forest_name>/expansions/claim", growth_api.ExpansionClaimView.as_view(), name="expansion-claim"),
    path(
        "forest/<str:forest_name>/expansions/release",
        growth_api.ExpansionReleaseView.as_view(),
        name="expansion-release",
    ),
]
