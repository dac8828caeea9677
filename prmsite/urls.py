from django.contrib import admin
from django.urls import include, path

from prmsite.views import DocsView, SchemaView

admin.site.site_header = "prmsite administration"
admin.site.site_title = "prmsite"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (Content-Security-Policy).
    path("api/docs/", DocsView.as_view(url_name="schema"), name="swagger-ui"),
    # The active-learning API sits at the server root, with the paths of spec/active-learning-webserver.md.
    path("", include("rollouts.urls")),
    path("", include("adapters.urls")),
    # Human step labelling: the labelling pages and the staff pages of each scheme.
    path("label/", include("rollouts.labelling.urls")),
    path("", include("forests.api_urls")),  # the intake (/rollout, /rollout/batch) and forest growth
    # Last: forests own /forests/… and the catch-all /<forest_name> redirect of the specification.
    path("", include("forests.urls")),
]

# Errors outside DRF's views: the API's JSON shape for programs, Django's pages for browsers.
handler400 = "prmsite.views.bad_request"
handler403 = "prmsite.views.permission_denied"
handler404 = "prmsite.views.page_not_found"
handler500 = "prmsite.views.server_error"
