"""Hostile input on every API endpoint (issue 13, item 4), each refused with a 4xx in the one JSON error shape and
nothing written. The endpoints are read from the URL conf (tests/hostile_routes.py): an endpoint added later is
attacked by every table here without being named, and ``test_every_unsafe_endpoint_has_a_valid_body_here`` fails
until the attacks that need one of its valid bodies know it.

The attacks of earlier issues keep their own tests (tests/rollouts/test_hostile_input.py, tests/test_api_auth.py,
tests/test_api_defaults.py, tests/adapters/); this file runs them across every endpoint.
"""

from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
from pathlib import PurePosixPath
from urllib.parse import quote

import pytest
import requests
from django.apps import apps
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from adapters.models import PRMAdapter
from adapters.services import storage_filename
from forests.growth.plan import growth_plan_set
from forests.models import Forest
from rollouts.models import ProcessRewardLabel
from tests.factories import make_forest, make_label, make_rollout, make_root, make_worker_token
from tests.hostile_routes import UNSAFE_METHODS, Route, api_calls, api_routes
from tests.html_checks import assert_no_live_markup
from tests.prmsite.test_serving import open_long_poll
from tests.rollouts.conftest import rollout_body

pytestmark = pytest.mark.django_db

FOREST = "hostile-forest"
CALLS = api_calls()
UNSAFE = [(route, method) for route, method in CALLS if method in UNSAFE_METHODS]
SAFE = [(route, method) for route, method in CALLS if method == "get"]

# Query strings that make each endpoint's own parameters valid (so an attack reaches what it attacks).
QUERIES = {
    "rollout": "?prm_version=v",
    "rollouts": "?ids=[1]",
    "process-reward-label": "?keys=[1]",
    "process-reward-labels": "?prm_version=v",
    "prm-adapter": "?prm_version=v&base_model=b&worker=w",
}
# The query parameters each GET endpoint reads, for the injection table.
GET_PARAMETERS = {
    "rollout": ["prm_version", "limit", "wait", "active_learning", "reference_prm_version"],
    "rollouts": ["ids"],
    "process-reward-label": ["keys"],
    "process-reward-labels": ["prm_version"],
    "prm-adapter": ["prm_version"],
    "prm-adapters": [],
    "forest-config": [],
    "forest-growth": [],
    "schema": ["lang", "version"],
    "swagger-ui": ["lang", "script"],
}


def valid_body(route: Route, method: str) -> dict | None:
    """A body the endpoint accepts (None: the endpoint takes no JSON body)."""
    return {
        ("rollout", "post"): rollout_body(),
        ("rollout-release", "post"): {"prm_version": "v", "rollout_ids": [1]},
        ("process-reward-label", "post"): {"rollout_id": 1, "prm_output": [1, 0], "prm_version": "v", "worker": "w"},
        ("rollout-batch", "post"): {"rollouts": [rollout_body()]},
        ("process-reward-label-batch", "post"): {
            "labels": [{"rollout_id": 1, "prm_output": [1, 0], "prm_version": "v", "worker": "w"}]
        },
        ("forest-growth", "put"): {"policy": "mc", "num_repeats": 2},
        ("expansion-claim", "post"): {"limit": 1},
        ("expansion-release", "post"): {"ids": [1]},
        ("prm-adapter", "post"): None,  # a raw zip, not JSON
    }[(route.name, method)]


def url_of(route: Route, **values) -> str:
    return route.path(forest_name=FOREST, **values) + QUERIES.get(route.name, "")


def call_id(call) -> str:
    route, method = call
    return f"{method.upper()} {route.path(forest_name='F')}"


def db_counts() -> dict[str, int]:
    """Rows of every model of the project's apps (and of users and tokens): what an attack must leave unchanged."""
    models = [
        m
        for label in ("forests", "rollouts", "adapters", "knox", "auth")
        for m in apps.get_app_config(label).get_models()
    ]
    return {m._meta.label: m.objects.count() for m in models}


def assert_refused(response, status: int | tuple[int, ...] | None = None, code: str | None = None) -> dict:
    """A 4xx (``status`` when given) with the one JSON error shape."""
    statuses = (status,) if isinstance(status, int) else status
    if statuses is not None:
        assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = json.loads(response.content)
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert isinstance(body.get("code"), str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture
def forest(db) -> Forest:
    forest = make_forest(FOREST)
    make_root(forest, "Is the sky green?")
    growth_plan_set(forest_name=FOREST, given={"num_repeats": 1}, replace=False, by="staff", now=timezone.now())
    return forest


def send(client, method: str, url: str, body: bytes | None = None, content_type: str = "application/json", **extra):
    if body is None:
        return getattr(client, method)(url, **extra)
    return client.generic(method.upper(), url, body, content_type=content_type, **extra)


# --- Who may call: every endpoint, every method ------------------------------------------------------------------


def test_the_enumeration_finds_every_documented_endpoint():
    # If the URL conf were read wrongly, every table below would be vacuous.
    names = {route.name for route in api_routes()}
    assert {"rollout", "process-reward-label", "prm-adapter", "rollout-batch", "expansion-claim"} <= names
    assert len(CALLS) >= 18 and len(UNSAFE) >= 8


def test_every_unsafe_endpoint_has_a_valid_body_here():
    for route, method in UNSAFE:
        valid_body(route, method)  # a KeyError names the endpoint added without one


@pytest.mark.parametrize("call", CALLS, ids=call_id)
def test_an_anonymous_caller_gets_the_json_401(client, forest, call):
    route, method = call
    before = db_counts()
    response = send(client, method, url_of(route))
    assert_refused(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert db_counts() == before


@pytest.mark.parametrize("call", CALLS, ids=call_id)
def test_a_deactivated_users_token_gets_the_json_401(forest, worker_user, worker_token, call):
    route, method = call
    worker_user.is_active = False
    worker_user.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {worker_token}")
    before = db_counts()
    assert_refused(send(client, method, url_of(route)), 401, "authentication_failed")
    assert db_counts() == before


@pytest.mark.parametrize("call", CALLS, ids=call_id)
def test_a_deactivated_staff_members_session_gets_the_json_401(client, forest, staff_user, call):
    route, method = call
    client.force_login(staff_user)
    staff_user.is_active = False
    staff_user.save()
    assert_refused(send(client, method, url_of(route)), 401, "not_authenticated")


@pytest.mark.parametrize("call", CALLS, ids=call_id)
def test_a_logged_in_user_who_is_not_staff_gets_the_json_403(client, forest, django_user_model, call):
    route, method = call
    client.force_login(django_user_model.objects.create_user("visitor", password="a-long-test-password"))
    before = db_counts()
    assert_refused(send(client, method, url_of(route)), 403)
    assert db_counts() == before


@pytest.mark.parametrize("call", UNSAFE, ids=call_id)
def test_a_staff_session_without_the_csrf_token_writes_nothing(forest, staff_user, call):
    # A page on another site posting with the staff member's cookie: refused before the body is read.
    route, method = call
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    body = valid_body(route, method)
    before = db_counts()
    raw = json.dumps(body).encode() if body is not None else b"PK\x05\x06" + b"\0" * 18
    body = assert_refused(send(client, method, url_of(route), raw), 403, "permission_denied")
    assert "CSRF" in body["detail"]
    assert db_counts() == before


# --- Bodies: oversize, deep, not UTF-8, NUL, surrogates, not JSON, wrong type ------------------------------------

NOT_STORABLE_OR_MALFORMED = {
    "deeply nested": b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nested just past the limit": b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}",
    "not UTF-8": b'{"model": "\xff\xfe\xfa", "worker": "\xc3\x28"}',
    "UTF-16": json.dumps({"model": "m"}).encode("utf-16"),
    "NUL escaped in a string": b'{"prm_version": "v\\u0000", "model": "a\\u0000b", "ids": ["\\u0000"]}',
    "raw NUL byte in a string": b'{"prm_version": "v\x00"}',
    "NUL in a key": b'{"a\\u0000b": 1}',
    "lone surrogate": b'{"prm_version": "\\ud800", "model": "\\udfff"}',
    "NaN": b'{"limit": NaN, "prm_output": [NaN], "num_repeats": NaN}',
    "Infinity": b'{"limit": Infinity, "prm_output": [-Infinity]}',
    "truncated": b'{"model": "m", "reasoning": ["a"',
    "whitespace": b"   \n ",
    "a list": b"[1, 2, 3]",
    "a string": b'"hello"',
    "null": b"null",
    "a 5000-digit integer": b'{"x": ' + b"9" * 5000 + b"}",  # beyond Python's int-from-text limit
    "a BOM then JSON": b"\xef\xbb\xbf{}",
}


@pytest.mark.parametrize("attack", list(NOT_STORABLE_OR_MALFORMED), ids=str)
@pytest.mark.parametrize("call", UNSAFE, ids=call_id)
def test_a_malformed_or_unstorable_body_is_a_json_4xx_and_writes_nothing(api, forest, call, attack):
    route, method = call
    before = db_counts()
    response = send(api, method, url_of(route), NOT_STORABLE_OR_MALFORMED[attack])
    assert_refused(response, (400, 413))
    assert db_counts() == before


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
@pytest.mark.parametrize("call", UNSAFE, ids=call_id)
def test_a_body_of_another_media_type_is_a_json_4xx(api, forest, call, content_type):
    route, method = call
    body = valid_body(route, method)
    raw = (json.dumps(body) if body is not None else "not a zip").encode()
    before = db_counts()
    expected = 400 if body is None else 415  # the adapter endpoint reads any body raw, as a zip
    assert_refused(send(api, method, url_of(route), raw, content_type=content_type), expected)
    assert db_counts() == before


@pytest.mark.parametrize("call", UNSAFE, ids=call_id)
def test_an_oversize_body_is_a_json_413(api, forest, call):
    route, method = call
    body = valid_body(route, method)
    raw = json.dumps({**(body or {}), "padding": "x" * 5000}).encode()
    before = db_counts()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=2000, PRM_ADAPTER_MAX_BYTES=2000):
        assert_refused(send(api, method, url_of(route), raw), 413, "too_large")
    assert db_counts() == before


@pytest.mark.parametrize("call", UNSAFE, ids=call_id)
def test_a_body_declaring_a_terabyte_is_a_json_413_before_it_is_read(api, forest, call):
    route, method = call
    before = db_counts()
    response = send(api, method, url_of(route), b"{}", CONTENT_LENGTH=str(10**12))
    assert_refused(response, 413, "too_large")
    assert db_counts() == before


NULLABLE = {"prediction"}  # null is a value of these fields
HOSTILE_FIELD_VALUES = {
    "NUL": '"a\\u0000b"',
    "lone surrogate": '"\\udc00"',
    "deep": "[" * 40 + "]" * 40,
    "10**30": "1" + "0" * 30,
    "beyond float range": "1" + "0" * 400,
    "-10**30": "-1" + "0" * 30,
    "1e308 * 10": "1e309",
    "null": "null",
    "object": '{"a": 1}',
    "bool": "true",
}
# Values of another JSON type than the field's own.
WRONG_TYPES = {str: ["1", "0.5", '["a"]'], int: ['"1"', "0.5", '["1"]'], list: ['"a"', "1"], dict: ['"a"', "[1]"]}


def field_cases():
    for route, method in UNSAFE:
        body = valid_body(route, method)
        for field in body or ():
            yield pytest.param(route, method, field, id=f"{method.upper()} {route.path(forest_name='F')} {field}")


@pytest.mark.parametrize(("route", "method", "field"), list(field_cases()))
def test_every_field_of_every_body_refuses_hostile_values(api, forest, route, method, field):
    # Each field in turn holds a NUL, a lone surrogate, a deep value, a huge or fractional number, the wrong type.
    body = valid_body(route, method)
    cases = {**HOSTILE_FIELD_VALUES, **{f"wrong type {v}": v for v in WRONG_TYPES[type(body[field])]}}
    for name, value in cases.items():
        raw = json.dumps({**body, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', value).encode()
        before = db_counts()
        response = send(api, method, url_of(route), raw)
        if name == "null" and field in NULLABLE:
            assert response.status_code == 200
            continue
        assert_refused(response, (400, 404, 413))
        assert db_counts() == before, name


# --- Query strings and paths: NUL, not UTF-8, SQL-looking strings, LIKE wildcards, huge numbers -------------------

SQL_LOOKING = ["' OR 1=1 --", '" OR ""="', "%", "_", "\\", "%%", "\\%", "1; DROP TABLE rollouts_rollout; --", "*"]
QUERY_VALUES = [
    *SQL_LOOKING,
    "%FF%FE",  # not UTF-8 once decoded (sent raw below)
    "x" * 10_000,
    "1" + "0" * 400,
    "-1",
    "nan",
    "inf",
    "1e308",
    "[1,2",
    '{"a":1}',
    "<script>window.__pwned=1</script>",
]


def query_cases():
    for route, _method in SAFE:
        for parameter in [*GET_PARAMETERS[route.name], "format"]:  # DRF reads ?format= on every view
            yield pytest.param(route, parameter, id=f"{route.path(forest_name='F')}?{parameter}")


def test_every_get_endpoint_has_its_parameters_listed():
    assert {route.name for route, _ in SAFE} <= set(GET_PARAMETERS)


@pytest.mark.parametrize(("route", "parameter"), list(query_cases()))
def test_hostile_query_values_are_answered_or_refused_cleanly(api, forest, route, parameter):
    make_rollout()
    for value in QUERY_VALUES:
        base = url_of(route)
        joiner = "&" if "?" in base else "?"
        encoded = value if value.startswith("%FF") else quote(value, safe="")
        before = db_counts()
        response = api.get(f"{base}{joiner}{parameter}={encoded}", HTTP_ACCEPT="application/json")
        assert response.status_code < 500, (parameter, value, response.content[:300])
        if response.status_code >= 400:
            assert_refused(response)
        after = db_counts()
        if route.name != "rollout":  # GET /rollout leases what it hands out, by the specification
            assert after == before, (parameter, value)


@pytest.mark.parametrize("value", ["%", "_1", "v_", "V1", "v%", "' OR 1=1 --", "v1' OR '1'='1"])
def test_a_wildcard_or_sql_in_a_version_matches_no_other_versions_labels(api, value):
    make_label(make_rollout(), prm_version="v1")
    response = api.get("/process_reward_labels", {"prm_version": value})
    assert response.status_code == 200
    assert response.json() == []


@pytest.mark.parametrize("value", ["%", "_", "prm-v_", "PRM-V1", "' OR 1=1 --"])
def test_a_wildcard_or_sql_in_an_adapter_version_finds_nothing(api, value):
    PRMAdapter.objects.create(prm_version="prm-v1", base_model="b", worker="w", sha256="0" * 64, size=1, file="x.zip")
    response = api.get("/prm_adapter", {"prm_version": value}, HTTP_ACCEPT="application/json")
    assert_refused(response, 404, "not_found")


@pytest.mark.parametrize("value", ["%", "_", "%25", "hostile-fores_", "HOSTILE-FOREST", "' OR 1=1 --"])
@pytest.mark.parametrize("route", [r for r in api_routes() if ("forest_name", "str") in r.parameters], ids=str)
def test_a_wildcard_or_sql_in_a_forest_name_finds_no_forest(api, forest, route, value):
    for method in route.methods():
        body = valid_body(route, method) if method != "get" else None
        raw = json.dumps(body).encode() if body is not None else None
        response = send(api, method, route.path(forest_name=quote(value, safe="")), raw)
        assert_refused(response, 404, "not_found")


def path_cases():
    for route in api_routes():
        for name, converter in route.parameters:
            yield pytest.param(route, name, converter, id=f"{route}:{name}")


@pytest.mark.parametrize(("route", "name", "converter"), list(path_cases()))
@pytest.mark.parametrize(
    ("segment", "status"),
    [("a%00b", 400), ("%FF%FE", 404), ("x" * 5000, 404), ("..%2F..%2Fetc%2Fpasswd", 404), ("%3Cscript%3E", 404)],
)
def test_a_hostile_path_segment_is_a_json_4xx(api, forest, route, name, converter, segment, status):
    for method in route.methods():
        body = valid_body(route, method) if method != "get" else None
        raw = json.dumps(body).encode() if body is not None else None
        assert_refused(send(api, method, route.path(**{name: segment}), raw), status)


@pytest.mark.parametrize("call", CALLS, ids=call_id)
def test_a_nul_in_the_query_string_is_a_json_400_everywhere(api, forest, call):
    route, method = call
    url = url_of(route)
    url += ("&" if "?" in url else "?") + "x=a%00b"
    body = valid_body(route, method) if method != "get" else None
    before = db_counts()
    assert_refused(send(api, method, url, json.dumps(body).encode() if body else None), 400, "bad_request")
    assert db_counts() == before


# --- Huge counts: steps, ids, limits ------------------------------------------------------------------------------


def test_a_rollout_of_a_hundred_thousand_steps_is_a_413_on_both_rollout_endpoints(api, forest):
    steps = ["s"] * 100_001
    before = db_counts()
    assert_refused(api.post("/rollout", rollout_body(reasoning=steps), format="json"), 413, "too_large")
    batch = api.post("/rollout/batch", {"rollouts": [rollout_body(reasoning=steps)]}, format="json")
    assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 413
    forest_body = rollout_body(reasoning=steps, forest_name=FOREST)
    assert_refused(api.post("/rollout", forest_body, format="json"), 413, "too_large")
    assert db_counts() == before


def test_a_rollout_of_ten_megabytes_of_one_step_is_a_413(api, forest):
    before = db_counts()
    response = api.post("/rollout", rollout_body(reasoning=["x" * 2_000_000], forest_name=FOREST), format="json")
    assert_refused(response, 413, "too_large")
    assert db_counts() == before


def test_a_label_of_a_hundred_thousand_values_for_a_two_step_rollout_is_a_422(api):
    rollout = make_rollout()
    before = db_counts()
    body = {"rollout_id": rollout.pk, "prm_output": [0.5] * 100_000, "prm_version": "v", "worker": "w"}
    assert_refused(
        api.post("/process_reward_label", body, format="json"), 422
    )  # well-formed, but not one value per step of the stored rollout
    assert ProcessRewardLabel.objects.count() == 0 and db_counts() == before


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("post", "/rollout/release", {"prm_version": "v", "rollout_ids": list(range(1, 100_002))}),
        ("post", f"/forest/{FOREST}/expansions/release", {"ids": list(range(1, 100_002))}),
        ("post", f"/forest/{FOREST}/expansions/claim", {"limit": 10**9}),
        ("post", f"/forest/{FOREST}/expansions/claim", {"limit": 1, "max_rollouts": 10**12}),
        ("post", f"/forest/{FOREST}/expansions/claim", {"limit": 0}),
        ("put", f"/forest/{FOREST}/growth", {"num_repeats": 10**9}),
        ("put", f"/forest/{FOREST}/growth", {"max_forest_tokens": 2**63}),
        ("post", "/rollout/batch", {"rollouts": [rollout_body()] * 501}),
        ("post", "/rollout/batch", {"rollouts": []}),
        ("post", "/process_reward_label/batch", {"labels": [{"rollout_id": 1}] * 501}),
        ("post", "/process_reward_label/batch", {"labels": []}),
        ("post", "/rollout", rollout_body(prediction=2**31)),
        ("post", "/rollout", rollout_body(root_id=2**63)),
        ("post", "/process_reward_label", {"rollout_id": 2**63, "prm_output": [1], "prm_version": "v", "worker": "w"}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_huge_counts_and_ids_in_bodies_are_a_json_400(api, forest, method, url, body):
    before = db_counts()
    assert_refused(getattr(api, method)(url, body, format="json"), (400, 413))
    assert db_counts() == before


@pytest.mark.parametrize(
    "query",
    [
        "limit=1000000000",
        "limit=0",
        "limit=-5",
        "limit=" + "9" * 4000,
        "wait=1e308",
        "wait=nan",
        "wait=inf",
        "wait=-1",
        "wait=" + "9" * 4000,
        "rollout=1&limit=1&limit=2&prm_version=v2",
    ],
)
def test_huge_or_odd_claim_parameters_are_a_json_400_and_lease_nothing(api, query):
    make_rollout()
    before = db_counts()
    response = api.get(f"/rollout?prm_version=v&{query}")
    if response.status_code == 200:  # repeated parameters: the last value is used, and it is valid
        assert query.startswith("rollout=")
        return
    assert_refused(response, 400, "invalid")
    assert db_counts() == before


# --- Adapter archives: pickles never unpickled, traversal, bombs (the endpoint's own tests: tests/adapters/) -------


class _Exploit:
    """Unpickling this writes a file: proof, if the file appears, that something unpickled an upload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


CONFIG = json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}).encode()


@pytest.mark.parametrize(
    "name",
    [
        "adapter_model.bin",
        "pytorch_model.BIN",
        "sub/optimizer.pt",
        "rng_state.pth",
        "x.pkl",
        "x.ckpt",
        "adapter_model.safetensors",  # a pickle wearing the safe name
        "adapter_config.json",  # a pickle where the config goes
    ],
)
def test_a_pickle_in_an_adapter_zip_is_refused_and_never_unpickled(api, tmp_path, settings, name):
    settings.MEDIA_ROOT = tmp_path / "media"
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Exploit(str(marker)))
    members = {"adapter_config.json": CONFIG, "adapter_model.safetensors": b"\x08" + b"\0" * 7 + b"{}", name: payload}
    before = db_counts()
    response = api.generic(
        "POST", "/prm_adapter?prm_version=p&base_model=b&worker=w", _zip(members), content_type="application/zip"
    )
    assert_refused(response, 400)
    assert not marker.exists(), "an uploaded pickle was unpickled"
    assert db_counts() == before


@pytest.mark.parametrize(
    "name",
    ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt", "..\\escape.txt", "C:/escape.txt", "a/./../../x"],
)
def test_a_path_traversal_member_is_refused_and_nothing_is_written_outside(api, tmp_path, settings, name):
    settings.MEDIA_ROOT = tmp_path / "media" / "inner"
    members = {"adapter_config.json": CONFIG, "adapter_model.safetensors": b"\x08" + b"\0" * 7 + b"{}", name: b"x"}
    response = api.generic(
        "POST", "/prm_adapter?prm_version=p&base_model=b&worker=w", _zip(members), content_type="application/zip"
    )
    assert_refused(response, 400)
    assert "Unsafe member name" in response.json()["detail"]
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "prm_version", ["../../escape", "/etc/passwd", "..", ".", "a/b\\c", "<script>", "%2e%2e", "..\x00", "\u202e.zip"]
)
def test_a_hostile_adapter_version_names_a_plain_file_inside_the_media_folder(prm_version):
    # The adapter's file is named after its prm_version (which a worker chooses): one plain name, never a path.
    name = storage_filename(prm_version)
    assert PurePosixPath(name).name == name and "\\" not in name
    assert not name.startswith(".") and ".." not in name and name.endswith(".zip")
    assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name), name


@pytest.mark.parametrize("prm_version", ["../../escape", "<script>", "%2e%2e"])
def test_a_hostile_adapter_version_in_the_upload_url_is_refused_writing_nothing(api, tmp_path, settings, prm_version):
    settings.MEDIA_ROOT = tmp_path / "media"
    url = f"/prm_adapter?prm_version={quote(prm_version, safe='')}&base_model=b&worker=w"
    assert_refused(api.generic("POST", url, b"PK\x05\x06" + b"\0" * 18, content_type="application/zip"), 400)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_zip_of_twenty_thousand_empty_members_is_refused_cheaply(api, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index in range(20_000):
            archive.writestr(f"d/{index}.bin", b"")
    before = db_counts()
    response = api.generic(
        "POST", "/prm_adapter?prm_version=p&base_model=b&worker=w", buffer.getvalue(), content_type="application/zip"
    )
    assert_refused(response, 400)
    assert db_counts() == before


# --- Many long-polls at once: the server keeps answering every other endpoint and page ---------------------------

# How long a request beside the long-polls may wait for its answer: generous, and less than their wait (60 s).
LONG_POLL_PEER_TIMEOUT_S = 45


def test_many_long_polls_at_once_leave_every_endpoint_and_page_answering(production_server, django_user_model):
    # tests/prmsite/test_serving.py holds 100 long-polls against two endpoints; here every GET endpoint and the pages
    # answer while 60 long-polls wait (python -m prmsite.wsgi, 3 worker processes). Each request must be answered
    # within less than the long-polls' wait, so none waited for a long-poll to end.
    token = make_worker_token(django_user_model.objects.create_user("long-poller"))
    polls = [open_long_poll(production_server, token, prm_version="busy", wait=60) for _ in range(60)]
    try:
        time.sleep(1)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        for route, _method in SAFE:
            url = production_server + url_of(route)
            if route.name == "rollout":
                url += "&wait=0"
            response = session.get(url, headers={"Accept": "application/json"}, timeout=LONG_POLL_PEER_TIMEOUT_S)
            assert response.status_code < 500, (url, response.status_code)
            if response.status_code >= 400:
                assert response.json()["code"], url
        anonymous = requests.Session()
        for page, status in (("/label/login/", 200), ("/admin/login/", 200), ("/forests/", 302), ("/label/", 302)):
            assert (
                anonymous.get(
                    production_server + page, allow_redirects=False, timeout=LONG_POLL_PEER_TIMEOUT_S
                ).status_code
                == status
            )
    finally:
        for sock in polls:
            sock.close()


@pytest.mark.parametrize("parameter", ["lang", "version"])
def test_markup_in_the_docs_parameters_stays_out_of_their_script(staff_client, parameter):
    # Swagger UI's start-up script (a file, for the Content-Security-Policy) carries the schema URL with these.
    value = '";window.__pwned=1;//</script><script>window.__pwned=2</script>'
    script = staff_client.get("/api/docs/", {"script": "", parameter: value})
    assert script.status_code == 200
    body = script.content.decode()
    assert "__pwned" in body  # the value is there, escaped
    assert '";window.__pwned' not in body and "</script>" not in body
    page = staff_client.get("/api/docs/", {parameter: value}).content.decode()
    assert_no_live_markup(page)
