"""K labellers per rollout: a scheme asking for K hands each rollout to K different callers, never twice to one, and
takes K labels, one per caller; PRMs, AI judges and people share that queue."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from prmsite.core.errors import ConflictError
from rollouts.labels import label_create
from rollouts.models import LabellingScheme, ProcessRewardLabel, RolloutCheckout
from rollouts.queue import checkout_claim, checkout_release, lease_upsert
from rollouts.selectors import labels_per_rollout
from tests.factories import make_rollout

pytestmark = pytest.mark.django_db


@pytest.fixture
def scheme():
    return LabellingScheme.objects.create(prm_version="human-v1", title="Human labels", labels_per_rollout=2)


def claim(user, now, limit=10, version="human-v1"):
    return checkout_claim(prm_version=version, claimed_by=user, now=now, limit=limit).ids


def label(rollout, user, now, version="human-v1", values=(1, 0)):
    return label_create(
        rollout_id=rollout.pk, prm_version=version, prm_output=list(values), worker=user, labelled_by=user, now=now
    )


def test_a_version_without_a_scheme_is_labelled_once(scheme):
    assert labels_per_rollout(prm_version="prm-v3") == 1
    assert labels_per_rollout(prm_version="human-v1") == 2


def test_each_rollout_goes_to_k_different_people_never_twice_to_one(scheme):
    now = timezone.now()
    first, second = make_rollout(), make_rollout()
    assert claim("ann", now) == [first.pk, second.pk]
    assert claim("ann", now) == []  # she holds both already
    assert claim("bob", now) == [first.pk, second.pk]
    assert claim("cat", now) == []  # two people hold each: K = 2
    assert sorted(RolloutCheckout.objects.filter(rollout=first).values_list("slot", flat=True)) == [0, 1]


def test_labelling_ends_only_the_labellers_own_lease_and_k_labels_complete_the_rollout(scheme):
    now = timezone.now()
    rollout = make_rollout()
    claim("ann", now), claim("bob", now)
    label(rollout, "ann", now)
    assert list(RolloutCheckout.objects.values_list("claimed_by", flat=True)) == ["bob"]
    assert claim("ann", now) == []  # never twice to one
    assert claim("cat", now) == []  # ann's label and bob's lease fill K = 2
    label(rollout, "bob", now, values=(1, 1))
    assert ProcessRewardLabel.objects.filter(rollout=rollout).count() == 2
    assert claim("cat", now) == []
    with pytest.raises(ConflictError) as refused:
        label(rollout, "cat", now)
    assert refused.value.code == "already_labelled"


def test_a_second_label_by_the_same_person_is_refused_even_under_another_worker_name(scheme):
    now = timezone.now()
    rollout = make_rollout()
    claim("ann", now)
    label(rollout, "ann", now)
    with pytest.raises(ConflictError) as refused:
        label_create(
            rollout_id=rollout.pk, prm_version="human-v1", prm_output=[0, 0], worker="ann-2", labelled_by="ann", now=now
        )
    assert refused.value.code == "already_labelled"


def test_an_expired_lease_frees_its_slot_for_someone_else(scheme, settings):
    settings.PRM_CHECKOUT_TIMEOUT_S = 60
    now = timezone.now()
    rollout = make_rollout()
    claim("ann", now)
    claim("bob", now + timedelta(seconds=30))
    later = now + timedelta(seconds=61)  # ann's lease has expired, bob's has not
    assert claim("cat", later) == [rollout.pk]
    # cat took over ann's expired row (and slot): two rows, bob's and cat's.
    assert sorted(RolloutCheckout.objects.values_list("claimed_by", "slot")) == [("bob", 1), ("cat", 0)]
    # ann may not label any more: bob's and cat's live leases take both places.
    with pytest.raises(ConflictError) as refused:
        label(rollout, "ann", later)
    assert refused.value.code == "leased"
    label(rollout, "cat", later)


def test_someone_without_a_lease_may_label_while_there_is_room(scheme):
    now = timezone.now()
    rollout = make_rollout()
    claim("ann", now)
    _, created = label(rollout, "dan", now)  # one of two places is free
    assert created
    with pytest.raises(ConflictError) as refused:
        label(rollout, "eve", now)  # ann's lease holds the other one
    assert refused.value.code == "leased"


def test_rollouts_others_started_come_first_to_complete_sets_of_k(scheme):
    now = timezone.now()
    fresh, started = make_rollout(), make_rollout()
    claim("ann", now, limit=1)  # takes `fresh`
    checkout_release(prm_version="human-v1", rollout_ids=[fresh.pk], claimed_by="ann")
    label(started, "ann", now)
    assert claim("bob", now, limit=1) == [started.pk]


def test_the_k_rule_holds_in_the_lease_statement_too(scheme):
    now = timezone.now()
    rollout = make_rollout()
    label(rollout, "ann", now)
    label(rollout, "bob", now)
    leased = lease_upsert(
        rollout_ids=[rollout.pk],
        prm_version="human-v1",
        claimed_by="cat",
        now=now,
        slots={rollout.pk: 0},
        labels_wanted=2,
    )
    assert leased == set()
    two = make_rollout()
    label(two, "ann", now)
    assert (
        lease_upsert(
            rollout_ids=[two.pk], prm_version="human-v1", claimed_by="ann", now=now, slots={two.pk: 0}, labels_wanted=2
        )
        == set()
    )
    assert lease_upsert(
        rollout_ids=[two.pk], prm_version="human-v1", claimed_by="bob", now=now, slots={two.pk: 0}, labels_wanted=2
    ) == {two.pk}


def test_the_api_and_people_share_the_queue_of_a_scheme(scheme, api):
    rollout = make_rollout()
    now = timezone.now()
    assert claim("ann", now) == [rollout.pk]
    assert [r["id"] for r in api.get("/rollout", {"prm_version": "human-v1"}).json()] == [rollout.pk]
    assert api.get("/rollout", {"prm_version": "human-v1"}).json() == []
    body = {"rollout_id": rollout.pk, "prm_output": [1, 1], "prm_version": "human-v1", "worker": "judge"}
    assert api.post("/process_reward_label", body, format="json").status_code == 200
    assert ProcessRewardLabel.objects.get().labelled_by == "worker-1"
