"""The database keeps the domain sane on its own: constraints hold whatever code writes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from adapters.models import PRMAdapter
from forests.models import Forest, Node, text_sha256
from rollouts.models import ProcessRewardLabel, RolloutCheckout
from tests.factories import make_child, make_forest, make_label, make_rollout, make_root

pytestmark = pytest.mark.django_db


def test_forest_names_are_unique():
    make_forest("liar-test")
    with pytest.raises(IntegrityError), transaction.atomic():
        Forest.objects.create(name="liar-test")


def test_a_step_is_stored_once_per_parent():
    root = make_root(make_forest())
    make_child(root, "Step 1: read. ")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_child(root, "Step 1: read. ")


def test_the_same_step_may_follow_different_parents():
    root = make_root(make_forest())
    a, b = make_child(root, "A"), make_child(root, "B")
    assert make_child(a, "C").parent == a
    assert make_child(b, "C").parent == b


def test_two_roots_may_hold_the_same_prompt():
    forest = make_forest()
    make_root(forest, "same prompt")
    make_root(forest, "same prompt")
    assert Node.objects.filter(forest=forest, depth=0).count() == 2


def test_a_root_has_depth_zero_and_a_step_does_not():
    forest = make_forest()
    with pytest.raises(IntegrityError), transaction.atomic():
        Node.objects.create(forest=forest, depth=1, text="x", text_sha256=text_sha256("x"))
    root = make_root(forest)
    with pytest.raises(IntegrityError), transaction.atomic():
        Node.objects.create(forest=forest, parent=root, depth=0, text="y", text_sha256=text_sha256("y"))


def test_only_roots_carry_ground_truth():
    root = make_root(make_forest())
    with pytest.raises(IntegrityError), transaction.atomic():
        make_child(root, "step", ground_truth=1)


def test_deleting_a_forest_removes_its_nodes_but_keeps_rollouts():
    forest = make_forest()
    leaf = make_child(make_root(forest), "only step", is_leaf=True, prediction=0)
    rollout = make_rollout(forest=forest, node=leaf)
    forest.delete()
    assert not Node.objects.exists()
    rollout.refresh_from_db()
    assert rollout.forest is None and rollout.node is None


def test_a_repeated_label_from_the_same_worker_is_refused_by_the_database():
    rollout = make_rollout()
    make_label(rollout, "v1", worker="w")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_label(rollout, "v1", worker="w")
    make_label(rollout, "v1", worker="other-worker")
    make_label(rollout, "v2", worker="w")
    make_label(rollout, "v1", worker="w", labelled_by="another-account")  # another caller's worker of that name
    assert ProcessRewardLabel.objects.filter(rollout=rollout).count() == 4


def test_one_checkout_per_rollout_and_prm_version():
    rollout = make_rollout()
    later = timezone.now() + timedelta(minutes=10)
    RolloutCheckout.objects.create(rollout=rollout, prm_version="v1", expires_at=later)
    with pytest.raises(IntegrityError), transaction.atomic():
        RolloutCheckout.objects.create(rollout=rollout, prm_version="v1", expires_at=later)
    RolloutCheckout.objects.create(rollout=rollout, prm_version="v2", expires_at=later)


def test_deleting_a_rollout_removes_its_labels_and_checkouts():
    rollout = make_rollout()
    make_label(rollout)
    RolloutCheckout.objects.create(rollout=rollout, prm_version="v9", expires_at=timezone.now())
    rollout.delete()
    assert not ProcessRewardLabel.objects.exists()
    assert not RolloutCheckout.objects.exists()


def test_one_adapter_per_prm_version():
    fields = {"base_model": "tiny", "worker": "trainer", "file": "prm_adapters/x.zip", "sha256": "0" * 64, "size": 1}
    PRMAdapter.objects.create(prm_version="v1", **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        PRMAdapter.objects.create(prm_version="v1", **fields)


def test_adapter_size_cannot_be_negative():
    with pytest.raises(IntegrityError), transaction.atomic():
        PRMAdapter.objects.create(prm_version="v1", base_model="b", worker="w", file="f.zip", sha256="0" * 64, size=-1)


def test_rollout_is_correct_only_when_prediction_matches_ground_truth():
    assert make_rollout(prediction=1, ground_truth=1).is_correct
    assert not make_rollout(prediction=0, ground_truth=1).is_correct
    assert not make_rollout(prediction=None, ground_truth=1).is_correct
