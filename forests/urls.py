from django.urls import path

from forests import prm_compare_views, views

app_name = "forests"

urlpatterns = [
    path("forests/", views.forest_list, name="list"),
    path("forests/<str:forest_name>/", views.forest_detail, name="detail"),
    path("forests/<str:forest_name>/search.svg", views.forest_search_plot, name="search_plot"),
    path("forests/<str:forest_name>/reports/", views.search_reports, name="search_reports"),
    path("forests/<str:forest_name>/reports/compare.svg", views.search_reports_plot, name="search_reports_plot"),
    path("forests/<str:forest_name>/reports/<int:report_id>.svg", views.search_report_plot, name="search_report_plot"),
    path("forests/<str:forest_name>/prms/", prm_compare_views.prm_compare, name="prm_compare"),
    path("forests/<str:forest_name>/trees/<int:root_id>/", views.tree_detail, name="tree"),
    path("forests/<str:forest_name>/trees/<int:root_id>/nodes/<int:node_id>/", views.node_detail, name="node"),
    path(
        "forests/<str:forest_name>/trees/<int:root_id>/nodes/<int:node_id>/text.txt", views.node_text, name="node_text"
    ),
    # Included last at the server root: every other route has matched before this one is tried.
    path("<str:forest_name>", views.forest_redirect, name="redirect"),
]
