"""Every admin page renders for staff and is refused to anyone else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from adapters.models import PRMAdapter
from forests.models import Forest
from rollouts.models import Adjudication, GoldItem, LabelDraft, LabellingScheme, RolloutCheckout
from tests.factories import make_child, make_forest, make_label, make_rollout, make_root

pytestmark = pytest.mark.django_db

PROJECT_APPS = {"forests", "rollouts", "adapters"}
PROJECT_MODELS = [m for m in admin.site._registry if m._meta.app_label in PROJECT_APPS]


@pytest.fixture
def one_of_each(django_user_model):
    forest = make_forest("demo-forest", config_name="liar", dataset_split="test")
    root = make_root(forest, "A statement <b>bold</b>", ground_truth=1)
    leaf = make_child(make_child(root, "Step 1"), "Verdict: True (code: 1)", is_leaf=True, prediction=1)
    rollout = make_rollout(forest=forest, node=leaf, prediction=1, ground_truth=1)
    make_label(rollout)
    RolloutCheckout.objects.create(rollout=rollout, prm_version="v2", expires_at=timezone.now() + timedelta(minutes=5))
    scheme = LabellingScheme.objects.create(prm_version="human-v1", title="People", instructions="Rate **every** step.")
    other = make_rollout(reasoning=["a", "b"])
    GoldItem.objects.create(scheme=scheme, rollout=other, prm_output=[1, 0], rated_steps=2)
    Adjudication.objects.create(
        scheme=scheme,
        rollout=rollout,
        prm_output=[1, 2],
        rated_steps=1,
        reason="ann is right",
        decided_at=timezone.now(),
    )
    labeller = django_user_model.objects.create_user(username="labeller")
    LabelDraft.objects.create(user=labeller, prm_version="human-v1", rollout=rollout, ratings=[1, None])
    PRMAdapter.objects.create(
        prm_version="v1", base_model="tiny", worker="trainer", file="prm_adapters/a.zip", sha256="a" * 64, size=2048
    )
    return forest


def test_every_project_model_is_in_the_admin():
    names = {m._meta.model_name for m in PROJECT_MODELS}
    assert names == {
        "forest",
        "node",
        "rollout",
        "processrewardlabel",
        "rolloutcheckout",
        "prmadapter",
        "labellingscheme",
        "labeldraft",
        "golditem",
        "adjudication",
    }


@pytest.mark.parametrize("model", PROJECT_MODELS, ids=lambda m: m._meta.label)
def test_changelist_and_change_page_render_for_staff(staff_client, one_of_each, model):
    opts = model._meta
    changelist = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert changelist.status_code == 200
    obj = model.objects.order_by("pk").first()
    change = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
    assert change.status_code == 200
    add = staff_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
    # Some models are written by the application only (a labeller's draft): their admin refuses to add one.
    may_add = admin.site._registry[model].has_add_permission(changelist.wsgi_request)
    assert add.status_code == (200 if may_add else 403)


@pytest.mark.parametrize("model", PROJECT_MODELS, ids=lambda m: m._meta.label)
def test_admin_pages_are_refused_to_anonymous_users(client, one_of_each, model):
    opts = model._meta
    obj = model.objects.order_by("pk").first()
    for url in (
        reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_admin_pages_are_refused_to_logged_in_non_staff(client, django_user_model, one_of_each):
    user = django_user_model.objects.create_user(username="worker", password="a-long-test-password")
    client.force_login(user)
    response = client.get(reverse("admin:forests_forest_changelist"))
    assert response.status_code == 302


def test_forest_page_shows_its_counts(staff_client, one_of_each):
    response = staff_client.get(reverse("admin:forests_forest_change", args=[one_of_each.pk]))
    assert b"1 trees, 3 nodes, 1 leaves, 1 rollouts" in response.content


def test_forest_changelist_shows_tree_and_rollout_counts(staff_client, one_of_each):
    make_root(Forest.objects.get(name="demo-forest"), "second item")
    response = staff_client.get(reverse("admin:forests_forest_changelist"))
    row = response.content.decode()
    assert "demo-forest" in row
    assert '<td class="field-tree_count">2</td>' in row
    assert '<td class="field-rollout_count">1</td>' in row


def test_node_text_is_escaped_in_the_admin(staff_client, one_of_each):
    response = staff_client.get(reverse("admin:forests_node_changelist"))
    assert b"<b>bold</b>" not in response.content
    assert b"&lt;b&gt;bold&lt;/b&gt;" in response.content
