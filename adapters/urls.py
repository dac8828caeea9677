"""The documented paths, with no trailing slash, exactly as spec/active-learning-webserver.md writes them."""

from django.urls import path

from adapters import views

urlpatterns = [
    path("prm_adapters", views.PRMAdapterListView.as_view(), name="prm-adapters"),
    path("prm_adapter", views.PRMAdapterView.as_view(), name="prm-adapter"),
]
