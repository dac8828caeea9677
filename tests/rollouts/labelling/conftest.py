"""Fixtures of the labelling tests: labellers (members of the "labellers" group), schemes, and helpers that drive
the labelling page the way its form does."""

from __future__ import annotations

import re
import sys

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from rollouts.labelling import rules
from rollouts.labels import label_create
from rollouts.models import LabellingScheme

PASSWORD = "a-long-test-password"


@pytest.fixture(autouse=True)
def offline_hub(tmp_path_factory, monkeypatch):
    """datasets writes its cache into a fresh folder and never reaches the hub."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hf_home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if "datasets.config" in sys.modules:
        config = sys.modules["datasets.config"]
        monkeypatch.setattr(config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_OFFLINE", True)
        monkeypatch.setattr(config, "HF_DATASETS_CACHE", hf_home / "datasets")


def labellers_group() -> Group:
    """The group the migration creates (created again here: a transactional test's flush empties the tables)."""
    group, _ = Group.objects.get_or_create(name="labellers")
    group.permissions.add(Permission.objects.get(content_type__app_label="rollouts", codename="label_rollouts"))
    return group


def make_labeller(username: str, **fields):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)
    user.groups.add(labellers_group())
    return user


def make_scheme(prm_version: str = "human-v1", **fields) -> LabellingScheme:
    values = {"title": "Human step labels", "instructions": "Rate **every** step."}
    values.update(fields)
    return LabellingScheme.objects.create(prm_version=prm_version, **values)


@pytest.fixture
def scheme(db):
    return make_scheme()


@pytest.fixture
def labeller(db):
    return make_labeller("ann")


@pytest.fixture
def labeller_client(client, labeller):
    client.force_login(labeller)
    return client


def rollout_url(scheme, rollout_id: int) -> str:
    return reverse("labelling:rollout", kwargs={"prm_version": scheme.prm_version, "rollout_id": rollout_id})


def next_url(scheme) -> str:
    return reverse("labelling:next", kwargs={"prm_version": scheme.prm_version})


def claim_next(client, scheme) -> int | None:
    """POST the scheme's "next" button; the rollout it led to (None: back to the scheme page)."""
    response = client.post(next_url(scheme))
    assert response.status_code == 302, response.status_code
    return rollout_id_of(response["Location"])


def rollout_id_of(location: str) -> int | None:
    match = re.search(r"/rollouts/(\d+)/$", location)
    return int(match.group(1)) if match else None


def visit_of(html: str) -> str:
    match = re.search(r'name="visit" value="([^"]*)"', html)
    assert match, "the page carries no visit token"
    return match.group(1)


def form_data(ratings, *, notes=None, action="submit", finish_reason="", bad_problem=False, visit="") -> dict:
    data = {"action": action, "finish_reason": finish_reason, "visit": visit}
    for index, rating in enumerate(ratings):
        data[f"rating_{index}"] = "" if rating is None else str(rating)
        data[f"note_{index}"] = (notes or [""] * len(ratings))[index]
    if bad_problem:
        data["bad_problem"] = "on"
    return data


def submit(client, scheme, rollout_id: int, ratings, **fields):
    """Open the labelling page (for its visit token) and post the form."""
    page = client.get(rollout_url(scheme, rollout_id))
    visit = visit_of(page.content.decode()) if page.status_code == 200 else ""
    return client.post(rollout_url(scheme, rollout_id), form_data(ratings, visit=visit, **fields))


def md_fragments(html: str) -> list[str]:
    """The inner HTML of every element whose class list holds "md" (where rendered model output and user text go)."""
    fragments = []
    for match in re.finditer(r'<div class="md[^"]*">', html):
        depth, position = 1, match.end()
        for tag in re.finditer(r"<(/?)div\b[^>]*>", html[position:]):
            depth += -1 if tag.group(1) else 1
            if depth == 0:
                fragments.append(html[position : position + tag.start()])
                break
    return fragments


def human_label(
    rollout, who, ratings, *, notes=None, finish_reason=None, bad_problem=False, seconds=None, version="human-v1"
):
    """Store ``who``'s label of ``rollout`` as the labelling page would: ratings -1/0/+1 (None: unrated) through the
    rules, with the attributes a person's label carries."""
    label = rules.label_from_ratings(
        ratings, notes or [""] * len(ratings), finish_reason=finish_reason, stop_at_first_error=False
    )
    attributes = {
        "mode": label.mode,
        "finish_reason": label.finish_reason,
        "bad_problem": bad_problem,
        "rated_steps": label.rated_steps,
    }
    if seconds is not None:
        attributes["seconds_spent"] = seconds
    return label_create(
        rollout_id=rollout.pk,
        prm_version=version,
        prm_output=label.prm_output,
        worker=who,
        labelled_by=who,
        explanations=label.explanations,
        attributes=attributes,
    )[0]
