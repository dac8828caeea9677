"""Input a careless or hostile client sends, refused cleanly (issue 7, items 3 and 9), and the endpoints added for
workers that stop (release) and for the training loop (read by id)."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from rollouts import views
from rollouts.models import ProcessRewardLabel, Rollout, RolloutCheckout
from tests.factories import make_forest, make_rollout, make_root, make_worker_token
from tests.rollouts.conftest import rollout_body

pytestmark = pytest.mark.django_db


def post_raw(api, url: str, raw: bytes):
    return api.generic("POST", url, raw, content_type="application/json")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "example": "e", "reasoning": ["a"], "prediction": 1, "ground_truth": 1, "worker": "w", '
        b'"note": "\\ud800"}',
        b'{"model": "m", "example": "e\\udfff", "reasoning": ["a"], "prediction": 1, "ground_truth": 1, "worker": "w"}',
        b'{"model": "m", "example": "e", "reasoning": ["a", "\\ud83d"], "prediction": 1, "ground_truth": 1, '
        b'"worker": "w"}',
        b'{"model": "m", "example": "e", "reasoning": ["a"], "prediction": 1, "ground_truth": 1, "worker": "w", '
        b'"\\ud800": 1}',
    ],
)
def test_a_lone_surrogate_anywhere_in_a_rollout_is_refused_on_every_database(api, raw):
    # It used to be stored on SQLite (then every claim including it failed to render) and a 500 on PostgreSQL.
    response = post_raw(api, "/rollout", raw)
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]
    assert not Rollout.objects.exists()


def test_a_lone_surrogate_in_a_label_explanation_is_refused(api):
    rollout = make_rollout()
    raw = json.dumps(
        {"rollout_id": rollout.pk, "prm_output": [1, 0], "prm_version": "v", "worker": "w", "explanations": ["ok"]}
    ).replace('"ok"', '"\\udc00"')
    assert post_raw(api, "/process_reward_label", raw.encode()).status_code == 400
    assert not ProcessRewardLabel.objects.exists()


def test_properly_paired_surrogates_are_ordinary_text(api):
    raw = json.dumps(rollout_body(example="rocket \U0001f680"), ensure_ascii=True).encode()  # "\ud83d\ude80"
    assert post_raw(api, "/rollout", raw).status_code == 200
    assert Rollout.objects.get().example == "rocket \U0001f680"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="only SQLite can hold a lone surrogate (legacy rows)")
def test_a_legacy_rollout_with_a_lone_surrogate_is_still_handed_out_and_rendered(api):
    # Rows stored before input was checked must not poison the queue: the claim renders them (escaped) and leases
    # exactly what it answers.
    bad = make_rollout(attributes={"note": "\ud800"})
    good = make_rollout()
    response = api.get("/rollout", {"prm_version": "v"})
    assert response.status_code == 200
    assert [r["id"] for r in json.loads(response.content)] == [bad.pk, good.pk]
    assert set(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == {bad.pk, good.pk}


def test_a_claim_whose_answer_fails_to_render_leases_nothing(api, monkeypatch):
    make_rollout(), make_rollout()

    def broken(rollout):
        raise RuntimeError("cannot render")

    monkeypatch.setattr(views, "rollout_encode", broken)
    with pytest.raises(RuntimeError):
        api.get("/rollout", {"prm_version": "v"})
    assert not RolloutCheckout.objects.exists()  # nothing stranded for the lease time


@override_settings(PRM_CLAIM_MAX_BYTES=5000)
def test_a_claim_answer_is_bounded_in_bytes_and_gives_back_what_it_leaves_out(api):
    big = [make_rollout(example="x" * 2000).pk for _ in range(5)]
    first = api.get("/rollout", {"prm_version": "v", "limit": 5})
    assert len(first.content) <= 5000
    handed = [r["id"] for r in first.json()]
    assert handed == big[:2]
    assert set(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == set(handed)
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v", "limit": 5}).json()] == big[2:4]


@override_settings(PRM_CLAIM_MAX_BYTES=100)
def test_a_rollout_larger_than_the_answer_bound_is_still_handed_out_alone(api):
    huge = make_rollout(example="y" * 1000)
    make_rollout()
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v", "limit": 5}).json()] == [huge.pk]


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**309])
def test_an_integer_beyond_float_range_in_prm_output_is_a_400(api, value):
    rollout = make_rollout()
    raw = f'{{"rollout_id": {rollout.pk}, "prm_output": [0.5, {value}], "prm_version": "v", "worker": "w"}}'
    response = post_raw(api, "/process_reward_label", raw.encode())
    assert response.status_code == 400
    assert "prm_output" in response.json()["errors"]


def test_a_browser_session_previews_the_queue_without_checking_anything_out(staff_client):
    # A cross-site link opened by a logged-in staff member used to check rollouts out.
    ids = [make_rollout().pk for _ in range(3)]
    response = staff_client.get("/rollout?prm_version=v&limit=2", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response["X-Prmsite-Claim"] == "preview"
    assert [r["id"] for r in response.json()] == ids[:2]
    assert not RolloutCheckout.objects.exists()
    assert staff_client.get("/rollout?prm_version=v", HTTP_ACCEPT="text/html").status_code == 200  # browsable API


def test_the_same_idempotency_key_answers_the_same_rollout(api):
    body = rollout_body(idempotency_key="9f1c0b7e-retry")
    first = api.post("/rollout", body, format="json").json()
    again = api.post("/rollout", body, format="json")
    assert again.status_code == 200 and again.json() == first
    assert Rollout.objects.count() == 1
    assert Rollout.objects.get().attributes == {}  # the key is not an extra field


def test_an_idempotency_key_reused_for_other_content_is_a_409(api):
    first = api.post("/rollout", rollout_body(idempotency_key="k"), format="json").json()
    response = api.post("/rollout", rollout_body(idempotency_key="k", prediction=1), format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict" and response.json()["id"] == first


def test_a_repeated_forest_rollout_with_its_key_adds_no_node(api):
    make_root(make_forest("liar"), "Is the sky green?", ground_truth=0)
    body = rollout_body(forest_name="liar", idempotency_key="once")
    assert api.post("/rollout", body, format="json").json() == api.post("/rollout", body, format="json").json()
    assert Rollout.objects.count() == 1


@override_settings(PRM_ROLLOUT_MAX_STEPS=50)
def test_a_rollout_with_too_many_steps_is_a_413_and_writes_nothing(api):
    make_root(make_forest("liar"), "Is the sky green?", ground_truth=0)
    response = api.post("/rollout", rollout_body(forest_name="liar", reasoning=["s. "] * 51), format="json")
    assert response.status_code == 413
    assert "PRM_ROLLOUT_MAX_STEPS" in response.json()["detail"]
    assert not Rollout.objects.exists()


def test_release_ends_only_the_callers_leases(api, django_user_model):
    ids = [make_rollout().pk for _ in range(3)]
    mine = [r["id"] for r in api.get("/rollout", {"prm_version": "v", "limit": 2}).json()]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {make_worker_token(django_user_model.objects.create_user('w2'))}")
    theirs = [r["id"] for r in other.get("/rollout", {"prm_version": "v"}).json()]
    assert theirs == ids[2:]
    released = api.post("/rollout/release", {"prm_version": "v", "rollout_ids": mine + theirs}, format="json")
    assert released.json() == 2
    assert [r["id"] for r in other.get("/rollout", {"prm_version": "v"}).json()] == mine


def test_rollouts_by_id_are_read_in_order_without_leasing(api):
    ids = [make_rollout(example=f"e{i}").pk for i in range(3)]
    response = api.get("/rollouts", {"ids": json.dumps([ids[2], ids[0]])})
    assert [(r["id"], r["example"]) for r in response.json()] == [(ids[2], "e2"), (ids[0], "e0")]
    assert not RolloutCheckout.objects.exists()
    missing = api.get("/rollouts", {"ids": json.dumps([ids[0], 10**12])})
    assert missing.status_code == 404 and missing.json()["missing"] == [10**12]


@pytest.mark.parametrize("ids", ["1,2", "[0]", '["1"]', "[true]", json.dumps(list(range(1, 1002)))])
def test_malformed_id_lists_are_refused(api, ids):
    response = api.get("/rollouts", {"ids": ids})
    assert response.status_code == 400
    assert "ids" in response.json()["errors"]
