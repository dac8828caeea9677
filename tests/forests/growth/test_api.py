"""The forest-growth endpoints and POST /rollout/batch: authentication, payloads, errors, leases over HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rest_framework.test import APIClient

from forests.growth.queue import ClaimedExpansion
from forests.growth.serializers import ClaimedExpansionSerializer, claimed_expansion_data
from forests.models import Expansion, RolloutGrowth
from rollouts.models import Rollout
from tests.factories import make_worker_token
from tests.forests.growth.helpers import seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user(username="grower")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {make_worker_token(user)}")
    return client


def rollout(forest, expansion, steps, prediction, **extra):
    return {
        "model": "m",
        "example": expansion["prompt"],
        "reasoning": [*expansion["prefix"], *steps],
        "prediction": prediction,
        "ground_truth": expansion["ground_truth"],
        "worker": "w",
        "forest_name": forest.name,
        "root_id": expansion["root_id"],
        "expansion_id": expansion["id"],
        **extra,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/forest/f/config"),
        ("get", "/forest/f/growth"),
        ("put", "/forest/f/growth"),
        ("post", "/forest/f/expansions/claim"),
        ("post", "/forest/f/expansions/release"),
        ("post", "/rollout/batch"),
    ],
)
def test_every_growth_endpoint_needs_a_token(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert response.status_code == 401 and "detail" in response.json()


def test_a_worker_reads_the_forests_settings_states_its_plan_and_grows_it(api):
    forest, roots = seed("api-forest", roots=2)
    config = api.get(f"/forest/{forest.name}/config").json()
    assert config["rollout_config"]["prediction_pattern"] == r"code: (\d)" and config["trees"] == 2
    assert config["growth"] is None
    plan = api.put(f"/forest/{forest.name}/growth", {"policy": "repeats", "num_repeats": 2}, format="json")
    assert plan.status_code == 200 and plan.json()["changed"] and plan.json()["options"]["num_repeats"] == 2
    conflict = api.put(f"/forest/{forest.name}/growth", {"num_repeats": 3}, format="json")
    assert conflict.status_code == 409 and conflict.json()["code"] == "conflict"
    assert conflict.json()["stored"]["num_repeats"] == 2
    claim = api.post(f"/forest/{forest.name}/expansions/claim", {"limit": 1}, format="json").json()
    (expansion,) = claim["expansions"]
    assert claim["done"] is False and claim["lease_s"] == 600
    assert expansion["count"] == 2 and expansion["prefix"] == [] and expansion["root_id"] in {r.pk for r in roots}
    for prediction in (1, 0):
        body = rollout(
            forest, expansion, ["Step 1: x. ", f"code: {prediction}"], prediction, usage={"prompt_tokens": 5}
        )
        assert api.post("/rollout", body, format="json").status_code == 200
    assert not Expansion.objects.filter(pk=expansion["id"]).exists()
    assert RolloutGrowth.objects.filter(expansion_id=expansion["id"]).count() == 2
    growth = api.get(f"/forest/{forest.name}/growth").json()
    assert growth["rollouts"] == 2 and growth["prompt_tokens"] == 10 and growth["pending_expansions"] == 1


def test_claims_and_releases_answer_4xx_json_for_bad_input(api):
    forest, _ = seed("api-bad", roots=1)
    assert api.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").status_code == 404
    assert api.post("/forest/nope/expansions/claim", {}, format="json").json()["code"] == "not_found"
    api.put(f"/forest/{forest.name}/growth", {}, format="json")
    bad = api.post(f"/forest/{forest.name}/expansions/claim", {"limit": "3"}, format="json")
    # Field errors: under "errors" once every 4xx has the {"detail", "code", "errors"} shape, at the top level before.
    assert bad.status_code == 400 and "limit" in bad.json().get("errors", bad.json())
    bad_plan = api.put(f"/forest/{forest.name}/growth", {"policy": "beam"}, format="json")
    assert bad_plan.status_code == 400
    (e,) = api.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"]
    released = api.post(f"/forest/{forest.name}/expansions/release", {"ids": [e["id"]]}, format="json")
    assert released.json() == {"released": 1}
    assert (
        api.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"][0]["id"] == e["id"]
    )


def test_expansion_id_needs_a_forest_and_a_matching_path(api):
    forest, _ = seed("api-path", roots=1)
    api.put(f"/forest/{forest.name}/growth", {"policy": "repeats", "num_repeats": 1}, format="json")
    (e,) = api.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"]
    body = rollout(forest, e, ["Step 1: x. "], 1)
    without_forest = {k: v for k, v in body.items() if k not in ("forest_name", "root_id")}
    assert api.post("/rollout", without_forest, format="json").status_code == 400
    assert Rollout.objects.count() == 0


def test_a_batch_stores_each_rollout_on_its_own_and_reports_each_outcome(api):
    forest, _ = seed("api-batch", roots=1)
    api.put(f"/forest/{forest.name}/growth", {"policy": "repeats", "num_repeats": 2}, format="json")
    (e,) = api.post(f"/forest/{forest.name}/expansions/claim", {}, format="json").json()["expansions"]
    good = rollout(forest, e, ["Step 1: a. "], 1, idempotency_key="k1")
    wrong_truth = {**rollout(forest, e, ["Step 1: b. "], 1), "ground_truth": 0}
    not_typed = {**good, "prediction": "1"}
    response = api.post(
        "/rollout/batch",
        {"rollouts": [good, wrong_truth, not_typed, {**good, "worker": "w2", "idempotency_key": "k2"}]},
        format="json",
    )
    results = response.json()["results"]
    assert response.status_code == 200 and len(results) == 4
    assert "id" in results[0] and "id" in results[3]
    assert results[1]["status"] == 422 and "ground_truth" in results[1]["detail"]
    assert results[2]["code"] == "invalid" and "prediction" in results[2]["errors"]
    assert Rollout.objects.count() == 2 and not Expansion.objects.exists()


def test_each_rollout_of_a_batch_keeps_its_own_extra_fields_and_errors(api):
    body = {"model": "m", "example": "e", "reasoning": ["r"], "prediction": 1, "ground_truth": 1, "worker": "w"}
    batch = [
        {**body, "temperature": 0.7},
        {**body, "id": 5},  # a reserved field: refused
        {key: value for key, value in body.items() if key != "prediction"},  # prediction missing: refused
        body,
    ]
    results = api.post("/rollout/batch", {"rollouts": batch}, format="json").json()["results"]
    assert "id" in results[0] and "id" in results[3]
    assert list(results[1]["errors"]) == ["id"] and list(results[2]["errors"]) == ["prediction"]
    first, last = Rollout.objects.get(pk=results[0]["id"]), Rollout.objects.get(pk=results[3]["id"])
    assert first.attributes == {"temperature": 0.7} and last.attributes == {}


def test_a_batch_is_bounded(api, settings):
    settings.ROLLOUT_BATCH_MAX = 2
    body = {"model": "m", "example": "e", "reasoning": ["r"], "prediction": 1, "ground_truth": 1, "worker": "w"}
    assert api.post("/rollout/batch", {"rollouts": [body] * 3}, format="json").status_code == 400
    assert api.post("/rollout/batch", {"rollouts": [1]}, format="json").status_code == 400
    assert api.post("/rollout/batch", {"rollouts": [body] * 2}, format="json").status_code == 200


def test_a_rollout_holding_a_nul_or_a_lone_surrogate_is_refused_alone_and_the_others_of_its_batch_are_stored(api):
    # Issue 17, item 8: one NUL a model wrote made the whole batch a 400, so a worker stored none of its rollouts.

    body = {"model": "m", "example": "e", "reasoning": ["r"], "prediction": 1, "ground_truth": 1, "worker": "w"}
    deep: list = [1]
    for _ in range(40):
        deep = [deep]
    rollouts = [
        {**body, "idempotency_key": "k0"},
        {**body, "idempotency_key": "k1", "reasoning": ["a", "b PLACEHOLDER-NUL c"]},
        {**body, "idempotency_key": "k2", "finish_reason": "PLACEHOLDER-SURROGATE"},
        {**body, "idempotency_key": "k3", "extra": {"PLACEHOLDER-NUL": 1}},
        {**body, "idempotency_key": "k4", "deep": deep},
        {**body, "idempotency_key": "k5"},
    ]
    raw = json.dumps({"rollouts": rollouts}).replace("PLACEHOLDER-NUL", "\\u0000")
    raw = raw.replace("PLACEHOLDER-SURROGATE", "\\ud800").encode()
    response = api.generic("POST", "/rollout/batch", raw, content_type="application/json")
    results = response.json()["results"]
    assert response.status_code == 200 and ["id" in r for r in results] == [True, False, False, False, False, True]
    assert [r["status"] for r in results[1:5]] == [400] * 4 and {r["code"] for r in results[1:5]} == {"invalid"}
    assert "rollouts[1].reasoning[1]" in results[1]["detail"] and "NUL" in results[1]["detail"]
    assert "surrogate" in results[2]["detail"] and "a key of rollouts[3].extra" in results[3]["detail"]
    assert "nested too deeply" in results[4]["detail"]
    assert sorted(Rollout.objects.values_list("idempotency_key", flat=True)) == ["k0", "k5"]
    # Outside the rollouts, the body is checked as any body is: the whole request is refused.
    envelope = json.dumps({"rollouts": [body], "note": "PLACEHOLDER"}).replace("PLACEHOLDER", "\\u0000").encode()
    refused = api.generic("POST", "/rollout/batch", envelope, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["code"] == "parse_error"


def test_a_claimed_expansion_is_answered_as_its_serializer_writes_it():
    expires = datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=UTC)
    claimed = [
        ClaimedExpansion(1, 2, 3, 0, "repeats", 4, "Is it?", [], 1, expires),
        ClaimedExpansion(
            2**62, 5, 6, 2, "adaptive", 1, "Q é\u2028", ["Step 1: a. ", "Step 2: b"], None, expires + timedelta(days=1)
        ),
        ClaimedExpansion(7, 8, 9, 1, "mc", 2, "", ["x"], 0, expires.astimezone(timezone(timedelta(hours=5)))),
    ]
    for expansion in claimed:
        assert claimed_expansion_data(expansion) == ClaimedExpansionSerializer(vars(expansion)).data
    assert json.dumps([claimed_expansion_data(e) for e in claimed]) == json.dumps(
        ClaimedExpansionSerializer([vars(e) for e in claimed], many=True).data
    )
