"""The labelling pages: who may see them, the labelling flow through the form (no JavaScript), drafts, expired
leases, skipping, the K-overlap rule and the queue shared with API workers."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from rollouts.models import LabelDraft, LabelSkip, ProcessRewardLabel, RolloutCheckout
from tests.factories import make_label, make_rollout
from tests.rollouts.labelling.conftest import (
    PASSWORD,
    claim_next,
    form_data,
    make_labeller,
    make_scheme,
    next_url,
    rollout_url,
    submit,
    visit_of,
)

pytestmark = pytest.mark.django_db


def pages(scheme, rollout_id):
    v = scheme.prm_version
    return [
        reverse("labelling:schemes"),
        reverse("labelling:scheme", kwargs={"prm_version": v}),
        rollout_url(scheme, rollout_id),
        reverse("labelling:stats", kwargs={"prm_version": v}),
        reverse("labelling:export", kwargs={"prm_version": v}),
    ]


def test_anonymous_visitors_are_sent_to_the_labelling_login_page(client, scheme):
    rollout = make_rollout()
    for url in pages(scheme, rollout.pk):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("labelling:login") + "?next="), url
    assert client.post(next_url(scheme))["Location"].startswith(reverse("labelling:login"))
    assert not RolloutCheckout.objects.exists()


def test_a_user_without_the_permission_is_refused_and_told_whom_to_ask(client, scheme):
    rollout = make_rollout()
    client.force_login(get_user_model().objects.create_user(username="visitor", password=PASSWORD))
    for url in pages(scheme, rollout.pk):
        response = client.get(url)
        assert response.status_code == 403, url
    response = client.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))
    assert "labellers" in response.content.decode()
    assert client.post(next_url(scheme)).status_code == 403
    assert not RolloutCheckout.objects.exists()


def test_a_labeller_sees_the_labelling_pages_but_not_the_staff_pages(labeller_client, scheme):
    listing = labeller_client.get(reverse("labelling:schemes"))
    assert listing.status_code == 200
    assert scheme.title in listing.content.decode()
    detail = labeller_client.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))
    assert detail.status_code == 200
    assert "<strong>every</strong>" in detail.content.decode()  # the instructions, as markdown
    assert (
        labeller_client.get(reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version})).status_code == 403
    )
    assert (
        labeller_client.get(reverse("labelling:export", kwargs={"prm_version": scheme.prm_version})).status_code == 403
    )


def test_staff_see_the_staff_pages_and_need_the_permission_to_label(client, scheme, django_user_model):
    staff = django_user_model.objects.create_user(username="lead", password=PASSWORD, is_staff=True)
    client.force_login(staff)
    assert client.get(reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version})).status_code == 200
    listing = client.get(reverse("labelling:schemes"))
    assert listing.status_code == 200
    assert reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version}) in listing.content.decode()
    assert client.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version})).status_code == 403


def test_a_superuser_may_label(staff_client, scheme):
    make_rollout()
    assert claim_next(staff_client, scheme) is not None


def test_an_unknown_scheme_is_a_404(labeller_client):
    assert labeller_client.get(reverse("labelling:scheme", kwargs={"prm_version": "nope"})).status_code == 404


def test_the_migration_creates_the_labellers_group_with_the_permission(db):
    migration = importlib.import_module("rollouts.migrations.0007_labellers_group")
    Group.objects.filter(name="labellers").delete()
    migration.create_group(apps, None)
    migration.create_group(apps, None)  # again: nothing doubles
    group = Group.objects.get(name="labellers")
    assert list(group.permissions.values_list("codename", flat=True)) == ["label_rollouts"]
    user = get_user_model().objects.create_user(username="new-labeller")
    user.groups.add(group)
    assert get_user_model().objects.get(pk=user.pk).has_perm("rollouts.label_rollouts")


def test_a_labeller_logs_in_on_the_labelling_login_page(client, labeller):
    page = client.get(reverse("labelling:login"))
    assert page.status_code == 200
    response = client.post(reverse("labelling:login"), {"username": "ann", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == reverse("labelling:schemes")
    assert client.get(reverse("labelling:schemes")).status_code == 200


def test_claiming_needs_a_post_and_a_csrf_token(labeller, scheme):
    make_rollout()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(labeller)
    assert browser.get(next_url(scheme)).status_code == 405
    assert browser.post(next_url(scheme)).status_code == 403
    assert not RolloutCheckout.objects.exists()


def test_label_two_rollouts_through_the_form_and_the_codes_are_stored(labeller_client, scheme):
    first = make_rollout(reasoning=["a", "b", "c"], example="Is **7** prime?", prediction=1, ground_truth=1)
    second = make_rollout(reasoning=["x", "y"])
    assert claim_next(labeller_client, scheme) == first.pk
    page = labeller_client.get(rollout_url(scheme, first.pk))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Is <strong>7</strong> prime?" in html
    assert "Ground truth" in html and "right</span>" in html
    response = submit(labeller_client, scheme, first.pk, [1, 0, -1], notes=["", "", "7 is prime"])
    assert response.status_code == 302
    assert response["Location"] == rollout_url(scheme, second.pk)  # the next rollout, claimed for you
    label = ProcessRewardLabel.objects.get(rollout=first)
    assert label.prm_output == [1, 2, 0]
    assert label.explanations == ["", "", "7 is prime"]
    assert (label.worker, label.labelled_by, label.prm_version) == ("ann", "ann", "human-v1")
    assert label.attributes["finish_reason"] == "found_error"
    assert label.attributes["rated_steps"] == 3
    assert label.attributes["mode"] == "all_steps"
    assert label.attributes["bad_problem"] is False
    assert label.attributes["seconds_spent"] >= 0
    response = submit(labeller_client, scheme, second.pk, [1, 1], bad_problem=True, finish_reason="solution")
    assert response["Location"] == reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version})
    assert ProcessRewardLabel.objects.get(rollout=second).attributes["bad_problem"] is True
    followed = labeller_client.get(response["Location"])
    assert "Nothing left for you to label" in followed.content.decode()
    assert not RolloutCheckout.objects.exists()


def test_next_resumes_the_rollout_you_hold_instead_of_claiming_another(labeller_client, scheme):
    first, _ = make_rollout(), make_rollout()
    assert claim_next(labeller_client, scheme) == first.pk
    assert claim_next(labeller_client, scheme) == first.pk
    assert RolloutCheckout.objects.count() == 1


def test_invalid_ratings_are_shown_back_with_what_to_fix(labeller_client, scheme):
    rollout = make_rollout(reasoning=["a", "b", "c"])
    claim_next(labeller_client, scheme)
    response = submit(labeller_client, scheme, rollout.pk, [1, None, 1], notes=["kept", "", ""])
    html = response.content.decode()
    assert response.status_code == 400
    assert "Step 2 is not rated but step 3 is" in html
    assert 'name="rating_0" value="1" checked' in html and ">kept</textarea>" in html
    assert not ProcessRewardLabel.objects.exists()


def test_stop_at_first_error_stores_the_steps_after_it_as_unrated_neutral(client, labeller):
    scheme = make_scheme("human-phase2", stop_at_first_error=True)
    rollout = make_rollout(reasoning=["a", "b", "c", "d"])
    client.force_login(labeller)
    claim_next(client, scheme)
    response = submit(client, scheme, rollout.pk, [1, -1, 1, None])
    assert response.status_code == 302
    label = ProcessRewardLabel.objects.get()
    assert label.prm_output == [1, 0, 2, 2]
    assert label.attributes["rated_steps"] == 2
    assert label.attributes["mode"] == "stop_at_first_error"
    assert label.attributes["finish_reason"] == "found_error"


def test_a_draft_is_kept_on_the_server_and_shown_in_another_browser(labeller_client, labeller, scheme):
    rollout = make_rollout(reasoning=["a", "b", "c"])
    claim_next(labeller_client, scheme)
    data = form_data([1, -1, None], notes=["", "here it goes wrong", ""], action="save", bad_problem=True)
    response = labeller_client.post(rollout_url(scheme, rollout.pk), data)
    assert response.status_code == 302
    draft = LabelDraft.objects.get()
    assert (draft.ratings, draft.notes, draft.bad_problem) == ([1, -1, None], ["", "here it goes wrong", ""], True)
    other_browser = Client()
    other_browser.force_login(labeller)
    html = other_browser.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert 'name="rating_0" value="1" checked' in html
    assert 'name="rating_1" value="-1" checked' in html
    assert 'name="rating_2" value="" checked' in html
    assert ">here it goes wrong</textarea>" in html
    assert 'name="bad_problem" checked' in html
    listing = other_browser.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))
    assert f"Rollout #{rollout.pk}" in listing.content.decode()
    submit(other_browser, scheme, rollout.pk, [1, -1, 1])
    assert not LabelDraft.objects.exists()


def test_a_script_save_answers_json_and_renews_the_lease(labeller_client, scheme, settings):
    settings.PRM_CHECKOUT_TIMEOUT_S = 600
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    lease = RolloutCheckout.objects.get()
    RolloutCheckout.objects.filter(pk=lease.pk).update(expires_at=timezone.now() + timedelta(seconds=30))
    response = labeller_client.post(
        rollout_url(scheme, rollout.pk), form_data([1, None], action="save"), HTTP_ACCEPT="application/json"
    )
    answer = response.json()
    assert response.status_code == 200
    assert answer["saved"] is True and answer["labelled"] is False
    assert answer["visit"]
    assert RolloutCheckout.objects.get().expires_at > timezone.now() + timedelta(seconds=500)
    assert answer["lease_expires_at"] == RolloutCheckout.objects.get().expires_at.isoformat()


def test_a_save_sent_after_the_submit_keeps_no_draft(labeller_client, scheme):
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    submit(labeller_client, scheme, rollout.pk, [1, 1])
    late = labeller_client.post(
        rollout_url(scheme, rollout.pk), form_data([1, 1], action="save"), HTTP_ACCEPT="application/json"
    )
    assert late.json()["labelled"] is True
    assert not LabelDraft.objects.exists()
    # The page now shows the stored label, read-only.
    html = labeller_client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert "You labelled this rollout" in html and 'name="rating_0"' not in html


def test_an_expired_lease_taken_by_someone_else_is_reported_and_the_work_kept(client, scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    rollout = make_rollout(reasoning=["a", "b"])
    client.force_login(ann)
    claim_next(client, scheme)
    page = client.get(rollout_url(scheme, rollout.pk))
    RolloutCheckout.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # ann's lease ran out
    other = Client()
    other.force_login(bob)
    assert claim_next(other, scheme) == rollout.pk  # … and bob took the rollout
    data = form_data([1, -1], notes=["fine", "wrong sign"], visit=visit_of(page.content.decode()))
    response = client.post(rollout_url(scheme, rollout.pk), data)
    html = response.content.decode()
    assert response.status_code == 409
    assert "Your work was not stored" in html and "checked out" in html
    assert 'name="rating_1" value="-1" checked' in html and ">wrong sign</textarea>" in html
    draft = LabelDraft.objects.get(user=ann)
    assert draft.ratings == [1, -1] and draft.notes == ["fine", "wrong sign"]
    assert not ProcessRewardLabel.objects.exists()
    # Coming back later, ann still finds her draft, with the lease reported as ended.
    again = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert 'id="lease-lost"' in again and ">wrong sign</textarea>" in again


def test_an_expired_lease_nobody_took_still_accepts_the_label(labeller_client, scheme):
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    labeller_client.post(rollout_url(scheme, rollout.pk), form_data([1, None], action="save"))
    RolloutCheckout.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    html = labeller_client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert 'id="lease-lost"' in html
    response = submit(labeller_client, scheme, rollout.pk, [1, 1])
    assert response.status_code == 302
    assert ProcessRewardLabel.objects.get().prm_output == [1, 1]


def test_a_rollout_not_checked_out_to_you_is_not_shown(client, scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    rollout = make_rollout()
    client.force_login(ann)
    claim_next(client, scheme)
    other = Client()
    other.force_login(bob)
    response = other.get(rollout_url(scheme, rollout.pk))
    assert response.status_code == 302
    assert "not checked out to you" in other.get(response["Location"]).content.decode()


def test_skip_gives_the_rollout_back_and_takes_another(client, scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    first, second = make_rollout(), make_rollout()
    client.force_login(ann)
    claim_next(client, scheme)
    client.post(rollout_url(scheme, first.pk), form_data([1, None], action="save"))
    response = client.post(rollout_url(scheme, first.pk), form_data([1, None], action="skip"))
    assert response["Location"] == rollout_url(scheme, second.pk)
    assert list(RolloutCheckout.objects.values_list("rollout_id", "claimed_by")) == [(second.pk, "ann")]
    assert LabelDraft.objects.get().ratings == [1, None]  # the draft is kept for when it comes back
    assert LabelSkip.objects.get().rollout_id == first.pk
    other = Client()
    other.force_login(bob)
    assert claim_next(other, scheme) == first.pk


def test_k_labellers_per_rollout_through_the_pages_never_twice_to_one(scheme):
    scheme.labels_per_rollout = 2
    scheme.save()
    first, second = make_rollout(), make_rollout()
    browsers = {}
    for name in ("ann", "bob", "cat"):
        browsers[name] = Client()
        browsers[name].force_login(make_labeller(name))
    assert claim_next(browsers["ann"], scheme) == first.pk
    assert claim_next(browsers["bob"], scheme) == first.pk  # a rollout others started comes first
    assert claim_next(browsers["cat"], scheme) == second.pk  # two people hold the first: K = 2
    after_ann = submit(browsers["ann"], scheme, first.pk, [1, 1])
    assert after_ann["Location"] == rollout_url(scheme, second.pk)  # never the first again
    after_bob = submit(browsers["bob"], scheme, first.pk, [1, -1])
    assert after_bob["Location"].endswith(f"/label/{scheme.prm_version}/")  # the second has its two people
    submit(browsers["cat"], scheme, second.pk, [-1, -1])
    submit(browsers["ann"], scheme, second.pk, [1, 1])
    labels = sorted(ProcessRewardLabel.objects.values_list("rollout_id", "labelled_by"))
    assert labels == sorted([(first.pk, "ann"), (first.pk, "bob"), (second.pk, "cat"), (second.pk, "ann")])
    assert claim_next(browsers["ann"], scheme) is None
    assert claim_next(browsers["cat"], scheme) is None  # both rollouts have their two labels
    assert not RolloutCheckout.objects.exists()


def test_people_and_api_workers_share_one_queue(labeller_client, scheme, api):
    first, second = make_rollout(), make_rollout()
    handed = api.get("/rollout", {"prm_version": scheme.prm_version, "limit": 1}).json()
    assert [r["id"] for r in handed] == [first.pk]
    assert claim_next(labeller_client, scheme) == second.pk
    assert api.get("/rollout", {"prm_version": scheme.prm_version}).json() == []
    body = {"rollout_id": second.pk, "prm_output": [1, 1], "prm_version": scheme.prm_version, "worker": "judge"}
    refused = api.post("/process_reward_label", body, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "leased"


def test_a_closed_scheme_hands_out_nothing_but_takes_the_work_in_hand(labeller_client, scheme):
    held, _ = make_rollout(), make_rollout()
    claim_next(labeller_client, scheme)
    scheme.is_open = False
    scheme.save()
    response = submit(labeller_client, scheme, held.pk, [1, 1])
    assert response["Location"].endswith(f"/label/{scheme.prm_version}/")
    assert ProcessRewardLabel.objects.count() == 1
    refused = labeller_client.post(next_url(scheme))
    assert "The scheme &#x27;human-v1&#x27; is closed" in labeller_client.get(refused["Location"]).content.decode()
    assert RolloutCheckout.objects.count() == 0


def test_a_note_too_long_is_refused_naming_its_step_and_nothing_is_lost(labeller_client, scheme):
    rollout = make_rollout(reasoning=["a", "b"])
    claim_next(labeller_client, scheme)
    response = submit(labeller_client, scheme, rollout.pk, [1, 1], notes=["short", "x" * 5001])
    html = response.content.decode()
    assert response.status_code == 400
    assert "Step 2, note: Ensure this value has at most 5000 characters" in html
    assert ">short</textarea>" in html and 'name="rating_1" value="1" checked' in html
    assert not ProcessRewardLabel.objects.exists()


def test_an_active_learning_scheme_hands_out_first_what_the_reference_prm_gets_wrong(labeller_client):
    scheme = make_scheme("human-al", active_learning=True, reference_prm_version="prm-ref")
    agreed = make_rollout(prediction=0, ground_truth=0)  # right, and the PRM says so
    disputed = make_rollout(prediction=1, ground_truth=0)  # wrong, but the PRM is sure it is right
    make_label(agreed, prm_version="prm-ref", prm_output=[0.9, 0.9], final_reward=0.9)
    make_label(disputed, prm_version="prm-ref", prm_output=[0.9, 0.95], final_reward=0.95)
    assert claim_next(labeller_client, scheme) == disputed.pk
