"""The OpenAPI schema describes every documented endpoint with its parameters; Swagger UI and the browsable API
render."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from adapters.models import PRMAdapter
from tests.factories import make_label, make_rollout

pytestmark = pytest.mark.django_db

DOCUMENTED = {
    ("/rollout", "post"): set(),
    ("/rollout", "get"): {"prm_version", "limit", "wait", "active_learning", "reference_prm_version"},
    ("/process_reward_label", "post"): set(),
    ("/process_reward_label", "get"): {"keys"},
    ("/process_reward_label/batch", "post"): set(),
    ("/process_reward_labels", "get"): {"prm_version"},
    ("/prm_adapters", "get"): set(),
    ("/prm_adapter", "get"): {"prm_version", "format"},  # format=json: the details instead of the bytes
    ("/prm_adapter", "post"): {"prm_version", "base_model", "worker", "format"},
}


def test_the_schema_builds_without_warnings(tmp_path):
    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").stat().st_size > 0


def test_the_schema_lists_every_endpoint_with_its_parameters(staff_client):
    response = staff_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    for (path, method), parameters in DOCUMENTED.items():
        operation = paths[path][method]
        assert {p["name"] for p in operation.get("parameters", [])} == parameters, (path, method)
        assert operation["description"], (path, method)
    assert paths["/rollout"]["get"]["parameters"][0]["in"] == "query"
    required = {p["name"] for p in paths["/prm_adapter"]["post"]["parameters"] if p.get("required")}
    assert required == {"prm_version", "base_model", "worker"}
    assert "application/octet-stream" in paths["/prm_adapter"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in paths["/prm_adapter"]["get"]["responses"]["200"]["content"]
    assert paths["/rollout"]["post"]["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "integer"}


def test_the_label_batch_is_described_with_its_envelope_and_answer(staff_client, settings):
    schema = staff_client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/process_reward_label/batch"]["post"]
    assert operation["operationId"] == "process_reward_label_create_batch"
    components = schema["components"]["schemas"]
    body = components[operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert body["required"] == ["labels"]
    labels = body["properties"]["labels"]
    assert labels["items"]["type"] == "object"
    assert (labels["minItems"], labels["maxItems"]) == (1, settings.PROCESS_REWARD_LABEL_BATCH_MAX)
    answer = operation["responses"]["200"]["content"]["application/json"]
    result = components[answer["schema"]["$ref"].rsplit("/", 1)[-1]]
    outcome = components[result["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert {"id", "detail", "code", "status", "errors"} <= set(outcome["properties"])
    assert {"400", "401"} <= set(operation["responses"])


def test_swagger_ui_renders(staff_client):
    response = staff_client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


@pytest.mark.parametrize(
    "url",
    [
        "/rollout?prm_version=v1",
        "/process_reward_labels?prm_version=v1",
        "/process_reward_label?keys=[{label}]",
        "/prm_adapters",
        "/prm_adapter?prm_version=prm-v1",
    ],
)
def test_the_browsable_api_renders_each_endpoint_for_staff(staff_client, url):
    label = make_label(make_rollout())
    make_rollout()
    PRMAdapter.objects.create(
        prm_version="prm-v1", base_model="tiny", worker="w", file="prm_adapters/x.zip", sha256="a" * 64, size=1
    )
    response = staff_client.get(url.format(label=label.pk), HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"Django REST framework" in response.content
