"""POST /process_reward_label/batch: each label stored as POST /process_reward_label stores it, in its own transaction,
answered in order; the envelope refused whole; concurrent batches never store two labels where one is allowed."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from prmsite.core.client import PrmsiteClient
from rollouts.labels import label_create_each
from rollouts.models import ProcessRewardLabel, RolloutCheckout
from rollouts.serializers import LABEL_NOT_AN_OBJECT
from tests.factories import make_label, make_rollout, make_worker_token

BATCH = "/process_reward_label/batch"
SINGLE = "/process_reward_label"


def label_body(rollout, **fields) -> dict:
    body = {"rollout_id": rollout.pk, "prm_output": [0.9] * len(rollout.reasoning), "prm_version": "v1", "worker": "w"}
    body.update(fields)
    return body


def post_batch(api, labels: list) -> list[dict]:
    response = api.post(BATCH, {"labels": labels}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def single_answer(api, body) -> dict:
    """What POST /process_reward_label answers for ``body``, as a batch entry (for bodies it stores nothing for)."""
    response = api.post(SINGLE, body, format="json")
    assert response.status_code >= 400
    return {**response.json(), "status": response.status_code}


@pytest.mark.django_db
def test_a_mixed_batch_is_answered_in_order_each_label_as_the_single_endpoint_would(api, worker_user):
    new, repeated, taken, mine, leased, short = (make_rollout() for _ in range(6))
    other = make_label(taken, prm_version="v1", worker="someone-else", labelled_by="another-account")
    own = make_label(mine, prm_version="v1", worker="w", labelled_by=worker_user.username, prm_output=[0.1, 0.1])
    lease_to(leased, claimed_by="another-account")
    invalid = {"rollout_id": short.pk, "prm_output": [0.5, 0.5], "prm_version": "v1"}  # no worker
    nul = label_body(short, worker="bad\x00name")
    wrong_length = label_body(short, prm_output=[0.5])
    unknown = label_body(short, rollout_id=10**9)
    before = ProcessRewardLabel.objects.count()
    # The answers the single endpoint gives for the bodies that store nothing there either (compared below).
    expected_invalid = [single_answer(api, body) for body in (invalid, wrong_length, unknown)]
    assert ProcessRewardLabel.objects.count() == before

    results = post_batch(
        api,
        [
            label_body(new),
            label_body(repeated),
            label_body(repeated),  # the same label again, within the batch: the same id
            label_body(taken),  # another worker's label came first
            label_body(mine),  # this worker labelled it before with other values
            label_body(mine, prm_output=[0.1, 0.1]),  # this worker's own label again: its id
            label_body(leased),  # leased to another caller
            invalid,
            nul,
            wrong_length,
            unknown,
        ],
    )

    stored_new = ProcessRewardLabel.objects.get(rollout=new)
    stored_repeated = ProcessRewardLabel.objects.get(rollout=repeated)
    assert results[0] == {"id": stored_new.pk}
    assert results[1] == results[2] == {"id": stored_repeated.pk}
    assert results[3]["status"] == 409 and results[3]["code"] == "already_labelled" and results[3]["id"] == other.pk
    assert results[4]["status"] == 409 and results[4]["code"] == "conflict" and results[4]["id"] == own.pk
    assert results[5] == {"id": own.pk}
    assert results[6]["status"] == 409 and results[6]["code"] == "leased" and results[6]["expires_at"]
    assert results[7] == expected_invalid[0] and results[7]["status"] == 400 and "worker" in results[7]["errors"]
    assert results[8]["status"] == 400 and results[8]["code"] == "parse_error"
    assert "labels[8].worker" in results[8]["detail"] and "NUL" in results[8]["detail"]
    assert results[9] == expected_invalid[1] and results[9]["status"] == 422
    assert results[10] == expected_invalid[2] and results[10]["status"] == 404
    assert len(results) == 11
    # Two new labels, nothing for the refused ones; the other labels are as they were.
    assert ProcessRewardLabel.objects.count() == before + 2
    assert not ProcessRewardLabel.objects.filter(rollout__in=[leased, short]).exists()
    assert list(ProcessRewardLabel.objects.get(pk=own.pk).prm_output) == [0.1, 0.1]
    assert RolloutCheckout.objects.filter(rollout=leased).exists()  # another caller's lease stands


def lease_to(rollout, *, claimed_by: str) -> None:
    """A live lease of ``rollout`` for v1, held by ``claimed_by`` (as GET /rollout would have written it)."""
    RolloutCheckout.objects.create(
        rollout=rollout, prm_version="v1", claimed_by=claimed_by, expires_at=timezone.now() + timedelta(minutes=10)
    )


@pytest.mark.django_db
def test_a_batch_ends_the_callers_leases_of_the_labelled_rollouts(api):
    rollouts = [make_rollout() for _ in range(3)]
    claimed = api.get("/rollout", {"prm_version": "v1", "limit": 3}).json()
    assert sorted(r["id"] for r in claimed) == sorted(r.pk for r in rollouts)
    assert RolloutCheckout.objects.count() == 3
    results = post_batch(api, [label_body(r) for r in rollouts[:2]])
    assert all("id" in result and "status" not in result for result in results)
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [rollouts[2].pk]
    # Labelled rollouts are never handed out again for v1; the third comes back when its lease ends.
    assert api.get("/rollout", {"prm_version": "v1"}).json() == []


@pytest.mark.django_db
def test_a_batch_is_the_single_endpoint_for_each_label_stored_values_included(api, worker_user):
    rollout = make_rollout(reasoning=["a", "b", "c"])
    body = label_body(rollout, prm_output=[1, 0, 2], explanations=["good", "bad", "meh"], worker=" lab ")
    [result] = post_batch(api, [body])
    label = ProcessRewardLabel.objects.get(pk=result["id"])
    assert (label.prm_output, label.explanations, label.worker) == ([1, 0, 2], ["good", "bad", "meh"], " lab ")
    assert label.labelled_by == worker_user.username and label.final_reward == 2.0
    # The single endpoint answers the same id for the same label: one code path.
    assert api.post(SINGLE, body, format="json").json() == label.pk


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        [{"rollout_id": 1}],
        "labels",
        {},
        {"labels": None},
        {"labels": {"rollout_id": 1}},
        {"labels": []},
        {"labels": [[1, 2]]},
        {"labels": ["x"]},
        {"labels": [{"rollout_id": 1}], "note": "\x00"},
    ],
)
def test_a_body_that_is_not_a_list_of_label_objects_is_refused_whole(api, body):
    make_rollout()
    response = api.post(BATCH, body, format="json")
    assert response.status_code == 400, response.content
    refused = response.json()
    assert isinstance(refused["detail"], str) and refused["code"] in ("invalid", "parse_error")
    assert not ProcessRewardLabel.objects.exists()


@pytest.mark.django_db
def test_items_that_are_not_objects_are_named_in_the_refusal(api):
    response = api.post(BATCH, {"labels": [{"rollout_id": 1}, 3]}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"]["labels"] == [LABEL_NOT_AN_OBJECT]


@pytest.mark.django_db
def test_at_most_the_batch_limit_is_taken(api, settings):
    settings.PROCESS_REWARD_LABEL_BATCH_MAX = 2
    rollouts = [make_rollout() for _ in range(3)]
    response = api.post(BATCH, {"labels": [label_body(r) for r in rollouts]}, format="json")
    assert response.status_code == 400
    assert "At most 2 labels" in response.json()["detail"]
    assert not ProcessRewardLabel.objects.exists()
    assert len(post_batch(api, [label_body(r) for r in rollouts[:2]])) == 2


@pytest.mark.django_db
def test_the_batch_wants_a_token_or_a_staff_session(django_user_model, staff_user):
    rollout = make_rollout()
    body = {"labels": [label_body(rollout)]}
    assert Client().post(BATCH, body, content_type="application/json").status_code == 401
    someone = Client()
    someone.force_login(django_user_model.objects.create_user(username="someone", password="a-long-test-password"))
    assert someone.post(BATCH, body, content_type="application/json").status_code == 403
    assert not ProcessRewardLabel.objects.exists()
    staff = Client()
    staff.force_login(staff_user)
    assert staff.post(BATCH, body, content_type="application/json").status_code == 200
    assert ProcessRewardLabel.objects.get().labelled_by == staff_user.username


# --- concurrency: real threads, each with its own database connection -------------------------------------------


def run_threads(targets) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(targets))

    def wrap(target):
        def run():
            try:
                barrier.wait()
                target()
            except BaseException as exc:  # surfaced by the caller: a thread's failure must fail the test
                errors.append(exc)
            finally:
                connection.close()

        return run

    threads = [threading.Thread(target=wrap(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_of_the_same_rollouts_store_one_label_each():
    rollouts = [make_rollout() for _ in range(20)]
    outcomes: dict[str, list] = {}

    def labeller(worker: str):
        def run():
            # Each thread its own order, so the batches cross.
            order = rollouts if worker != "b" else rollouts[::-1]
            bodies = [
                {"rollout_id": r.pk, "prm_output": [0.5, 0.5], "prm_version": "v1", "worker": worker} for r in order
            ]
            outcomes[worker] = label_create_each(bodies, labelled_by=f"account-{worker}")

        return run

    assert run_threads([labeller(w) for w in ("a", "b", "c", "d")]) == []
    per_rollout = Counter(ProcessRewardLabel.objects.filter(prm_version="v1").values_list("rollout_id", flat=True))
    assert per_rollout == Counter({r.pk: 1 for r in rollouts})
    stored = sum(1 for results in outcomes.values() for result in results if isinstance(result, tuple))
    refused = [result.code for results in outcomes.values() for result in results if not isinstance(result, tuple)]
    assert stored == 20 and Counter(refused) == Counter({"already_labelled": 60})


def new_token(name: str) -> str:
    return make_worker_token(get_user_model().objects.create_user(username=name))


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_through_the_live_server_never_store_two_labels_for_one_rollout(live_api_server):
    rollouts = [make_rollout() for _ in range(30)]
    tokens = {worker: new_token(f"account-{worker}") for worker in ("a", "b", "c")}
    answers: dict[str, list[dict]] = {}

    def labeller(worker: str):
        def run():
            with PrmsiteClient(live_api_server.url, tokens[worker], backoff_initial=0.05, backoff_max=0.5) as api:
                order = rollouts if worker != "b" else rollouts[::-1]
                bodies = [
                    {"rollout_id": r.pk, "prm_output": [0.5, 0.5], "prm_version": "v1", "worker": worker} for r in order
                ]
                answers[worker] = api.post_process_reward_labels(bodies, batch_size=7)

        return run

    assert run_threads([labeller(w) for w in tokens]) == []
    per_rollout = Counter(ProcessRewardLabel.objects.filter(prm_version="v1").values_list("rollout_id", flat=True))
    assert per_rollout == Counter({r.pk: 1 for r in rollouts})
    winners = {label.rollout_id: label.pk for label in ProcessRewardLabel.objects.all()}
    for worker, results in answers.items():
        assert len(results) == len(rollouts)
        order = rollouts if worker != "b" else rollouts[::-1]
        for rollout, result in zip(order, results, strict=True):
            if "status" in result:
                assert result["status"] == 409 and result["code"] == "already_labelled"
                assert result["id"] == winners[rollout.pk]
            else:
                assert result == {"id": winners[rollout.pk]}
    assert sum(1 for results in answers.values() for result in results if "status" not in result) == 30
