"""Property-based fuzzing of every API operation against the OpenAPI schema the server serves (schemathesis).

Each operation of ``/api/schema/`` gets schema-valid requests (positive: they must be accepted, so a 400 means the
schema is less precise than the serializers) and schema-violating ones (negative: they must be refused with a 4xx),
from its examples, from the coverage phase (boundaries, missing parameters, undeclared methods) and from hypothesis.
Every answer is checked: no 5xx, a documented status code, a body and headers that match the schema, and every
refusal in the project's one JSON error shape. Requests run in process through Django's WSGI handler, on the test
database, with a worker token; each example runs in a savepoint that is rolled back, so every one sees the same seed
(a forest with a growth plan, rollouts, a label, an adapter).

The cases the fuzzer found are kept below as ordinary tests.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
import schemathesis
from django.core.files.base import ContentFile
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from adapters.models import PRMAdapter
from tests.factories import make_label, make_rollout
from tests.forests.growth.helpers import plan, seed

# Generated examples per operation in the fuzzing phase (the examples and coverage phases add their own, bounded by
# the schema). 17 operations; the whole module takes well under a minute on 2 slow cores.
EXAMPLES = 25
SEED_FOREST = "fuzz-forest"
SEED_ADAPTER = "prm-fuzz"


def served_schema() -> dict:
    """The schema exactly as ``GET /api/schema/?format=json`` serves it (checked by a test below)."""
    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


# --- valid adapter zips, so that POST /prm_adapter's fuzzing reaches storage and not only "not a zip" -------------


def safetensors_bytes(tensors: dict[str, list[int]]) -> bytes:
    """A safetensors file of F32 zeros with these shapes (no torch needed)."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * shape[0] * shape[1]
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


@st.composite
def adapter_zips(draw) -> bytes:
    """Zips of a LoRA adapter folder as peft's save_pretrained writes it: varied rank, targets, hidden size, layout."""
    rank = draw(st.integers(1, 4))
    hidden = draw(st.sampled_from([8, 16]))
    targets = draw(st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj", "o_proj"]), min_size=1, unique=True))
    layers = draw(st.integers(1, 2))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": draw(st.sampled_from([1, 4, 8.0])),
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": targets,
        "base_model_name_or_path": draw(st.sampled_from([None, "tiny-llama"])),
    }
    tensors = {}
    for layer in range(layers):
        for module in targets:
            stem = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{stem}.lora_A.weight"] = [rank, hidden]
            tensors[f"{stem}.lora_B.weight"] = [hidden, rank]
    prefix = draw(st.sampled_from(["", "checkpoint-100/"]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as archive:
        archive.writestr(prefix + "adapter_config.json", json.dumps(config))
        archive.writestr(prefix + "adapter_model.safetensors", safetensors_bytes(tensors))
        if draw(st.booleans()):
            # A README is text: the upload check refuses one with a NUL byte (a zip or a pickle under a harmless name)
            archive.writestr(prefix + "README.md", draw(st.text(st.characters(exclude_characters="\x00"), max_size=40)))
    return buffer.getvalue()


schemathesis.openapi.media_type("application/zip", adapter_zips(), aliases=["application/octet-stream"])

# --- the schema under test --------------------------------------------------------------------------------------

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 1,
        "generation": {
            "deterministic": True,
            "database": "none",
            # The token is the test's own (below): a generated Authorization header would only test the 401 path,
            # which tests/test_api_auth.py covers, and ignored_auth checks every operation refuses no token.
            "with-security-parameters": False,
            # No NUL characters: the JSON parser and the URL middleware refuse them in any text, anywhere (README,
            # "Errors"; tests/test_api_defaults.py, tests/rollouts/test_rollout_api.py), which JSON Schema cannot say of
            # every string.
            "allow-x00": False,
        },
        "checks": {
            # Schema-valid requests must be accepted: 400 is kept for requests that break the schema. What the
            # stored data can still refuse is documented per operation: 404 (unknown ids), 409 (conflicts), 413
            # (limits on a whole rollout), 422 (valid input that contradicts what is stored).
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "413", "422"]},
        },
    }
)
schema = schemathesis.openapi.from_dict(served_schema(), config=CONFIG)
schema.app = WSGIHandler()

# Random names never find the seeded forest: half the time, the operations on a forest (and the rollouts posted
# into one) name it, so the fuzzer reaches plans, leases and trie inserts too, not only 404s.
SEED_PROMPT = "Question 0?"


@schema.hook
def flatmap_path_parameters(ctx, path_parameters):
    if path_parameters and "forest_name" in path_parameters:
        return st.sampled_from([path_parameters, {**path_parameters, "forest_name": SEED_FOREST}])
    return st.just(path_parameters)


@schema.hook
def flatmap_body(ctx, body):
    if ctx.operation.path == "/process_reward_label/batch" and is_a_label_batch(body):
        # Random objects are all refused one by one: half the time, labels of the seeded rollouts instead, so the
        # fuzzer reaches the label rules (new, the same again, conflicts) inside a batch. Only a schema-valid body is
        # replaced (by another valid one): a schema-violating one must stay as it is, to be refused.
        return st.one_of(st.just(body), seeded_label_batches())
    if ctx.operation.path != "/rollout" or not isinstance(body, dict) or "forest_name" not in body:
        return st.just(body)
    return st.sampled_from([body, {**body, "forest_name": SEED_FOREST}, {**body, **ROLLOUT_INTO_SEED}])


def is_a_label_batch(body) -> bool:
    labels = body.get("labels") if isinstance(body, dict) else None
    return isinstance(labels, list) and 1 <= len(labels) <= 500 and all(isinstance(item, dict) for item in labels)


def seeded_label_batches() -> st.SearchStrategy[dict]:
    """``{"labels": [...]}`` of schema-valid labels naming small rollout ids (the seed's), one or two steps each."""
    label = st.fixed_dictionaries(
        {
            "rollout_id": st.integers(1, 8),
            "prm_output": st.lists(st.sampled_from([0, 1, 2, 0.25]), min_size=1, max_size=2),
            "prm_version": st.sampled_from(["prm-v1", "fuzz"]),
            "worker": st.sampled_from(["w", "prm-worker"]),
        }
    )
    return st.fixed_dictionaries({"labels": st.lists(label, min_size=1, max_size=6)})


# A rollout the seeded forest takes: its first tree's prompt and ground truth (tests/forests/growth_helpers.seed).
ROLLOUT_INTO_SEED = {"forest_name": SEED_FOREST, "example": SEED_PROMPT, "ground_truth": 1}


def refusal_has_the_error_shape(ctx, response, case) -> bool | None:
    """Every 4xx is JSON ``{"detail": str, "code": str}``, with ``errors`` (field → messages) when it has them."""
    if not 400 <= response.status_code < 500:
        return None
    body = json.loads(response.content)
    assert isinstance(body, dict), f"{response.status_code} body is not a JSON object: {body!r}"
    assert isinstance(body.get("detail"), str) and body["detail"], f"no detail: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"no code: {body!r}"
    if "errors" in body:
        assert isinstance(body["errors"], dict) and body["errors"], f"errors is not a field map: {body!r}"
    return True


@pytest.fixture
def in_process_requests():
    """Requests through the WSGI handler in this thread, on the test's transaction.

    As Django's test client does, the request signals must not close the database connection that holds it.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def auth_headers(worker_token) -> dict[str, str]:
    return {"Authorization": f"Token {worker_token}"}


@pytest.fixture
def seeded(db, settings, tmp_path):
    """Something for the ids and names the fuzzer draws to find: small ids (1, 2, …) are drawn often."""
    settings.MEDIA_ROOT = tmp_path / "media"
    forest, _roots = seed(SEED_FOREST, roots=2)
    plan(forest, policy="repeats", num_repeats=2)
    rollouts = [make_rollout(), make_rollout(reasoning=["One step."]), make_rollout()]
    make_label(rollouts[0])
    PRMAdapter.objects.create(
        prm_version=SEED_ADAPTER,
        base_model="tiny-llama",
        worker="trainer",
        file=ContentFile(b"PK\x05\x06" + bytes(18), name="fuzz.zip"),
        sha256="0" * 64,
        size=22,
    )


@schema.parametrize()
# Function-scoped fixtures are safe here: every example runs in a savepoint that is rolled back, so each one starts
# from the same seeded database and the same token.
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_its_schema_says(case, auth_headers, seeded, in_process_requests):
    with transaction.atomic():
        case.call_and_validate(headers=auth_headers, additional_checks=[refusal_has_the_error_shape])
        transaction.set_rollback(True)


def test_the_fuzzed_schema_is_the_one_the_server_serves(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    assert response.json() == served_schema()
    operations = [(path, method) for path, item in schema.raw_schema["paths"].items() for method in item]
    assert len(operations) == 17


# --- what the fuzzer found ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_options_on_a_growth_plan_describes_it_instead_of_failing(api):
    # Found: OPTIONS /forest/<name>/growth was a 500 (DRF's metadata asks the view for the object a PUT would
    # change, and the view had no queryset to find it in).
    forest, _ = seed("options-forest", roots=1)
    for name in (forest.name, "no-such-forest"):
        response = api.options(f"/forest/{name}/growth")
        assert response.status_code == 200, response.content
        assert response.json()["name"] == "Growth"
    assert "PUT" in api.options(f"/forest/{forest.name}/growth").json()["actions"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_adapter_request_no_renderer_can_answer_is_a_json_406(api, method):
    # Found: with an Accept header no renderer satisfies, the adapter endpoint answered 406 with the body
    # b"detailcode" as application/octet-stream (the zip renderer "rendered" the error dict).
    response = getattr(api, method)("/prm_adapter?prm_version=v&base_model=b&worker=w", HTTP_ACCEPT="image/png")
    assert response.status_code == 406
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_acceptable" and response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_an_unknown_format_is_a_404_in_the_error_shape(api, method):
    # Found: DRF's content negotiation raises Django's Http404 for ?format=AAA, which left the handler as
    # {"detail": "Not found."}, without `code`.
    response = getattr(api, method)("/prm_adapter?format=AAA&prm_version=v&base_model=b&worker=w")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def operation(path: str, method: str) -> dict:
    return served_schema()["paths"][path][method]


def parameter(path: str, method: str, name: str) -> dict:
    return next(p for p in operation(path, method)["parameters"] if p["name"] == name)


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "name"), [("/process_reward_label", "keys"), ("/rollouts", "ids")])
def test_id_lists_are_described_as_json_lists_and_any_such_list_is_accepted(api, path, name):
    # Found: `keys` and `ids` were any string in the schema, so most schema-valid values were a 400.
    described = parameter(path, "get", name)["content"]["application/json"]["schema"]
    assert described["type"] == "array" and described["items"]["type"] == "integer"
    assert described["maxItems"] == 1000 and described["items"]["minimum"] == 1
    label = make_label(make_rollout())
    for value in ([], [label.pk], [label.rollout_id, label.pk], [2**63 - 1]):
        response = api.get(path, {name: json.dumps(value)})  # json.dumps writes "[1, 2]", with spaces
        assert response.status_code in (200, 404), (value, response.content)
    assert api.get(path, {name: "00"}).status_code == 400
    assert api.get(path, {name: json.dumps([1] * 1001)}).status_code == 400


@pytest.mark.django_db
def test_the_schema_bounds_wait_as_the_server_does(api, settings):
    # Found: `wait` had no maximum in the schema; anything above PRM_CHECKOUT_WAIT_MAX_S was a 400.
    assert parameter("/rollout", "get", "wait")["schema"]["maximum"] == settings.PRM_CHECKOUT_WAIT_MAX_S
    assert api.get("/rollout", {"prm_version": "v", "wait": settings.PRM_CHECKOUT_WAIT_MAX_S + 1}).status_code == 400


@pytest.mark.django_db
def test_an_empty_optional_query_parameter_means_not_given(api):
    # Found: DRF reads `reference_prm_version=` (empty, optional) as absent, while the schema said it needed a
    # character; the schema now says such parameters may be empty (allowEmptyValue).
    make_rollout()
    assert parameter("/rollout", "get", "reference_prm_version")["allowEmptyValue"] is True
    assert "allowEmptyValue" not in parameter("/rollout", "get", "prm_version")
    response = api.get("/rollout?prm_version=v&limit=&wait=&active_learning=&reference_prm_version=")
    assert response.status_code == 200 and len(response.json()) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/rollout/release", {"prm_version": "", "rollout_ids": [1]}, "prm_version"),
        ("/process_reward_label", {"rollout_id": 1, "prm_output": [0.5], "prm_version": "v", "worker": ""}, "worker"),
    ],
)
def test_blank_text_is_refused_and_the_schema_says_so(api, path, body, field):
    # Found: the schema allowed "" where the serializers refuse it as blank (no minLength).
    assert api.post(path, body, format="json").json()["errors"][field] == ["This field may not be blank."]
    body_schema = operation(path, "post")["requestBody"]["content"]["application/json"]["schema"]
    component = served_schema()["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[-1]]
    assert component["properties"][field]["minLength"] == 1
    assert parameter("/process_reward_labels", "get", "prm_version")["schema"]["minLength"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize("field", ["root_id", "expansion_id"])
def test_forest_fields_need_forest_name_and_the_schema_says_so(api, field):
    # Found: `expansion_id` without `forest_name` was schema-valid but a 400. The schema now says it (anyOf), and
    # the refusal names the field.
    body = {"model": "m", "example": "e", "reasoning": ["s"], "prediction": 1, "ground_truth": 1, "worker": "w"}
    response = api.post("/rollout", {**body, field: 5}, format="json")
    assert response.status_code == 400
    assert "forest_name" in response.json()["errors"][field][0]
    rule = served_schema()["components"]["schemas"]["RolloutCreate"]["anyOf"]
    assert {"required": ["forest_name", "prediction", "ground_truth"]} in rule
    assert {"required": [field]} in rule[2]["not"]["anyOf"]


@pytest.mark.django_db
def test_a_batch_of_non_objects_is_refused_and_the_schema_says_so(api):
    # Found: batch items were any JSON value in the schema; anything but an object is refused.
    body_schema = operation("/rollout/batch", "post")["requestBody"]["content"]["application/json"]["schema"]
    component = served_schema()["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[-1]]
    assert component["properties"]["rollouts"]["items"]["type"] == "object"
    assert api.post("/rollout/batch", {"rollouts": [[None, None]]}, format="json").status_code == 400


@pytest.mark.django_db
def test_a_label_of_the_wrong_length_is_a_422_not_a_400(api):
    # Found: a schema-valid label whose prm_output does not match its rollout's steps was a 400, which now means
    # "breaks the schema"; input that contradicts what is stored is a 422 (also: a rollout its forest refuses).
    response = api.post(
        "/process_reward_label",
        {"rollout_id": make_rollout().pk, "prm_output": [0.5], "prm_version": "v", "worker": "w"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["code"] == "invalid" and "reasoning steps" in response.json()["detail"]
    assert "422" in operation("/process_reward_label", "post")["responses"]


def test_every_error_answer_is_documented_with_the_error_shape():
    for path, item in served_schema()["paths"].items():
        for method, described in item.items():
            for status, answer in described["responses"].items():
                if status.startswith("4"):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ApiError", (path, method, status)
    error = served_schema()["components"]["schemas"]["ApiError"]
    assert error["required"] == ["code", "detail"]
