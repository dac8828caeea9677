"""From the admin, staff seed a forest from a config, see its progress and pages, and delete it cheaply."""

from __future__ import annotations

import pytest
from django.urls import reverse

from forests.models import Forest, Node
from forests.trie import forest_rollout_insert
from rollouts.models import Rollout
from tests.factories import make_child, make_forest, make_rollout, make_root
from tests.forests.conftest import LIAR_ROWS, write_jsonl
from tests.forests.test_configs import TEAM_CONFIG

pytestmark = pytest.mark.django_db

ADD = reverse("admin:forests_forest_add")


def test_the_add_page_is_a_seed_form_listing_the_discovered_configs(staff_client, config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    response = staff_client.get(ADD)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Seed a forest" in html
    for name in ("liar", "grade_school_math", "liar_demo", "team_task"):
        assert f'<option value="{name}"' in html


def test_posting_the_form_seeds_a_forest_and_opens_it(staff_client, liar_file, settings):
    settings.PRM_DATASET_DIRS = [str(liar_file.parent)]
    response = staff_client.post(
        ADD,
        {
            "config_name": "liar",
            "dataset_split": "test",
            "forest_name_suffix": "admin",
            "limit": "3",
            "dataset_name": str(liar_file),
        },
    )
    forest = Forest.objects.get(name="liar-test-admin")
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:forests_forest_change", args=[forest.pk])
    assert Node.objects.filter(forest=forest, depth=0).count() == 3
    assert forest.config_source and len(forest.config_sha256) == 64
    page = staff_client.get(response["Location"]).content.decode()
    assert "Seeded forest liar-test-admin with 3 trees." in page
    assert "3 trees, 3 nodes, 0 leaves, 0 rollouts" in page
    assert 'href="/forests/liar-test-admin/"' in page


def test_a_seeding_error_is_shown_on_the_form_and_creates_nothing(staff_client, tmp_path, settings):
    settings.PRM_DATASET_DIRS = [str(tmp_path)]
    response = staff_client.post(
        ADD, {"config_name": "liar", "dataset_split": "test", "dataset_name": str(tmp_path / "missing.jsonl")}
    )
    assert response.status_code == 200
    assert "does not exist" in response.content.decode()
    assert not Forest.objects.exists()


def test_a_bad_suffix_is_a_form_error(staff_client):
    data = {"config_name": "liar_demo", "dataset_split": "test", "forest_name_suffix": "a/b"}
    response = staff_client.post(ADD, data)
    assert response.status_code == 200
    assert not Forest.objects.exists()


def test_the_demo_config_seeds_from_the_admin(staff_client):
    staff_client.post(ADD, {"config_name": "liar_demo", "dataset_split": "test", "forest_name_suffix": "d"})
    assert Node.objects.filter(forest__name="liar_demo-test-d").count() == 20


def test_the_add_page_is_refused_to_non_staff(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="u", password="a-long-test-password"))
    assert client.get(ADD).status_code == 302
    assert client.post(ADD, {"config_name": "liar_demo", "dataset_split": "test"}).status_code == 302
    assert not Forest.objects.exists()


def test_the_change_page_shows_progress_and_accuracy(staff_client):
    forest = make_forest("p-forest")
    make_root(forest, "two", ground_truth=0)
    make_root(forest, "one", ground_truth=1)
    forest_rollout_insert(forest_name="p-forest", example="one", steps=["a", "b"], prediction=1)
    forest_rollout_insert(forest_name="p-forest", example="one", steps=["a", "c"], prediction=0)
    html = staff_client.get(reverse("admin:forests_forest_change", args=[forest.pk])).content.decode()
    assert "1 of 2 trees have rollouts; accuracy so far 0.500 (1/2 rollouts correct)" in html


@pytest.fixture
def forest_with_rollouts():
    forest = make_forest("doomed")
    root = make_root(forest, "prompt")
    leaf = make_child(make_child(root, "s1"), "s2", is_leaf=True, prediction=0)
    rollout = make_rollout(forest=forest, node=leaf)
    keeper = make_forest("keeper")
    make_child(make_root(keeper, "other"), "kept step")
    return forest, rollout


def test_the_delete_confirmation_summarises_instead_of_listing_nodes(
    staff_client, forest_with_rollouts, django_assert_max_num_queries
):
    forest, _ = forest_with_rollouts
    for i in range(30):
        make_child(Node.objects.get(forest=forest, depth=0), f"extra {i}")
    with django_assert_max_num_queries(12):
        response = staff_client.get(reverse("admin:forests_forest_delete", args=[forest.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert "33 nodes of this forest" in html
    assert "1 rollouts are kept, detached from the forest" in html
    assert "extra 7" not in html  # nodes are counted, not listed


def test_deleting_a_forest_removes_its_nodes_and_keeps_its_rollouts(staff_client, forest_with_rollouts):
    forest, rollout = forest_with_rollouts
    response = staff_client.post(reverse("admin:forests_forest_delete", args=[forest.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not Forest.objects.filter(name="doomed").exists()
    assert not Node.objects.filter(forest_id=forest.pk).exists()
    rollout.refresh_from_db()
    assert rollout.forest_id is None and rollout.node_id is None
    assert Node.objects.filter(forest__name="keeper").count() == 2


def test_the_bulk_delete_action_uses_the_same_delete(staff_client, forest_with_rollouts):
    forest, rollout = forest_with_rollouts
    other = make_forest("also-doomed")
    make_root(other, "x")
    changelist = reverse("admin:forests_forest_changelist")
    ids = [str(forest.pk), str(other.pk)]
    confirm = staff_client.post(changelist, {"action": "delete_selected", "_selected_action": ids})
    assert confirm.status_code == 200
    assert "4 nodes of these forests" in confirm.content.decode()
    done = staff_client.post(changelist, {"action": "delete_selected", "_selected_action": ids, "post": "yes"})
    assert done.status_code == 302
    assert set(Forest.objects.values_list("name", flat=True)) == {"keeper"}
    assert Node.objects.count() == 2
    assert Rollout.objects.filter(pk=rollout.pk, forest__isnull=True, node__isnull=True).exists()


def test_a_forests_name_cannot_be_changed_in_the_admin(staff_client):
    forest = make_forest("fixed-name", config_name="liar", dataset_split="test")
    url = reverse("admin:forests_forest_change", args=[forest.pk])
    response = staff_client.post(url, {"name": "other/name", "rollout_config": "{}", "attributes": '{"k": 1}'})
    assert response.status_code == 302
    forest.refresh_from_db()
    assert forest.name == "fixed-name"
    assert forest.attributes == {"k": 1}


@pytest.mark.parametrize("location", ["/etc/passwd.csv", "../../../../etc/hostname.jsonl", "{outside}"])
def test_the_form_reads_local_datasets_only_from_the_configured_folders(staff_client, settings, tmp_path, location):
    # The form runs with the server's permissions: it must not read files outside PRM_DATASET_DIRS.
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = write_jsonl(tmp_path / "outside" / "test.jsonl", LIAR_ROWS)
    (allowed / "link.jsonl").symlink_to(outside)
    settings.PRM_DATASET_DIRS = [str(allowed)]
    for value in (location.format(outside=outside), str(allowed / "link.jsonl")):
        response = staff_client.post(ADD, {"config_name": "liar", "dataset_split": "test", "dataset_name": value})
        assert response.status_code == 200
        assert "PRM_DATASET_DIRS" in response.content.decode()
    assert not Forest.objects.exists()
