"""The documented paths, with no trailing slash, exactly as spec/active-learning-webserver.md writes them."""

from django.urls import path

from rollouts import views

urlpatterns = [
    # "rollout" (GET and POST) is routed in forests/api_urls.py: its view is the intake's (forests.intake_api).
    # Additive: give leases back; read rollouts by id without leasing them.
    path("rollout/release", views.RolloutReleaseView.as_view(), name="rollout-release"),
    path("rollouts", views.RolloutListView.as_view(), name="rollouts"),
    path("process_reward_label", views.ProcessRewardLabelView.as_view(), name="process-reward-label"),
    path("process_reward_label/batch", views.ProcessRewardLabelBatchView.as_view(), name="process-reward-label-batch"),
    path("process_reward_labels", views.ProcessRewardLabelIdsView.as_view(), name="process-reward-labels"),
]
