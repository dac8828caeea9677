"""Several people take work from a scheme with gold items at the same time: each gets each gold item at most once,
the gold items' leases never collide, every rollout of the queue is labelled once, and no gold answer becomes a
label. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection
from django.utils import timezone

from rollouts.labelling import gold
from rollouts.labelling.selectors import scheme_get
from rollouts.labelling.services import LabelInput, label_submit, labelling_next
from rollouts.labels import label_create
from rollouts.models import GoldAnswer, ProcessRewardLabel, Rollout
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import make_labeller, make_scheme

PEOPLE = 4
NORMAL = 16
GOLD = 3
STEPS = ["one", "two", "three"]


@pytest.mark.django_db(transaction=True)
def test_people_taking_work_at_once_get_each_gold_item_at_most_once():
    scheme = make_scheme(gold_rate=0.5)
    people = [make_labeller(f"p{i}") for i in range(PEOPLE)]
    normal = [make_rollout(reasoning=STEPS) for _ in range(NORMAL)]
    gold_ids = []
    for _ in range(GOLD):
        rollout = make_rollout(reasoning=STEPS)
        gold.gold_mark(scheme=scheme, rollout_id=rollout.pk, ratings=[1, 1, 1])
        # Labelled before it was marked (K = 1): the queue has nothing of it to hand out, with or without scopes.
        label_create(rollout_id=rollout.pk, prm_version=scheme.prm_version, prm_output=[1, 1, 1], worker="zed")
        gold_ids.append(rollout.pk)
    handed: dict[str, list[int]] = {person.username: [] for person in people}
    errors: list[BaseException] = []
    start = threading.Barrier(PEOPLE)

    def take(person) -> None:
        try:
            mine = scheme_get(prm_version=scheme.prm_version)
            start.wait()
            while (rollout_id := labelling_next(scheme=mine, username=person.username, now=timezone.now())) is not None:
                handed[person.username].append(rollout_id)
                label_submit(
                    user=person,
                    scheme=mine,
                    rollout=Rollout.objects.get(pk=rollout_id),
                    data=LabelInput(ratings=[1, 1, -1], notes=["", "", ""]),
                    visit_started=None,
                    now=timezone.now(),
                )
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=take, args=(person,)) for person in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    for name, ids in handed.items():
        assert len(ids) == len(set(ids)), f"{name} got a rollout twice"
        assert set(ids) & set(gold_ids) == {
            answer.gold.rollout_id for answer in GoldAnswer.objects.filter(user__username=name).select_related("gold")
        }
    normal_handed = Counter(i for ids in handed.values() for i in ids if i not in gold_ids)
    assert normal_handed == Counter({rollout.pk: 1 for rollout in normal})
    assert GoldAnswer.objects.filter(answered_at__isnull=False, prm_output=[1, 1, 0]).count() == sum(
        len(set(ids) & set(gold_ids)) for ids in handed.values()
    )
    for ids in handed.values():  # at rate 0.5 every second rollout, while gold items are left for them
        normals = len([i for i in ids if i not in gold_ids])
        assert len(ids) - normals == min(GOLD, normals)
    assert not ProcessRewardLabel.objects.filter(rollout_id__in=gold_ids).exclude(worker="zed").exists()
