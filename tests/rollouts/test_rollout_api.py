"""POST /rollout and GET /rollout over HTTP: the documented bodies, strict input, 4xx JSON for bad input."""

from __future__ import annotations

import pytest
from django.test import override_settings

from forests.intake import NEEDS_FOREST
from forests.models import Node
from forests.selectors import FOREST_NOT_FOUND
from forests.trie import EXAMPLE_NOT_FOUND, GROUND_TRUTH_MISMATCH, ROOT_NOT_FOUND
from prmsite.api import INVALID_INPUT
from rollouts import queue
from rollouts.models import Rollout, RolloutCheckout
from tests.factories import make_child, make_forest, make_label, make_rollout, make_root
from tests.rollouts.conftest import rollout_body

pytestmark = pytest.mark.django_db


def test_post_rollout_answers_the_new_id_as_a_bare_integer(api):
    response = api.post("/rollout", rollout_body(), format="json")
    assert response.status_code == 200
    assert response.json() == Rollout.objects.get().pk
    assert response.content.decode() == str(Rollout.objects.get().pk)


def test_posted_text_is_kept_exactly_as_given(api):
    body = rollout_body(worker="  worker 7 ", reasoning=["  Step 1 \n", "", "Verdict: True"], example=" x ")
    rollout_id = api.post("/rollout", body, format="json").json()
    rollout = Rollout.objects.get(pk=rollout_id)
    assert rollout.worker == "  worker 7 "
    assert rollout.reasoning == ["  Step 1 \n", "", "Verdict: True"]
    assert rollout.example == " x "


def test_get_rollout_returns_every_posted_field_plus_id(api):
    body = rollout_body(temperature=0.7, extra={"seed": 3})
    rollout_id = api.post("/rollout", body, format="json").json()
    response = api.get("/rollout", {"prm_version": "v1"})
    assert response.status_code == 200
    # Plus what the server decided: the answer (a label rollout's prediction as text) and the grader's verdict.
    assert response.json() == [{**body, "id": rollout_id, "answer": "0", "correct": True, "verdict_reason": ""}]


def test_prediction_may_be_null(api):
    rollout_id = api.post("/rollout", rollout_body(prediction=None), format="json").json()
    assert Rollout.objects.get(pk=rollout_id).prediction is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", 3),
        ("example", None),
        ("reasoning", "one string"),
        ("reasoning", []),
        ("reasoning", ["ok", 2]),
        ("prediction", "1"),
        ("prediction", 1.0),
        ("prediction", True),
        ("prediction", 2**40),
        ("ground_truth", None),
        ("worker", ""),
        ("worker", ["w"]),
        ("example", "nul \x00 inside"),
    ],
)
def test_wrongly_typed_fields_are_refused_with_the_field_named(api, field, value):
    response = api.post("/rollout", rollout_body(**{field: value}), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] in {"invalid", "parse_error"}
    assert field in body.get("errors", {}) or f"at {field}" in body["detail"]  # the parser names it in detail
    assert not Rollout.objects.exists()


@pytest.mark.parametrize("field", ["model", "example", "reasoning", "prediction", "ground_truth", "worker"])
def test_missing_fields_are_refused(api, field):
    body = rollout_body()
    del body[field]
    response = api.post("/rollout", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"][field] == ["This field is required."]


@pytest.mark.parametrize("name", ["id", "attributes", "created_at"])
def test_extra_fields_may_not_shadow_server_fields(api, name):
    response = api.post("/rollout", rollout_body(**{name: 5}), format="json")
    assert response.status_code == 400
    assert name in response.json()["errors"]


def test_extra_fields_must_be_storable_json(api):
    response = api.post("/rollout", rollout_body(note="a\x00b"), format="json")
    assert response.status_code == 400
    assert "note" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "parse_error"),
        (b"[1, 2]", "application/json", 400, "invalid"),
        (b"model=x", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_get_a_json_4xx(api, content, content_type, status, code):
    response = api.generic("POST", "/rollout", content, content_type=content_type)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert not Rollout.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_an_oversize_body_is_refused_with_413(api):
    response = api.post("/rollout", rollout_body(example="x" * 2000), format="json")
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert not Rollout.objects.exists()


def test_a_rollout_posted_with_forest_name_is_inserted_into_the_trie(api):
    forest = make_forest("liar")
    root = make_root(forest, "Is the sky green?", ground_truth=0)
    rollout_id = api.post("/rollout", rollout_body(forest_name="liar"), format="json").json()
    rollout = Rollout.objects.get(pk=rollout_id)
    assert rollout.forest == forest
    assert rollout.node.is_leaf and rollout.node.prediction == 0
    assert [n.text for n in Node.objects.filter(forest=forest, depth__gt=0).order_by("depth")] == rollout.reasoning
    claimed = api.get("/rollout", {"prm_version": "v1"}).json()
    assert claimed[0]["forest_name"] == "liar"
    assert claimed[0]["root_id"] == root.pk


def test_root_id_chooses_among_trees_with_the_same_prompt(api):
    forest = make_forest("twins")
    make_root(forest, "Is the sky green?")
    second = make_root(forest, "Is the sky green?")
    ambiguous = api.post("/rollout", rollout_body(forest_name="twins"), format="json")
    assert ambiguous.status_code == 422
    rollout_id = api.post("/rollout", rollout_body(forest_name="twins", root_id=second.pk), format="json").json()
    assert Rollout.objects.get(pk=rollout_id).node.tree_id == second.pk


@pytest.mark.parametrize(
    ("extra", "status", "code", "detail"),
    [
        ({"forest_name": "nope"}, 404, "not_found", lambda root: FOREST_NOT_FOUND.format(name="nope")),
        (
            {"forest_name": "liar", "ground_truth": 1},
            422,
            "invalid",
            lambda root: GROUND_TRUTH_MISMATCH.format(given=1, expected=0, root_id=root.pk, forest="liar"),
        ),
        (
            {"forest_name": "liar", "example": "Another prompt"},
            422,
            "invalid",
            lambda root: EXAMPLE_NOT_FOUND.format(forest="liar"),
        ),
        (
            {"forest_name": "liar", "root_id": 999999},
            404,
            "not_found",
            lambda root: ROOT_NOT_FOUND.format(forest="liar", root_id=999999),
        ),
        (
            {"root_id": 1},
            400,
            "invalid",
            lambda root: INVALID_INPUT.format(summary="root_id: " + NEEDS_FOREST.format(name="root_id")),
        ),
    ],
)
def test_a_rollout_the_forest_refuses_leaves_nothing_behind(api, extra, status, code, detail):
    root = make_root(make_forest("liar"), "Is the sky green?", ground_truth=0)
    response = api.post("/rollout", rollout_body(**extra), format="json")
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["detail"] == detail(root)
    assert not Rollout.objects.exists()
    assert Node.objects.filter(depth__gt=0).count() == 0


def test_get_rollout_hands_out_unlabelled_rollouts_and_checks_them_out(api):
    labelled, free, other = make_rollout(), make_rollout(), make_rollout()
    make_label(labelled, prm_version="v1")
    make_label(other, prm_version="v0")
    first = api.get("/rollout", {"prm_version": "v1"}).json()
    assert [r["id"] for r in first] == [free.pk, other.pk]
    assert set(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == {free.pk, other.pk}
    assert api.get("/rollout", {"prm_version": "v1"}).json() == []
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v2"}).json()] == [labelled.pk, free.pk, other.pk]


def test_limit_bounds_how_many_are_handed_out(api):
    ids = [make_rollout().pk for _ in range(5)]
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v", "limit": 2}).json()] == ids[:2]
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v", "limit": 2}).json()] == ids[2:4]


def test_limit_defaults_to_sixteen(api):
    for _ in range(20):
        make_rollout()
    assert len(api.get("/rollout", {"prm_version": "v"}).json()) == 16


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"prm_version": ""},
        {"prm_version": "v", "limit": 0},
        {"prm_version": "v", "limit": "many"},
        {"prm_version": "v", "limit": 1001},
        {"prm_version": "v", "wait": -1},
        {"prm_version": "v", "wait": 61},
        {"prm_version": "v", "wait": "nan"},
        {"prm_version": "v", "wait": "inf"},
        {"prm_version": "v", "active_learning": "maybe"},
    ],
)
def test_bad_query_parameters_are_refused(api, params):
    make_rollout()
    response = api.get("/rollout", params)
    assert response.status_code == 400
    assert response.json()
    assert not RolloutCheckout.objects.exists()


def test_wait_polls_the_queue_and_returns_an_empty_list_when_nothing_comes(api, monkeypatch):
    attempts = []
    real_claim = queue.checkout_claim

    def counted(**claim):
        attempts.append(claim["now"])
        return real_claim(**claim)

    monkeypatch.setattr(queue, "checkout_claim", counted)
    response = api.get("/rollout", {"prm_version": "v", "wait": 2})
    assert response.status_code == 200
    assert response.json() == []
    # It waited by claiming again (every CLAIM_POLL_INTERVAL_S), not once: counted, not timed.
    assert len(attempts) >= 2


def test_a_leaf_node_created_by_the_api_is_shared_by_identical_rollouts(api):
    forest = make_forest("liar")
    root = make_root(forest, "Is the sky green?")
    make_child(root, "Step 1: look up. ")
    a = api.post("/rollout", rollout_body(forest_name="liar"), format="json").json()
    b = api.post("/rollout", rollout_body(forest_name="liar", worker="other"), format="json").json()
    assert Rollout.objects.get(pk=a).node_id == Rollout.objects.get(pk=b).node_id
    assert Node.objects.filter(forest=forest).count() == 3


def test_deeply_nested_json_is_a_400_not_a_crash(api):
    response = api.generic("POST", "/rollout", b"[" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert "nested" in response.json()["detail"]


def test_head_does_not_check_rollouts_out(api):
    make_rollout()
    assert api.head("/rollout?prm_version=v").status_code == 405
    assert not RolloutCheckout.objects.exists()


@pytest.mark.parametrize(
    "url", ["/rollout", "/process_reward_label", "/process_reward_labels", "/prm_adapters", "/prm_adapter"]
)
def test_options_describes_every_endpoint(api, url):
    response = api.options(url)
    assert response.status_code == 200
    assert response.json()["name"]
