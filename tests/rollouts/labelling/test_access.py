"""Labelling by id (issue 17, item 12): *Save draft* on any rollout id made a draft, after which the page showed that
rollout (another labeller's leased one included); a labeller could submit labels for rollouts never handed to them,
also in a closed scheme; 20 parallel *next* clicks gave one person 20 leases (PostgreSQL: 14); a worker token posting
``"worker": "dave"`` made dave's own submit a 409. Runs on SQLite and on PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from rollouts.labelling import services
from rollouts.labelling.services import NOT_HANDED_OUT, LabelInput, NotHandedOut, draft_save, label_submit
from rollouts.models import LabelDraft, ProcessRewardLabel, RolloutCheckout
from tests.factories import make_rollout, make_worker_token
from tests.rollouts.labelling.conftest import (
    PASSWORD,
    claim_next,
    form_data,
    make_labeller,
    make_scheme,
    rollout_url,
    submit,
    visit_of,
)

SECRET = "The secret prompt of bob's rollout"
CLICKS = 20


def browser_of(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def refusal(scheme, rollout_id: int) -> str:
    return NOT_HANDED_OUT.format(rollout_id=rollout_id, prm_version=scheme.prm_version)


# --- (a) and (b): draft, page and submit only for a rollout handed to you ---------------------------------------------


@pytest.mark.django_db
def test_saving_a_draft_of_a_rollout_not_handed_to_you_is_refused_and_shows_nothing(scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    leased = make_rollout(example=SECRET, reasoning=["bob's step one", "bob's step two"])
    free = make_rollout(example=SECRET + " (nobody holds it)")
    assert claim_next(browser_of(bob), scheme) == leased.pk
    ann_browser = browser_of(ann)
    for rollout in (leased, free):
        url = rollout_url(scheme, rollout.pk)
        page = ann_browser.post(url, form_data([1, None], action="save"))
        assert page.status_code == 403
        html = page.content.decode()
        assert refusal(scheme, rollout.pk) in html
        assert "secret prompt" not in html and "step one" not in html and 'name="rating_0"' not in html
        scripted = ann_browser.post(url, form_data([1, None], action="save"), HTTP_ACCEPT="application/json")
        assert scripted.status_code == 403
        assert scripted.json() == {"saved": False, "errors": [refusal(scheme, rollout.pk)]}
        shown = ann_browser.get(url)
        assert shown.status_code == 302  # to the scheme page, saying the rollout is not checked out to her
        assert "secret prompt" not in ann_browser.get(shown["Location"]).content.decode()
    assert not LabelDraft.objects.exists()
    assert list(RolloutCheckout.objects.values_list("rollout_id", "claimed_by")) == [(leased.pk, "bob")]


@pytest.mark.django_db
def test_submitting_a_rollout_never_handed_to_you_is_refused_in_an_open_and_a_closed_scheme(scheme):
    ann = make_labeller("ann")
    rollout = make_rollout(example=SECRET)
    ann_browser = browser_of(ann)
    for is_open in (True, False):
        scheme.is_open = is_open
        scheme.save()
        response = ann_browser.post(rollout_url(scheme, rollout.pk), form_data([1, 1]))
        assert response.status_code == 403
        assert "secret prompt" not in response.content.decode()
    assert not ProcessRewardLabel.objects.exists() and not LabelDraft.objects.exists()


@pytest.mark.django_db
def test_a_visit_token_of_another_person_rollout_or_scheme_grants_nothing(scheme):
    ann, bob = make_labeller("ann"), make_labeller("bob")
    other_scheme = make_scheme("human-v2")
    first, second = make_rollout(), make_rollout()
    ann_browser, bob_browser = browser_of(ann), browser_of(bob)
    assert claim_next(ann_browser, scheme) == first.pk
    token = visit_of(ann_browser.get(rollout_url(scheme, first.pk)).content.decode())
    # bob with ann's token; ann with the token of another rollout; ann in another scheme.
    tries = [(bob_browser, scheme, first), (ann_browser, scheme, second), (ann_browser, other_scheme, first)]
    for browser, in_scheme, rollout in tries:
        for action in ("save", "submit"):
            response = browser.post(rollout_url(in_scheme, rollout.pk), form_data([1, 1], action=action, visit=token))
            assert response.status_code == 403, (in_scheme.prm_version, rollout.pk, action)
    assert not ProcessRewardLabel.objects.exists() and not LabelDraft.objects.exists()


@pytest.mark.django_db
def test_the_page_shown_to_you_still_takes_your_label_after_your_lease_ended(labeller_client, scheme):
    # No draft (a browser without JavaScript that never saved): the visit token says the page was shown to her.
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    page = labeller_client.get(rollout_url(scheme, rollout.pk))
    RolloutCheckout.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    data = form_data([1, 1], visit=visit_of(page.content.decode()))
    assert labeller_client.post(rollout_url(scheme, rollout.pk), data).status_code == 302
    assert ProcessRewardLabel.objects.get().labelled_by == "ann"


@pytest.mark.django_db
def test_the_services_refuse_work_on_a_rollout_not_handed_out(scheme, labeller):
    rollout = make_rollout()
    work = LabelInput(ratings=[1, 1], notes=["", ""])
    now = timezone.now()
    with pytest.raises(NotHandedOut) as refused:
        draft_save(user=labeller, scheme=scheme, rollout=rollout, data=work, visit_started=None, now=now)
    assert (refused.value.status_code, refused.value.code) == (403, "not_checked_out")
    with pytest.raises(NotHandedOut):
        label_submit(user=labeller, scheme=scheme, rollout=rollout, data=work, visit_started=None, now=now)
    assert not LabelDraft.objects.exists() and not ProcessRewardLabel.objects.exists()
    services.labelling_next(scheme=scheme, username="ann", now=now)
    draft_save(user=labeller, scheme=scheme, rollout=rollout, data=work, visit_started=None, now=now)
    RolloutCheckout.objects.all().delete()  # the lease is gone; the draft, written while she held it, still counts
    label = label_submit(user=labeller, scheme=scheme, rollout=rollout, data=work, visit_started=None, now=now)
    assert label.labelled_by == "ann"


# --- (c) one lease per person and scheme, whatever the number of parallel clicks ------------------------------------


def widen_the_claim(monkeypatch) -> None:
    """Every claim of the labelling pages waits a moment before it leases, so parallel clicks overlap for certain."""
    real_claim = services.checkout_claim

    def slow_claim(**kwargs):
        time.sleep(0.05)
        return real_claim(**kwargs)

    monkeypatch.setattr(services, "checkout_claim", slow_claim)


def in_parallel(target, count: int) -> list:
    """Run ``target()`` in ``count`` threads started together; their answers (each thread its own connection)."""
    start = threading.Barrier(count)
    answers: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            answers.append(target())
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    return answers


@pytest.mark.django_db(transaction=True)
def test_parallel_next_calls_lease_one_rollout_to_one_person(monkeypatch):
    scheme = make_scheme()
    make_labeller("ann")
    ids = [make_rollout().pk for _ in range(CLICKS)]
    widen_the_claim(monkeypatch)
    answers = in_parallel(lambda: services.labelling_next(scheme=scheme, username="ann", now=timezone.now()), CLICKS)
    assert len(set(answers)) == 1 and answers[0] in ids
    assert list(RolloutCheckout.objects.values_list("rollout_id", "claimed_by")) == [(answers[0], "ann")]


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_next_clicks_on_the_page_give_one_person_one_lease(monkeypatch, live_api_server):
    scheme = make_scheme()
    make_labeller("ann")
    make_labeller("bob")
    for _ in range(CLICKS + 2):
        make_rollout()
    widen_the_claim(monkeypatch)
    base = live_api_server.url

    def logged_in(username: str) -> requests.Session:
        session = requests.Session()
        session.get(f"{base}/label/login/", timeout=30).raise_for_status()
        login = session.post(
            f"{base}/label/login/",
            data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": session.cookies["csrftoken"]},
            allow_redirects=False,
            timeout=30,
        )
        assert login.status_code == 302
        return session

    people = {name: logged_in(name) for name in ("ann", "bob")}

    def click(name: str):
        # Each click its own connection, with the person's cookies: twenty tabs of one browser.
        with requests.Session() as tab:
            tab.cookies.update(people[name].cookies)
            answer = tab.post(
                f"{base}/label/{scheme.prm_version}/next/",
                data={"csrfmiddlewaretoken": tab.cookies["csrftoken"]},
                allow_redirects=False,
                timeout=120,
            )
            assert answer.status_code == 302, answer.status_code
            return name, answer.headers["Location"]

    names = iter(["ann"] * CLICKS + ["bob"] * 2)
    lock = threading.Lock()

    def next_click():
        with lock:
            name = next(names)
        return click(name)

    answers = in_parallel(next_click, CLICKS + 2)
    for session in people.values():
        session.close()
    leases = Counter(RolloutCheckout.objects.values_list("claimed_by", flat=True))
    assert leases == {"ann": 1, "bob": 1}
    for name in ("ann", "bob"):
        held = RolloutCheckout.objects.get(claimed_by=name).rollout_id
        assert {location for who, location in answers if who == name} == {rollout_url(scheme, held)}, (
            "every click of one person leads to the one rollout they hold"
        )


# --- (d) a worker name never stands for a person ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_token_naming_a_person_as_its_worker_does_not_block_that_persons_label(api, worker_user):
    scheme = make_scheme(labels_per_rollout=2)
    dave = make_labeller("dave")
    rollout = make_rollout(reasoning=["a", "b"])
    body = {"rollout_id": rollout.pk, "prm_output": [0, 0], "prm_version": scheme.prm_version, "worker": "dave"}
    posted = api.post("/process_reward_label", body, format="json")
    assert posted.status_code == 200
    impostor = ProcessRewardLabel.objects.get(pk=posted.json())
    assert (impostor.worker, impostor.labelled_by) == ("dave", worker_user.username)  # the token's user, recorded
    dave_browser = browser_of(dave)
    assert claim_next(dave_browser, scheme) == rollout.pk  # the token's label is not dave's
    response = submit(dave_browser, scheme, rollout.pk, [1, 1])
    assert response.status_code == 302, response.status_code
    own = ProcessRewardLabel.objects.get(labelled_by="dave")
    assert own.pk != impostor.pk and own.prm_output == [1, 1]
    # The token's retry is still answered with its own label; a third label is refused (K = 2).
    assert api.post("/process_reward_label", body, format="json").json() == impostor.pk
    third = api.post("/process_reward_label", {**body, "worker": "erin"}, format="json")
    assert third.status_code == 409 and third.json()["code"] == "already_labelled"


@pytest.mark.django_db
def test_same_worker_name_from_another_account_is_another_caller(api, django_user_model):
    rollout = make_rollout(reasoning=["a", "b"])
    body = {"rollout_id": rollout.pk, "prm_output": [1, 1], "prm_version": "judge-v1", "worker": "shared-name"}
    first = api.post("/process_reward_label", body, format="json")
    assert first.status_code == 200
    assert api.post("/process_reward_label", body, format="json").json() == first.json()  # a retry: same id
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Token {make_worker_token(django_user_model.objects.create_user('eve'))}")
    refused = other.post("/process_reward_label", body, format="json")  # not eve's label, even with the same content
    assert refused.status_code == 409 and refused.json()["code"] == "already_labelled"
    assert ProcessRewardLabel.objects.count() == 1
