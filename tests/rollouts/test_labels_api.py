"""POST /process_reward_label, GET /process_reward_labels and GET /process_reward_label?keys=…"""

from __future__ import annotations

import pytest

from rollouts.models import ProcessRewardLabel, RolloutCheckout
from tests.factories import make_label, make_rollout

pytestmark = pytest.mark.django_db


def label_body(rollout, **fields) -> dict:
    body = {"rollout_id": rollout.pk, "prm_output": [0.9, 0.1], "prm_version": "v1", "worker": "prm-0"}
    body.update(fields)
    return body


def test_post_label_answers_the_id_and_ends_the_checkout(api):
    rollout = make_rollout()
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "v1"}).json()] == [rollout.pk]
    assert RolloutCheckout.objects.filter(rollout=rollout, prm_version="v1").exists()
    response = api.post("/process_reward_label", label_body(rollout), format="json")
    assert response.status_code == 200
    assert response.json() == ProcessRewardLabel.objects.get().pk
    assert not RolloutCheckout.objects.exists()
    assert api.get("/rollout", {"prm_version": "v1"}).json() == []


def test_a_label_ends_only_the_checkout_of_its_own_version(api):
    rollout = make_rollout()
    api.get("/rollout", {"prm_version": "v1"})
    api.get("/rollout", {"prm_version": "v2"})
    api.post("/process_reward_label", label_body(rollout, prm_version="v1"), format="json")
    assert list(RolloutCheckout.objects.values_list("prm_version", flat=True)) == ["v2"]


def test_labeller_values_and_explanations_are_stored_as_sent(api):
    rollout = make_rollout(reasoning=["a", "b", "c"])
    body = label_body(rollout, prm_output=[1, 0, 2], explanations=["good", "bad", "meh"], worker=" lab ")
    label = ProcessRewardLabel.objects.get(pk=api.post("/process_reward_label", body, format="json").json())
    assert label.prm_output == [1, 0, 2]
    assert label.explanations == ["good", "bad", "meh"]
    assert label.worker == " lab "
    assert label.final_reward == 2.0


def test_repeating_the_same_label_returns_the_existing_id(api):
    rollout = make_rollout()
    first = api.post("/process_reward_label", label_body(rollout), format="json").json()
    again = api.post("/process_reward_label", label_body(rollout), format="json")
    assert again.status_code == 200
    assert again.json() == first
    assert ProcessRewardLabel.objects.count() == 1


def test_another_worker_may_label_the_same_rollout(api):
    rollout = make_rollout()
    a = api.post("/process_reward_label", label_body(rollout), format="json").json()
    b = api.post("/process_reward_label", label_body(rollout, worker="prm-1"), format="json").json()
    assert a != b


def test_a_different_label_from_the_same_worker_is_a_conflict(api):
    rollout = make_rollout()
    first = api.post("/process_reward_label", label_body(rollout), format="json").json()
    response = api.post("/process_reward_label", label_body(rollout, prm_output=[0.2, 0.3]), format="json")
    assert response.status_code == 409
    assert response.json()["id"] == first
    assert ProcessRewardLabel.objects.get().prm_output == [0.9, 0.1]


def test_an_unknown_rollout_id_is_a_404(api):
    response = api.post("/process_reward_label", {**label_body(make_rollout()), "rollout_id": 10**9}, format="json")
    assert response.status_code == 404
    assert "10000000" in response.json()["detail"]
    assert not ProcessRewardLabel.objects.exists()


@pytest.mark.parametrize("prm_output", [[0.5], [0.5, 0.5, 0.5], []])
def test_prm_output_needs_one_value_per_step(api, prm_output):
    response = api.post("/process_reward_label", label_body(make_rollout(), prm_output=prm_output), format="json")
    assert response.status_code == 422
    assert "reasoning steps" in response.json()["detail"]
    assert not ProcessRewardLabel.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rollout_id", "1"),
        ("rollout_id", None),
        ("prm_output", [0.5, "high"]),
        ("prm_output", [0.5, True]),
        ("prm_output", [0.5, None]),
        ("prm_output", 0.5),
        ("prm_version", 2),
        ("worker", None),
        ("explanations", "why"),
        ("explanations", ["ok", 3]),
    ],
)
def test_wrongly_typed_label_fields_are_refused(api, field, value):
    response = api.post("/process_reward_label", label_body(make_rollout(), **{field: value}), format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not ProcessRewardLabel.objects.exists()


def test_non_finite_rewards_are_refused(api):
    rollout = make_rollout()
    body = b'{"rollout_id": %d, "prm_output": [NaN, 1.0], "prm_version": "v1", "worker": "w"}' % rollout.pk
    response = api.generic("POST", "/process_reward_label", body, content_type="application/json")
    assert response.status_code == 400
    assert not ProcessRewardLabel.objects.exists()


@pytest.mark.parametrize("field", ["rollout_id", "prm_output", "prm_version", "worker"])
def test_missing_label_fields_are_refused(api, field):
    body = label_body(make_rollout())
    del body[field]
    response = api.post("/process_reward_label", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_label_ids_of_a_version_are_listed_oldest_first(api):
    a, b, c = make_rollout(), make_rollout(), make_rollout()
    ids = [make_label(a, "v1").pk, make_label(b, "v2").pk, make_label(c, "v1").pk]
    response = api.get("/process_reward_labels", {"prm_version": "v1"})
    assert response.status_code == 200
    assert response.json() == [ids[0], ids[2]]
    assert api.get("/process_reward_labels", {"prm_version": "none"}).json() == []


def test_labels_by_keys_come_back_in_the_post_format_plus_id(api):
    rollout = make_rollout()
    body = label_body(rollout, explanations=["x", "y"])
    label_id = api.post("/process_reward_label", body, format="json").json()
    other = make_label(make_rollout(), "v1", worker="w2")
    response = api.get("/process_reward_label", {"keys": f"[{other.pk}, {label_id}]"})
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": other.pk,
            "rollout_id": other.rollout_id,
            "prm_output": other.prm_output,
            "prm_version": "v1",
            "worker": "w2",
            "explanations": None,
        },
        {**body, "id": label_id},
    ]


@pytest.mark.parametrize(
    "keys", ["", "1,2", "[1, 'a']", '["1"]', "[true]", "{}", "[0]", "[1.5]", "[[1]]", "[" * 3000, "[NaN]", "[1e400]"]
)
def test_malformed_keys_are_refused(api, keys):
    make_label(make_rollout())
    response = api.get("/process_reward_label", {"keys": keys})
    assert response.status_code == 400
    assert "keys" in response.json()["errors"]


def test_missing_keys_parameter_is_refused(api):
    response = api.get("/process_reward_label")
    assert response.status_code == 400
    assert response.json()["errors"]["keys"] == ["This field is required."]


def test_unknown_keys_are_a_404_listing_them(api):
    label = make_label(make_rollout())
    response = api.get("/process_reward_label", {"keys": f"[{label.pk}, 999999, 999998]"})
    assert response.status_code == 404
    assert response.json()["missing"] == [999998, 999999]


def test_an_empty_keys_list_returns_an_empty_list(api):
    assert api.get("/process_reward_label", {"keys": "[]"}).json() == []
