"""Safe by default (issue 7, item 0): an endpoint that says nothing about permissions or parsers is closed and bounded,
and every refusal has one JSON shape, ``{"detail", "code"}`` (+ ``errors`` per field for validation errors)."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from tests.rollouts.conftest import rollout_body


class UnsaidView(APIView):
    """A view that forgets to say who may call it and how its body is parsed."""

    def get(self, request):
        return Response({"secret": 42})

    def post(self, request):
        return Response(request.data)


urlpatterns = [path("unsaid", UnsaidView.as_view())]


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code
    return body


urlpatterns += __import__("prmsite.urls", fromlist=["urlpatterns"]).urlpatterns
handler404 = "prmsite.views.page_not_found"


@pytest.mark.urls(__name__)
@pytest.mark.django_db
class TestAViewThatSaysNothingIsClosed:
    def test_anonymous_callers_are_refused(self, client):
        assert_error_shape(client.get("/unsaid"), 401, "not_authenticated")

    def test_a_logged_in_user_who_is_neither_worker_nor_staff_is_refused(self, client, django_user_model):
        client.force_login(django_user_model.objects.create_user(username="visitor", password="a-long-password-1"))
        assert_error_shape(client.get("/unsaid"), 403, "permission_denied")

    def test_a_worker_token_gets_in(self, api):
        assert api.get("/unsaid").json() == {"secret": 42}

    @override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100)
    def test_its_json_bodies_are_bounded(self, api):
        assert_error_shape(api.post("/unsaid", {"x": "y" * 200}, format="json"), 413, "too_large")

    def test_its_json_bodies_are_checked_for_unstorable_text(self, api):
        response = api.generic("POST", "/unsaid", b'{"note": "\\ud800"}', content_type="application/json")
        assert "surrogate" in assert_error_shape(response, 400, "parse_error")["detail"]


@pytest.mark.django_db
def test_validation_errors_carry_a_summary_and_the_fields(api):
    body = rollout_body()
    del body["model"]
    refused = assert_error_shape(api.post("/rollout", {**body, "prediction": "1"}, format="json"), 400, "invalid")
    assert set(refused["errors"]) == {"model", "prediction"}
    assert "model" in refused["detail"] and "prediction" in refused["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url", "status", "code"),
    [
        ("get", "/no-such-endpoint/x", 404, "not_found"),
        ("delete", "/rollout", 405, "method_not_allowed"),
        ("get", "/process_reward_labels", 400, "invalid"),
        ("post", "/process_reward_label", 415, "unsupported_media_type"),
    ],
)
def test_every_refusal_a_program_meets_has_the_one_shape(api, method, url, status, code):
    kwargs = {"data": "x", "content_type": "text/plain"} if method == "post" else {}
    assert_error_shape(getattr(api, method)(url, **kwargs), status, code)


@pytest.mark.django_db
def test_a_browser_still_gets_html_for_an_unknown_page(client):
    response = client.get("/no-such-page/x", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/%00", "/forests/%00/", "/rollout?prm_version=%00", "/admin/?q=a%00b"])
def test_a_nul_in_the_url_is_a_400_not_a_crash(client, api, url):
    # PostgreSQL cannot compare text holding a NUL: this was a 500, for anonymous callers too.
    assert_error_shape(client.get(url), 400, "bad_request")
    assert_error_shape(api.get(url), 400, "bad_request")


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", "/api/docs/"])
def test_the_schema_and_the_docs_are_for_workers_and_staff_only(staff_client, url):
    assert Client().get(url).status_code == 401
    assert staff_client.get(url).status_code == 200


@pytest.mark.django_db
def test_the_docs_load_their_assets_from_this_server_not_a_cdn(staff_client):
    html = staff_client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg" not in html and "//cdn" not in html
    assert "swagger-ui-dist" in html  # the sidecar's static files
    asset = html.split('src="', 1)[1].split('"', 1)[0]
    assert asset.startswith("/static/")
