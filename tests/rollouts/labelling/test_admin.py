"""Staff manage schemes in the admin: the version must name a page, the creator is recorded, the list links to the
scheme's pages; drafts are visible but not editable."""

from __future__ import annotations

import pytest
from django.urls import reverse

from rollouts.models import LabelDraft, LabellingScheme
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import make_labeller, make_scheme

pytestmark = pytest.mark.django_db


def add(client, prm_version: str):
    return client.post(
        reverse("admin:rollouts_labellingscheme_add"),
        {
            "prm_version": prm_version,
            "title": "People",
            "instructions": "",
            "labels_per_rollout": 2,
            "reference_prm_version": "",
            "is_open": "on",
            "scope_models": "",
            "scope_outcome": "",
            "gold_rate": "0",
        },
    )


def test_staff_create_a_scheme_whose_version_names_its_pages(staff_client, staff_user):
    response = add(staff_client, "human-v2")
    assert response.status_code == 302
    scheme = LabellingScheme.objects.get(prm_version="human-v2")
    assert (scheme.labels_per_rollout, scheme.created_by) == (2, staff_user)
    listing = staff_client.get(reverse("admin:rollouts_labellingscheme_changelist")).content.decode()
    assert reverse("labelling:stats", kwargs={"prm_version": "human-v2"}) in listing


@pytest.mark.parametrize("name", ["human/v2", "human v2", "login", "-x"])
def test_a_version_that_cannot_name_a_page_is_refused(staff_client, name):
    response = add(staff_client, name)
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()
    assert not LabellingScheme.objects.exists()


def test_drafts_are_listed_for_staff_but_not_editable(staff_client):
    make_scheme()
    LabelDraft.objects.create(user=make_labeller("ann"), prm_version="human-v1", rollout=make_rollout(), ratings=[1])
    draft = LabelDraft.objects.get()
    assert staff_client.get(reverse("admin:rollouts_labeldraft_changelist")).status_code == 200
    assert staff_client.get(reverse("admin:rollouts_labeldraft_add")).status_code == 403
    change = staff_client.post(reverse("admin:rollouts_labeldraft_change", args=[draft.pk]), {"ratings": "[-1]"})
    assert change.status_code == 403
    assert LabelDraft.objects.get().ratings == [1]
