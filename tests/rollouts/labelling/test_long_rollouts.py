"""A rollout as long as the server stores (issue 17, item 4): from 499 steps on, the labelling form had more fields
than Django's DATA_UPLOAD_MAX_NUMBER_FIELDS (1,000), so save, submit and skip all answered 400 and *next* handed the
same rollout back: the labeller was stuck until the lease ended. The form is posted here as a browser without
JavaScript posts it (urlencoded, a rating and a note per step), through the real views; the page's script posts the
same encoding. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from rollouts.labelling.bounded_form import FORM_TOO_LARGE, FORM_TOO_MANY_FIELDS, label_form_fields_max
from rollouts.models import LabelDraft, ProcessRewardLabel, RolloutCheckout
from tests.factories import make_rollout
from tests.rollouts.labelling.conftest import claim_next, form_data, make_labeller, rollout_url, visit_of

pytestmark = pytest.mark.django_db

URLENCODED = "application/x-www-form-urlencoded"


def post_form(client, url: str, data: dict, **extra):
    """POST ``data`` as a browser posts a form: urlencoded."""
    return client.post(url, urlencode(data, doseq=True), content_type=URLENCODED, **extra)


def skip_url(scheme, rollout_id: int) -> str:
    return reverse("labelling:skip", kwargs={"prm_version": scheme.prm_version, "rollout_id": rollout_id})


@pytest.fixture
def longest(settings):
    """A rollout with as many steps as the server stores (PRM_ROLLOUT_MAX_STEPS, 1,000 by default)."""
    return make_rollout(reasoning=[f"Step {i}. " for i in range(settings.PRM_ROLLOUT_MAX_STEPS)])


def test_the_bound_fits_the_longest_rollout_and_no_more(settings):
    assert settings.PRM_ROLLOUT_MAX_STEPS == 1000
    fields = len(form_data([1] * 1000, visit="v", bad_problem=True)) + 2  # and the CSRF token and resume
    assert settings.DATA_UPLOAD_MAX_NUMBER_FIELDS < fields <= label_form_fields_max()
    assert label_form_fields_max() <= 2 * settings.PRM_ROLLOUT_MAX_STEPS + 16


def test_a_1000_step_rollout_is_drafted_then_submitted_through_the_form(labeller_client, scheme, longest):
    steps = len(longest.reasoning)
    assert claim_next(labeller_client, scheme) == longest.pk
    page = labeller_client.get(rollout_url(scheme, longest.pk))
    assert page.status_code == 200
    visit = visit_of(page.content.decode())
    notes = [f"note {i}" for i in range(steps)]
    ratings = [1] * (steps - 1) + [None]
    saved = post_form(
        labeller_client, rollout_url(scheme, longest.pk), form_data(ratings, notes=notes, action="save", visit=visit)
    )
    assert saved.status_code == 302, saved.content[:300]
    draft = LabelDraft.objects.get()
    assert draft.ratings == ratings and draft.notes == notes
    # The script's save: the same encoding, answered in JSON.
    scripted = post_form(
        labeller_client,
        rollout_url(scheme, longest.pk),
        form_data(ratings, notes=notes, action="save", visit=visit),
        HTTP_ACCEPT="application/json",
    )
    assert scripted.status_code == 200 and scripted.json()["saved"] is True
    # The draft comes back on the page, every step of it.
    html = labeller_client.get(rollout_url(scheme, longest.pk)).content.decode()
    assert f'name="rating_{steps - 2}" value="1" checked' in html and f">note {steps - 1}</textarea>" in html
    submitted = post_form(
        labeller_client, rollout_url(scheme, longest.pk), form_data([1] * steps, notes=notes, visit=visit)
    )
    assert submitted.status_code == 302, submitted.content[:300]
    label = ProcessRewardLabel.objects.get(rollout=longest)
    assert label.prm_output == [1] * steps and label.explanations == notes
    assert label.attributes["rated_steps"] == steps
    assert not LabelDraft.objects.exists() and not RolloutCheckout.objects.exists()


def test_a_1000_step_rollout_is_skipped_with_its_form_and_the_next_one_comes(labeller_client, scheme, longest):
    following = make_rollout(reasoning=[f"Step {i}. " for i in range(600)])
    assert claim_next(labeller_client, scheme) == longest.pk
    data = form_data([1] * len(longest.reasoning), action="skip")
    skipped = post_form(labeller_client, rollout_url(scheme, longest.pk), data)
    assert skipped.status_code == 302
    assert skipped["Location"] == rollout_url(scheme, following.pk)
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [following.pk]
    # Next no longer hands the long one back: the person holds the following one.
    assert claim_next(labeller_client, scheme) == following.pk
    # The skip button's own form (nothing in it but the CSRF token) gives the next one back too.
    again = labeller_client.post(skip_url(scheme, following.pk))
    assert again.status_code == 302
    assert again["Location"] == rollout_url(scheme, longest.pk)  # the queue came round to it
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [longest.pk]


def test_skip_works_whatever_the_labelling_form_holds(labeller_client, scheme):
    held, other = make_rollout(reasoning=["a", "b"]), make_rollout()
    claim_next(labeller_client, scheme)
    junk = {"action": "skip", "rating_0": "1e308", "note_1": "x\x00" * 10, "finish_reason": "nope", "visit": "forged"}
    response = post_form(labeller_client, rollout_url(scheme, held.pk), junk)
    assert response.status_code == 302 and response["Location"] == rollout_url(scheme, other.pk)
    assert list(RolloutCheckout.objects.values_list("rollout_id", flat=True)) == [other.pk]


def test_skip_has_a_form_of_its_own_on_the_page_and_on_the_scheme_page(labeller_client, scheme):
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    page = labeller_client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert f'id="skip-form" action="{skip_url(scheme, rollout.pk)}"' in page
    assert 'form="skip-form"' in page  # the button posts that form, not the labelling form
    scheme_page = labeller_client.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))
    assert f'action="{skip_url(scheme, rollout.pk)}"' in scheme_page.content.decode()
    assert labeller_client.post(skip_url(scheme, rollout.pk)).status_code == 302
    assert not RolloutCheckout.objects.exists()


def test_skipping_a_rollout_you_do_not_hold_or_that_does_not_exist_changes_nothing_of_others(client, scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    rollout = make_rollout()
    bob_browser = Client()
    bob_browser.force_login(bob)
    claim_next(bob_browser, scheme)
    client.force_login(ann)
    assert client.post(skip_url(scheme, rollout.pk)).status_code == 302
    assert client.post(skip_url(scheme, 99_999_999)).status_code == 302
    assert list(RolloutCheckout.objects.values_list("rollout_id", "claimed_by")) == [(rollout.pk, "bob")]


def test_skipping_needs_a_post_a_labeller_and_a_csrf_token(labeller, scheme):
    rollout = make_rollout()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(labeller)
    assert browser.get(skip_url(scheme, rollout.pk)).status_code == 405
    assert browser.post(skip_url(scheme, rollout.pk)).status_code == 403
    assert Client().post(skip_url(scheme, rollout.pk))["Location"].startswith(reverse("labelling:login"))


def test_the_labelling_form_still_needs_its_csrf_token(labeller, scheme, longest):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(labeller)
    browser.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    browser.post(reverse("labelling:next", kwargs={"prm_version": scheme.prm_version}), {"csrfmiddlewaretoken": token})
    data = form_data([1] * len(longest.reasoning), action="save")
    refused = post_form(browser, rollout_url(scheme, longest.pk), data)
    assert refused.status_code == 403 and "CSRF" in refused.content.decode()
    assert not LabelDraft.objects.exists()
    accepted = post_form(browser, rollout_url(scheme, longest.pk), {**data, "csrfmiddlewaretoken": token})
    assert accepted.status_code == 302
    assert len(LabelDraft.objects.get().ratings) == len(longest.reasoning)


def test_a_form_beyond_the_bounds_is_a_clear_400_writing_nothing(labeller_client, scheme, settings):
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    url = rollout_url(scheme, rollout.pk)
    many = {f"f{i}": "1" for i in range(label_form_fields_max() + 1)}
    response = post_form(labeller_client, url, {"action": "save", **many})
    assert response.status_code == 400
    html = response.content.decode()
    assert FORM_TOO_MANY_FIELDS.format(max=label_form_fields_max()).replace("'", "&#x27;") in html
    assert reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}) in html  # where skip is
    scripted = post_form(labeller_client, url, {"action": "save", **many}, HTTP_ACCEPT="application/json")
    assert scripted.status_code == 400 and scripted.json()["saved"] is False
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    big = post_form(labeller_client, url, form_data([1, 1], notes=["x" * 20_000, ""], action="save"))
    assert big.status_code == 400
    assert FORM_TOO_LARGE.format(max=10_000) in big.content.decode()
    assert not LabelDraft.objects.exists() and not ProcessRewardLabel.objects.exists()
    assert labeller_client.post(skip_url(scheme, rollout.pk)).status_code == 302  # and skipping still works
