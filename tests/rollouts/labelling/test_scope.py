"""A scheme's scope (``rollouts.scope``): its queue hands out only the rollouts of its forests, models and outcome,
never its gold items, on every path of the claim (the cursor path, K labellers, active learning, the preview, the
API); the queue cursor passes out-of-scope rollouts without ever passing an in-scope unlabelled one; a claimer's
skipped rollouts come to them last; the scheme pages count the rollouts in scope and say the scope in words."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from adapters.models import PRMAdapter
from rollouts.labelling.selectors import schemes_for_user
from rollouts.labelling.stats import scheme_progress
from rollouts.labels import label_create
from rollouts.models import (
    OUTCOME_CORRECT,
    OUTCOME_NO_ANSWER,
    OUTCOME_WRONG,
    GoldItem,
    LabelSkip,
    ProcessRewardLabel,
    Rollout,
    RolloutQueueCursor,
)
from rollouts.queue import checkout_claim, queue_cursor_advance, queue_cursor_rewind
from rollouts.scope import EVERY_ROLLOUT, scheme_rollouts, scheme_scope_words
from rollouts.selectors import claim_scope, queue_cursor_floor, rollout_claim_preview
from tests.factories import make_forest, make_label, make_rollout
from tests.rollouts.labelling.conftest import claim_next, make_labeller, make_scheme
from tests.rollouts.labelling.test_concurrency import VERSION as RACE
from tests.rollouts.labelling.test_concurrency import run_everyone

pytestmark = pytest.mark.django_db

VERSION = "human-v1"
LATER = timedelta(minutes=30)  # claims this far after the rollouts were made: the cursor may pass them


def claim_all(prm_version=VERSION, claimed_by="tester", now=None, limit=1000, **kwargs) -> list[int]:
    return checkout_claim(
        prm_version=prm_version, claimed_by=claimed_by, now=now or timezone.now(), limit=limit, **kwargs
    ).ids


def correct(**fields) -> Rollout:
    return make_rollout(prediction=0, ground_truth=0, **fields)


def wrong(**fields) -> Rollout:
    return make_rollout(prediction=1, ground_truth=0, **fields)


def no_answer(**fields) -> Rollout:
    return make_rollout(prediction=None, ground_truth=0, **fields)


def test_a_scheme_scoped_to_forests_hands_out_only_their_rollouts():
    a, b, c = make_forest("alpha"), make_forest("beta"), make_forest("gamma")
    scheme = make_scheme(VERSION)
    scheme.forests.set([a, b])
    in_scope = [make_rollout(forest=a).pk, make_rollout(forest=b).pk]
    make_rollout(forest=c)
    make_rollout()  # no forest
    assert claim_all() == in_scope
    assert sorted(scheme_rollouts(scheme).values_list("pk", flat=True)) == in_scope


def test_a_scheme_scoped_to_models_hands_out_only_their_rollouts():
    make_scheme(VERSION, scope_models=["m-1", "m-2"])
    in_scope = [make_rollout(model="m-1").pk, make_rollout(model="m-2").pk]
    make_rollout(model="m-3")
    assert claim_all() == in_scope


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [(OUTCOME_CORRECT, "correct"), (OUTCOME_WRONG, "wrong"), (OUTCOME_NO_ANSWER, "no_answer"), ("", "all")],
)
def test_a_scheme_scoped_to_an_outcome_hands_out_only_rollouts_with_it(outcome, expected):
    make_scheme(VERSION, scope_outcome=outcome)
    rollouts = {"correct": correct().pk, "wrong": wrong().pk, "no_answer": no_answer().pk}
    # A text answer the grader did not accept is wrong; one it accepted is correct.
    rollouts["wrong-text"] = make_rollout(prediction=None, ground_truth=None, answer="42", correct=False).pk
    rollouts["correct-text"] = make_rollout(prediction=None, ground_truth=None, answer="7", correct=True).pk
    wanted = {
        "correct": ["correct", "correct-text"],
        "wrong": ["wrong", "wrong-text"],
        "no_answer": ["no_answer"],
        "all": list(rollouts),
    }[expected]
    assert claim_all() == sorted(rollouts[name] for name in wanted)


def test_scope_fields_combine_and_every_one_of_them_must_match():
    forest, other = make_forest("alpha"), make_forest("beta")
    scheme = make_scheme(VERSION, scope_models=["m-1"], scope_outcome=OUTCOME_WRONG)
    scheme.forests.set([forest])
    match = wrong(forest=forest, model="m-1")
    wrong(forest=other, model="m-1")  # other forest
    wrong(forest=forest, model="m-2")  # other model
    correct(forest=forest, model="m-1")  # other outcome
    no_answer(forest=forest, model="m-1")  # no answer is not "wrong"
    assert claim_all() == [match.pk]
    assert claim_all(claimed_by="other", now=timezone.now() + timedelta(hours=1)) == [match.pk]


def test_a_version_without_a_scheme_and_a_scheme_without_scope_hand_out_every_rollout():
    forest = make_forest("alpha")
    scheme = make_scheme("scoped", scope_models=["m-1"])
    scheme.forests.set([forest])
    make_scheme(VERSION)
    ids = [make_rollout(forest=forest, model="m-1").pk, make_rollout(model="m-2").pk, wrong().pk, no_answer().pk]
    GoldItem.objects.create(scheme=scheme, rollout_id=ids[0], prm_output=[1, 1], rated_steps=2)
    assert claim_all(prm_version="api-prm") == ids
    assert claim_all(prm_version=VERSION) == ids  # another scheme's gold item is this one's rollout like any other
    assert scheme_scope_words(make_scheme("plain")) == EVERY_ROLLOUT


@pytest.mark.parametrize("labels_per_rollout", [1, 2])
def test_gold_items_of_the_scheme_are_never_handed_out_by_its_queue(labels_per_rollout):
    scheme = make_scheme(VERSION, labels_per_rollout=labels_per_rollout)
    rollouts = [make_rollout() for _ in range(4)]
    GoldItem.objects.create(scheme=scheme, rollout=rollouts[1], prm_output=[1, 1], rated_steps=2)
    expected = [r.pk for r in rollouts if r != rollouts[1]]
    assert [r.pk for r in rollout_claim_preview(prm_version=VERSION, now=timezone.now(), limit=10)] == expected
    assert claim_all(claimed_by="ann") == expected
    assert claim_all(claimed_by="bob", active_learning=True) == (expected if labels_per_rollout == 2 else [])
    assert scheme_rollouts(scheme).count() == 3


def test_k_labellers_in_scope_each_get_only_rollouts_in_scope_never_twice():
    forest = make_forest("alpha")
    scheme = make_scheme(VERSION, labels_per_rollout=2)
    scheme.forests.set([forest])
    in_scope = [make_rollout(forest=forest).pk for _ in range(3)]
    make_rollout()
    now = timezone.now()
    assert claim_all(claimed_by="ann", now=now) == in_scope
    assert claim_all(claimed_by="ann", now=now) == []
    assert claim_all(claimed_by="bob", now=now) == in_scope
    assert claim_all(claimed_by="cid", now=now) == []  # K = 2 leases each


def test_active_learning_orders_only_rollouts_in_scope():
    scheme = make_scheme(VERSION, scope_outcome=OUTCOME_CORRECT, active_learning=True)
    PRMAdapter.objects.create(prm_version="ref-prm", base_model="b", worker="w", file="x.zip", sha256="0", size=1)
    agrees, disagrees, out = correct(), correct(), wrong()
    make_label(agrees, "ref-prm", prm_output=[0.9, 0.9], final_reward=0.9)
    make_label(disagrees, "ref-prm", prm_output=[0.1, 0.1], final_reward=0.1)
    make_label(out, "ref-prm", prm_output=[0.9, 0.9], final_reward=0.9)  # disagrees, but is out of scope
    assert claim_all(active_learning=True, reference_prm_version="ref-prm") == [disagrees.pk, agrees.pk]
    assert scheme.active_learning


def test_the_api_hands_out_only_rollouts_in_scope(api):
    make_scheme(VERSION, scope_models=["m-1"])
    inside = make_rollout(model="m-1")
    make_rollout(model="m-2")
    assert [r["id"] for r in api.get("/rollout", {"prm_version": VERSION, "limit": 10}).json()] == [inside.pk]
    assert api.get("/rollout", {"prm_version": VERSION}).json() == []


def test_the_preview_shows_only_rollouts_in_scope():
    make_scheme(VERSION, scope_outcome=OUTCOME_NO_ANSWER)
    correct()
    inside = no_answer()
    assert [r.pk for r in rollout_claim_preview(prm_version=VERSION, now=timezone.now(), limit=10)] == [inside.pk]


def aged(rollouts: list[Rollout]) -> list[Rollout]:
    Rollout.objects.filter(pk__in=[r.pk for r in rollouts]).update(created_at=timezone.now() - LATER)
    return rollouts


def test_the_cursor_passes_rollouts_out_of_scope_and_a_claim_then_reads_only_what_is_left():
    forest = make_forest("alpha")
    scheme = make_scheme(VERSION)
    scheme.forests.set([forest])
    out_of_scope = aged([make_rollout() for _ in range(40)])
    labelled = aged([make_rollout(forest=forest) for _ in range(3)])
    open_ = aged([make_rollout(forest=forest) for _ in range(2)])
    for rollout in labelled:
        make_label(rollout, VERSION)
    key = claim_scope(prm_version=VERSION).cursor_key
    floor = queue_cursor_advance(prm_version=VERSION, now=timezone.now())
    assert floor == open_[0].pk  # past 40 out-of-scope and 3 labelled rollouts, not past an open one
    assert RolloutQueueCursor.objects.get(prm_version=key).labelled_below == floor
    assert not RolloutQueueCursor.objects.filter(prm_version=VERSION).exists()  # the version's own cursor: untouched
    # The claim's scan starts at the floor: what lies above it is all it may read.
    assert Rollout.objects.filter(pk__gte=floor).count() == 2
    with CaptureQueriesContext(connection) as queries:
        assert claim_all() == [r.pk for r in open_]
    assert any(str(floor) in query["sql"] for query in queries.captured_queries)
    assert out_of_scope[0].pk < floor


def test_the_cursor_never_passes_an_unlabelled_rollout_in_scope():
    make_scheme(VERSION, scope_models=["m-1"])
    rollouts = aged([make_rollout(model=m) for m in ["m-2", "m-1", "m-2", "m-1", "m-2"]])
    make_label(rollouts[1], VERSION)
    assert queue_cursor_advance(prm_version=VERSION, now=timezone.now()) == rollouts[3].pk
    make_label(rollouts[3], VERSION)
    assert queue_cursor_advance(prm_version=VERSION, now=timezone.now()) == rollouts[4].pk + 1
    later = make_rollout(model="m-1")
    make_rollout(model="m-2")
    assert claim_all() == [later.pk]


def test_a_changed_scope_never_trusts_the_cursor_of_the_old_one():
    a, b = make_forest("alpha"), make_forest("beta")
    scheme = make_scheme(VERSION)
    scheme.forests.set([a])
    in_b = aged([make_rollout(forest=b) for _ in range(3)])
    in_a = aged([make_rollout(forest=a) for _ in range(2)])
    for rollout in in_a:
        make_label(rollout, VERSION)
    assert claim_all() == []
    assert queue_cursor_floor(prm_version=VERSION, cursor_key=claim_scope(prm_version=VERSION).cursor_key) > in_a[-1].pk
    scheme.forests.set([b])
    assert claim_all() == [r.pk for r in in_b]
    scheme.forests.set([])  # every rollout
    assert claim_all(claimed_by="other", now=timezone.now() + timedelta(hours=1)) == [r.pk for r in in_b]


def test_a_rollout_that_stops_being_gold_comes_back_once_the_cursor_is_rewound():
    scheme = make_scheme(VERSION)
    rollouts = aged([make_rollout() for _ in range(3)])
    gold = GoldItem.objects.create(scheme=scheme, rollout=rollouts[0], prm_output=[1, 1], rated_steps=2)
    for rollout in rollouts[1:]:
        make_label(rollout, VERSION)
    assert claim_all() == []
    gold.delete()
    queue_cursor_rewind(prm_version=VERSION, rollout_id=rollouts[0].pk)
    assert claim_all() == [rollouts[0].pk]


@pytest.mark.parametrize("how", ["one", "action"])
def test_a_gold_item_deleted_in_the_admin_is_handed_out_again(client, staff_user, how):
    scheme = make_scheme(VERSION)
    rollouts = aged([make_rollout() for _ in range(3)])
    gold = GoldItem.objects.create(scheme=scheme, rollout=rollouts[0], prm_output=[1, 1], rated_steps=2)
    for rollout in rollouts[1:]:
        make_label(rollout, VERSION)
    assert claim_all() == []  # the cursor has passed the gold item: it is out of scope
    client.force_login(staff_user)
    if how == "one":
        response = client.post(reverse("admin:rollouts_golditem_delete", args=[gold.pk]), {"post": "yes"})
    else:
        response = client.post(
            reverse("admin:rollouts_golditem_changelist"),
            {"action": "delete_selected", "_selected_action": [gold.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert not GoldItem.objects.exists()
    assert gold.history.filter(history_type="-").exists()  # the deletion is in its history
    assert claim_all() == [rollouts[0].pk]


def test_deleting_a_label_rewinds_the_scoped_cursor_too():
    make_scheme(VERSION, scope_outcome=OUTCOME_CORRECT)
    rollouts = aged([correct() for _ in range(3)])
    labels = [make_label(rollout, VERSION) for rollout in rollouts]
    assert claim_all() == []
    ProcessRewardLabel.objects.filter(pk=labels[1].pk).delete()
    queue_cursor_rewind(prm_version=VERSION, rollout_id=rollouts[1].pk)
    assert claim_all() == [rollouts[1].pk]


def test_the_scheme_is_looked_up_once_per_claim():
    forest = make_forest("alpha")
    scheme = make_scheme(VERSION, scope_models=["tiny-model"])
    scheme.forests.set([forest, make_forest("beta")])
    make_rollout(forest=forest)
    with CaptureQueriesContext(connection) as queries:
        assert len(claim_all()) == 1
    scheme_table = scheme._meta.db_table
    assert sum(f'FROM "{scheme_table}"' in q["sql"] for q in queries.captured_queries) == 1


def skip(user, rollout: Rollout, at) -> LabelSkip:
    return LabelSkip.objects.create(user=user, prm_version=VERSION, rollout=rollout, skipped_at=at)


@pytest.mark.parametrize("labels_per_rollout", [1, 2])
def test_a_claimers_skipped_rollouts_come_to_them_last_the_oldest_skip_first(labels_per_rollout):
    make_scheme(VERSION, labels_per_rollout=labels_per_rollout)
    ann, bob = make_labeller("ann"), make_labeller("bob")
    rollouts = [make_rollout() for _ in range(4)]
    now = timezone.now()
    skip(ann, rollouts[0], now - timedelta(minutes=1))
    skip(ann, rollouts[1], now - timedelta(minutes=5))
    claims = [claim_all(claimed_by="ann", now=now + timedelta(seconds=i), limit=1) for i in range(5)]
    del claims[4:]  # a fifth claim has nothing left for ann
    assert claims == [[rollouts[2].pk], [rollouts[3].pk], [rollouts[1].pk], [rollouts[0].pk]]
    if labels_per_rollout == 2:  # bob's order is his own: oldest first
        assert claim_all(claimed_by="bob", now=now, limit=1) == [rollouts[0].pk]
    assert bob.username == "bob"


def test_skipped_rollouts_fill_a_claim_after_the_others_and_other_claimers_are_unaffected():
    make_scheme(VERSION)
    ann = make_labeller("ann")
    rollouts = [make_rollout() for _ in range(4)]
    now = timezone.now()
    skip(ann, rollouts[1], now)
    skip(ann, rollouts[0], now - timedelta(minutes=1))
    assert claim_all(claimed_by="bob", now=now, limit=1) == [rollouts[0].pk]
    assert claim_all(claimed_by="ann", now=now) == [rollouts[2].pk, rollouts[3].pk, rollouts[1].pk]


def test_skips_outside_the_scope_stay_outside():
    make_scheme(VERSION, scope_models=["m-1"])
    ann = make_labeller("ann")
    outside, inside = make_rollout(model="m-2"), make_rollout(model="m-1")
    skip(ann, outside, timezone.now())
    skip(ann, inside, timezone.now())
    assert claim_all(claimed_by="ann") == [inside.pk]


def test_a_person_on_the_pages_is_handed_their_skips_last(client):
    scheme = make_scheme(VERSION)
    ann = make_labeller("ann")
    client.force_login(ann)
    rollouts = [make_rollout() for _ in range(2)]
    skip(ann, rollouts[0], timezone.now())
    assert claim_next(client, scheme) == rollouts[1].pk
    label_create(
        rollout_id=rollouts[1].pk,
        prm_version=VERSION,
        prm_output=[1, 1],
        worker="ann",
        labelled_by="ann",
        now=timezone.now(),
    )
    assert claim_next(client, scheme) == rollouts[0].pk


def test_the_scheme_list_and_page_count_rollouts_in_scope_and_say_the_scope(client):
    alpha, beta = make_forest("alpha"), make_forest("beta<b>")
    scoped = make_scheme(VERSION, scope_models=["m-1"], scope_outcome=OUTCOME_WRONG)
    scoped.forests.set([alpha, beta])
    make_scheme("every")
    wrong(forest=alpha, model="m-1")
    wrong(forest=beta, model="m-1")
    correct(forest=alpha, model="m-1")
    make_rollout()
    rows = {row.scheme.prm_version: row for row in schemes_for_user(user=make_labeller("ann"), now=timezone.now())}
    assert (rows[VERSION].rollouts, rows["every"].rollouts) == (2, 4)
    assert rows[VERSION].scope == "forests alpha, beta<b>; model m-1; outcome wrong"
    assert rows["every"].scope == EVERY_ROLLOUT
    client.force_login(make_labeller("bob"))
    page = client.get(reverse("labelling:scheme", kwargs={"prm_version": VERSION})).content.decode()
    assert "forests alpha, beta&lt;b&gt;; model m-1; outcome wrong" in page
    assert "0 of 2 rollouts in scope complete" in page
    listing = client.get(reverse("labelling:schemes")).content.decode()
    assert "forests alpha, beta&lt;b&gt;; model m-1; outcome wrong" in listing and EVERY_ROLLOUT in listing


def test_the_scheme_list_costs_one_query_more_per_scheme_at_most(client):
    client.force_login(make_labeller("ann"))
    url = reverse("labelling:schemes")

    def queries_with(n: int) -> int:
        for i in range(n):
            scheme = make_scheme(f"s-{n}-{i}", scope_models=["m-1"])
            scheme.forests.set([make_forest(f"f-{n}-{i}")])
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured.captured_queries)

    two = queries_with(2)
    six = queries_with(4)  # six schemes now
    assert six - two <= 4


def test_completeness_counts_only_rollouts_in_scope(client):
    make_scheme(VERSION, scope_models=["m-1"])
    inside, outside = make_rollout(model="m-1"), make_rollout(model="m-2")
    make_label(inside, VERSION)
    make_label(outside, VERSION)  # stored before the scope was narrowed, say
    client.force_login(make_labeller("ann"))
    page = client.get(reverse("labelling:scheme", kwargs={"prm_version": VERSION})).content.decode()
    assert "1 of 1 rollout in scope complete" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("labels_per_rollout", [1, 2])
def test_concurrent_people_and_workers_get_only_rollouts_in_scope_never_twice_and_k_each(
    live_api_server, labels_per_rollout
):
    forest, other = make_forest("alpha"), make_forest("beta")
    scheme = make_scheme(RACE, labels_per_rollout=labels_per_rollout, scope_models=["m-1"])
    scheme.forests.set([forest])
    in_scope = [make_rollout(forest=forest, model="m-1", reasoning=["a", "b"]).pk for _ in range(16)]
    gold = make_rollout(forest=forest, model="m-1", reasoning=["a", "b"])
    GoldItem.objects.create(scheme=scheme, rollout=gold, prm_output=[1, 1], rated_steps=2)
    outside = [make_rollout(forest=other, model="m-1", reasoning=["a", "b"]).pk for _ in range(6)]
    outside += [make_rollout(forest=forest, model="m-2", reasoning=["a", "b"]).pk for _ in range(6)]
    outside += [make_rollout(model="m-1", reasoning=["a", "b"]).pk for _ in range(4)]
    aged(list(Rollout.objects.all()))  # old enough for the cursor to pass them while the claims run
    handed = run_everyone(live_api_server.url)
    assert {rollout_id for _, rollout_id in handed} <= set(in_scope), "a rollout outside the scope was handed out"
    assert [pair for pair, n in Counter(handed).items() if n > 1] == [], "a rollout went twice to one caller"
    if labels_per_rollout == 1:
        assert sorted(rollout_id for _, rollout_id in handed) == sorted(in_scope)
    labels = Counter(ProcessRewardLabel.objects.filter(prm_version=RACE).values_list("rollout_id", flat=True))
    assert labels == dict.fromkeys(in_scope, labels_per_rollout)
    pairs = ProcessRewardLabel.objects.filter(prm_version=RACE).values_list("rollout_id", "labelled_by")
    assert len(set(pairs)) == len(pairs)
    assert gold.pk not in labels and not set(outside) & set(labels)


def test_the_staff_progress_counts_only_rollouts_in_scope():
    scheme = make_scheme(VERSION, scope_outcome=OUTCOME_CORRECT)
    inside = [correct() for _ in range(3)]
    outside = wrong()
    make_label(inside[0], VERSION)
    make_label(outside, VERSION)
    progress = scheme_progress(scheme=scheme, now=timezone.now())
    assert (progress.rollouts, progress.complete, progress.remaining, progress.labels) == (3, 1, 2, 1)
