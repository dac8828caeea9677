"""The review pages: the disagreement list (ordering, kinds, the pair filter, bounded queries), a rollout's labels
side by side as words, the adjudication (who, when, why, history) and the consensus export taking it first."""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from forests.intake import receive_rollout
from rollouts.labelling import rules
from rollouts.labelling.exports import (
    ADJUDICATION_SOURCE_NAME,
    MISSING_VERSION,
    ConsensusOptions,
    consensus_records,
)
from rollouts.labelling.review import NOT_A_PAIR
from rollouts.labelling.review_selectors import MC_COLUMN, NO_VALUE, RATING_WORDS
from rollouts.labelling.review_services import REASON_REQUIRED, AdjudicationInput, adjudication_record
from rollouts.labelling.review_views import ADJUDICATED
from rollouts.labels import label_create
from rollouts.models import Adjudication
from tests.factories import make_forest, make_rollout, make_root
from tests.rollouts.labelling.conftest import human_label as human
from tests.rollouts.labelling.conftest import make_labeller, make_scheme

pytestmark = pytest.mark.django_db

PROMPT = "What is **2 + 2**?"


def list_url(scheme, **query) -> str:
    url = reverse("labelling:review", kwargs={"prm_version": scheme.prm_version})
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def page_url(scheme, rollout) -> str:
    return reverse("labelling:review_rollout", kwargs={"prm_version": scheme.prm_version, "rollout_id": rollout.pk})


def listed(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="disagreement[^"]*" data-rollout="(\d+)"', html)]


@pytest.fixture
def labelled():
    """Rollouts labelled by ann, bob (and cat on r4), disagreeing as in test_review_pure, a judge and a PRM on r1.

    r1 (in a forest): ann +1 +1 -1, bob +1 -1 (then nothing; give up): verdicts differ on step 2 of 2 compared.
    r2: ann +1 +1 +1, bob +1 0 +1: a rating differs (1 of 3), no verdict.
    r3: agreement. r4: ann, bob, cat: cat's -1 on step 2 of 4 (a verdict, 1 of 4); bob's 0 on step 3.
    """
    scheme = make_scheme(labels_per_rollout=3)
    make_scheme("judge-v1", title="GPT judge")
    forest = make_forest("arith")
    make_root(forest, text=PROMPT, ground_truth=4)
    r1 = receive_rollout(
        model="tiny",
        example=PROMPT,
        reasoning=["Two and **two**.", "So $2+2=5$.", "Answer 5 <script>alert(1)</script>"],
        prediction=5,
        ground_truth=4,
        worker="w",
        forest_name=forest.name,
    )
    r2, r3 = make_rollout(reasoning=["a", "b", "c"]), make_rollout(reasoning=["a", "b"])
    r4 = make_rollout(reasoning=["a", "b", "c", "d"])
    human(r1, "ann", [1, 1, -1], notes=["", "fine", "5 is wrong"], seconds=65)
    human(r1, "bob", [1, -1, None], notes=["", "$2+2=4$, not 5", ""], finish_reason="give_up", seconds=30)
    human(r2, "ann", [1, 1, 1])
    human(r2, "bob", [1, 0, 1])
    human(r3, "ann", [1, 1])
    human(r3, "bob", [1, 1])
    human(r4, "ann", [1, 1, 1, 1])
    human(r4, "bob", [1, 1, 0, 1])
    human(r4, "cat", [1, -1, 1, 1])
    label_create(rollout_id=r1.pk, prm_version="judge-v1", prm_output=[1, 0, 0], worker="gpt-judge")
    label_create(rollout_id=r1.pk, prm_version="prm-v1", prm_output=[0.87, 0.25, 0.5], worker="prm")
    return scheme, {"r1": r1, "r2": r2, "r3": r3, "r4": r4}


def test_the_list_orders_by_disagreement_and_filters_by_kind_and_pair(staff_client, labelled):
    scheme, r = labelled
    response = staff_client.get(list_url(scheme))
    assert response.status_code == 200
    assert listed(response.content.decode()) == [r["r1"].pk, r["r4"].pk, r["r2"].pk]
    verdict = staff_client.get(list_url(scheme, kind="verdict")).content.decode()
    assert listed(verdict) == [r["r1"].pk, r["r4"].pk]
    first = staff_client.get(list_url(scheme, kind="first_error")).content.decode()
    assert listed(first) == [r["r1"].pk, r["r4"].pk]  # r1: step 3 (ann) against step 2 (bob)
    pair = staff_client.get(list_url(scheme, pair="ann,cat")).content.decode()
    assert listed(pair) == [r["r4"].pk]
    assert listed(staff_client.get(list_url(scheme, pair="bob,ann")).content.decode()) == [
        r["r1"].pk,
        r["r2"].pk,
        r["r4"].pk,
    ]
    assert 'value="ann,bob"' in pair and 'value="bob,cat"' in pair


def test_the_list_refuses_words_it_does_not_know(staff_client, labelled):
    scheme, _ = labelled
    bad_kind = staff_client.get(list_url(scheme, kind="most"))
    assert bad_kind.status_code == 400 and "kind must be one of" in bad_kind.content.decode()
    bad_pair = staff_client.get(list_url(scheme, pair="ann"))
    assert bad_pair.status_code == 400
    assert NOT_A_PAIR.split("{")[0] in bad_pair.content.decode()


def test_the_list_reads_a_bounded_number_of_queries(staff_client, labelled):
    scheme, _ = labelled

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(list_url(scheme)).status_code == 200
        return len(captured)

    before = queries()
    for _ in range(5):
        rollout = make_rollout(reasoning=["a", "b"])
        human(rollout, "ann", [1, 1])
        human(rollout, "bob", [1, -1])
        Adjudication.objects.create(
            scheme=scheme, rollout=rollout, prm_output=[1, 1], rated_steps=2, reason="r", decided_at=rollout.created_at
        )
    assert queries() == before


def test_the_pages_are_closed_to_anyone_but_staff(client, labelled):
    scheme, r = labelled
    for url in (list_url(scheme), page_url(scheme, r["r1"])):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/label/login/")
    client.force_login(make_labeller("dan"))
    assert client.get(list_url(scheme)).status_code == 403
    assert client.get(page_url(scheme, r["r1"])).status_code == 403
    posted = client.post(page_url(scheme, r["r1"]), {"rating_0": "1", "rating_1": "1", "rating_2": "1", "reason": "x"})
    assert posted.status_code == 403
    assert not Adjudication.objects.exists()


def cells(html: str) -> list[str]:
    return [
        re.sub(r"<div.*", "", text, flags=re.S)
        for text in re.findall(r'<td class="cell [a-z]+">(.*?)</td>', html, re.S)
    ]


def test_the_review_page_shows_every_source_as_words_and_marks_the_conflicts(staff_client, labelled):
    scheme, r = labelled
    response = staff_client.get(page_url(scheme, r["r1"]))
    html = response.content.decode()
    assert response.status_code == 200
    # Columns: ann, bob, then the judge, the PRM and the Monte-Carlo values.
    heads = re.findall(r'<th class="col-([a-z]+)">(.*?)</th>', html)[:-1]  # the last: the decision
    assert heads == [
        ("person", "ann"),
        ("person", "bob"),
        ("label", "judge-v1 · gpt-judge"),
        ("reward", "prm-v1 · prm"),
        ("mc", MC_COLUMN),
    ]
    shown = cells(html)
    words = set(RATING_WORDS.values())
    assert {text for text in shown if not re.fullmatch(r"\d\.\d{3}", text) and text != NO_VALUE} <= words
    # Step by step (ann, bob, judge, PRM, MC): the judge's code 0 is the word for -1, never "0".
    wrong, right = RATING_WORDS[-1], RATING_WORDS[1]
    assert shown[5:10] == [right, wrong, wrong, "0.250", "0.000"]
    assert shown[10:15] == [wrong, "unrated", wrong, "0.500", "0.000"]
    assert 'id="step-2" class="step-row conflict conflict-verdict"' in html
    assert 'id="step-1" class="step-row"' in html
    assert "<strong>two</strong>" in html and "<script>alert" not in html
    assert "<math" in html  # the notes' math is rendered
    assert "give_up" in html and "1:05" in html and "<dd>step 2</dd>" in html


def test_staff_open_any_rollout_of_the_scheme_but_not_another(staff_client, labelled):
    scheme, _ = labelled
    unlabelled = make_rollout(reasoning=["x"])
    assert staff_client.get(page_url(scheme, unlabelled)).status_code == 200  # in scope, held by nobody
    scoped = make_scheme("human-scoped", scope_models=["some-other-model"])
    assert staff_client.get(page_url(scoped, unlabelled)).status_code == 404
    assert staff_client.get(page_url(scheme, unlabelled).replace(str(unlabelled.pk), "999999")).status_code == 404


def adjudicate(client, scheme, rollout, ratings, *, reason="bob is right: 2 + 2 = 4", notes=None, finish_reason=""):
    data = {"reason": reason, "finish_reason": finish_reason}
    for index, rating in enumerate(ratings):
        data[f"rating_{index}"] = "" if rating is None else str(rating)
        data[f"note_{index}"] = (notes or [""] * len(ratings))[index]
    return client.post(page_url(scheme, rollout), data)


def test_staff_adjudicate_and_the_history_keeps_who_when_why(staff_client, staff_user, labelled):
    scheme, r = labelled
    response = adjudicate(staff_client, scheme, r["r1"], [1, -1, -1], notes=["", "2 + 2 is 4", ""])
    assert response.status_code == 302 and response["Location"] == page_url(scheme, r["r1"])
    adjudication = Adjudication.objects.get()
    assert (adjudication.scheme, adjudication.rollout) == (scheme, r["r1"])
    assert adjudication.prm_output == [1, 0, 0] and adjudication.rated_steps == 3
    assert adjudication.explanations == ["", "2 + 2 is 4", ""]
    assert adjudication.reason == "bob is right: 2 + 2 = 4" and adjudication.decided_by == staff_user
    first_at = adjudication.decided_at
    page = staff_client.get(page_url(scheme, r["r1"])).content.decode()
    assert ADJUDICATED.split("{")[0] in page and "bob is right" in page
    assert '<th class="col-adjudication">adjudicated</th>' in page
    assert 'name="rating_1" value="-1" checked' in page  # the form shows the decision
    assert 'class="disagreement adjudicated"' in staff_client.get(list_url(scheme)).content.decode()

    again = adjudicate(staff_client, scheme, r["r1"], [1, -1, None], reason="step 3 follows", finish_reason="give_up")
    assert again.status_code == 302
    adjudication.refresh_from_db()
    assert Adjudication.objects.count() == 1
    assert adjudication.prm_output == [1, 0, 2] and adjudication.rated_steps == 2
    assert adjudication.reason == "step 3 follows" and adjudication.decided_at >= first_at
    history = list(adjudication.history.order_by("history_date"))
    assert [h.history_type for h in history] == ["+", "~"]
    assert [h.reason for h in history] == ["bob is right: 2 + 2 = 4", "step 3 follows"]
    assert {h.history_user for h in history} == {staff_user}


def test_a_refused_adjudication_writes_nothing_and_keeps_the_input(staff_client, labelled):
    scheme, r = labelled
    no_reason = adjudicate(staff_client, scheme, r["r1"], [1, -1, -1], reason="  ", notes=["", "kept note", ""])
    html = no_reason.content.decode()
    assert no_reason.status_code == 400
    assert "reason" in html and 'value="kept note"' in html and 'name="rating_1" value="-1" checked' in html
    gap = adjudicate(staff_client, scheme, r["r1"], [1, None, 1], reason="why")
    assert gap.status_code == 400
    assert rules.GAP.format(gap=2, later=3) in gap.content.decode()
    early = adjudicate(staff_client, scheme, r["r1"], [1, 1, None], reason="why")
    assert early.status_code == 400 and "Rate every step" in early.content.decode()
    bad = adjudicate(staff_client, scheme, r["r1"], [1, 7, 1], reason="why")
    assert bad.status_code == 400 and "Step 2, rating" in bad.content.decode()
    assert not Adjudication.objects.exists()


def test_the_service_refuses_a_blank_reason():
    scheme = make_scheme()
    rollout = make_rollout(reasoning=["a"])
    with pytest.raises(rules.RatingsInvalid, match=REASON_REQUIRED):
        adjudication_record(
            scheme=scheme,
            rollout=rollout,
            data=AdjudicationInput(ratings=[1], notes=[""], finish_reason="", reason=" "),
            user=None,
            now=rollout.created_at,
        )


def test_the_consensus_export_takes_adjudicated_labels_first(staff_client, staff_user, labelled, tmp_path, capsys):
    scheme, r = labelled
    plain = consensus_records(scheme=scheme, options=ConsensusOptions(min_labels=2))
    assert [rec["rollout_id"] for rec in plain[0]] == [r["r1"].pk, r["r2"].pk, r["r3"].pk, r["r4"].pk]
    assert plain[0][0]["labels"] == [True]  # steps rule: ann and bob agree on step 1 only
    assert adjudicate(staff_client, scheme, r["r1"], [1, -1, -1]).status_code == 302
    records, tally = consensus_records(scheme=scheme, options=ConsensusOptions(min_labels=2, adjudicated_first=True))
    by_id = {rec["rollout_id"]: rec for rec in records}
    assert by_id[r["r1"].pk]["labels"] == [True, False, False]
    assert by_id[r["r1"].pk]["sources"] == [ADJUDICATION_SOURCE_NAME]
    assert by_id[r["r1"].pk]["adjudicated"] is True and by_id[r["r3"].pk]["adjudicated"] is False
    assert by_id[r["r3"].pk]["sources"] == ["human-v1"]
    assert tally.adjudicated == 1 and tally.records == 4
    # First-error rule: the adjudication names step 2, the labels do not agree.
    first, _ = consensus_records(
        scheme=scheme, options=ConsensusOptions(rule="first_error", min_labels=2, adjudicated_first=True)
    )
    assert {rec["rollout_id"]: rec["labels"] for rec in first}[r["r1"].pk] == [True, False]
    # The adjudication is the rollout's only source: the other sources chosen do not vote on it.
    judged, judged_tally = consensus_records(
        scheme=scheme, options=ConsensusOptions(min_labels=2, versions=("judge-v1",), adjudicated_first=True)
    )
    assert [rec["rollout_id"] for rec in judged] == [r["r1"].pk]
    assert judged_tally.skipped == {MISSING_VERSION: 3}
    # The page and the command.
    url = reverse("labelling:export", kwargs={"prm_version": scheme.prm_version})
    preview = staff_client.get(url, {"adjudicated_first": "on", "min_labels": "2"}).content.decode()
    assert "Records from an adjudicated label" in preview
    target = tmp_path / "consensus.jsonl"
    call_command(
        "export_consensus",
        "--prm_version",
        "human-v1",
        "--output",
        str(target),
        "--adjudicated_first",
        "--min_labels",
        "2",
    )
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["adjudicated"] for row in rows] == [True, False, False, False]
    assert "from an adjudicated label: 1" in capsys.readouterr().out


def test_the_stats_page_links_to_the_review(staff_client, labelled):
    scheme, _ = labelled
    html = staff_client.get(reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version})).content.decode()
    assert f'href="{list_url(scheme)}" id="review-link"' in html
    assert 'name="adjudicated_first"' in html
