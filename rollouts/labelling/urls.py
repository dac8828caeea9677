"""The labelling pages, mounted at /label/. A scheme is named by its prm_version."""

from django.urls import path

from rollouts.labelling import gold_views, invite, review_views, staff_views, views

app_name = "labelling"

urlpatterns = [
    path("", views.scheme_list, name="schemes"),
    path("login/", views.LabellingLoginView.as_view(), name="login"),
    path("logout/", views.LabellingLogoutView.as_view(), name="logout"),
    path("invite/", invite.invite, name="invite"),
    path("welcome/<str:uidb64>/<str:token>/", invite.LabellerWelcomeView.as_view(), name="welcome"),
    path("<str:prm_version>/", views.scheme_detail, name="scheme"),
    path("<str:prm_version>/next/", views.scheme_next, name="next"),
    path("<str:prm_version>/rollouts/<int:rollout_id>/", views.rollout_label, name="rollout"),
    path("<str:prm_version>/rollouts/<int:rollout_id>/skip/", views.rollout_skip, name="skip"),
    path("<str:prm_version>/rollouts/<int:rollout_id>/revise/", views.rollout_revise, name="revise"),
    path("<str:prm_version>/stats/", staff_views.scheme_stats, name="stats"),
    path("<str:prm_version>/export/", staff_views.scheme_export, name="export"),
    path("<str:prm_version>/gold/", gold_views.scheme_gold, name="gold"),
    path("<str:prm_version>/review/", review_views.review_list, name="review"),
    path("<str:prm_version>/review/<int:rollout_id>/", review_views.review_rollout, name="review_rollout"),
]

# Names a scheme may not take: they are pages of their own here.
RESERVED_NAMES = frozenset({"login", "logout", "invite", "welcome"})
