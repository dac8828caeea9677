"""The PRM comparison page: a forest's PRM versions and labelling schemes against a reference, with evaluate_prm's
figures (the same function), coverage, the newest search report of each on one plot, and the steps farthest from
the exact values linked to the tree; closed like the forest pages; a 400 in one line for a bad choice; a fixed
number of queries however large the forest."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from forests.prm_comparison import (
    EXACT_NOT_COMPARED,
    NO_SOURCES,
    SAME_AS_REFERENCE,
    SOURCES_MAX,
    TOO_MANY_SOURCES,
)
from forests.prm_evaluation import REFERENCE_INVALID, prm_evaluation
from forests.search_reports import forest_search_report
from forests.services import forest_search_report_save
from forests.tree_sources import BAD_THRESHOLD, UNKNOWN_SOURCE
from tests.factories import make_forest, make_label
from tests.forests.grown import add_rollout, grow
from tests.html_checks import assert_no_live_markup
from tests.rollouts.labelling.conftest import make_scheme

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    viewer.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(viewer)
    return client


def labelled_grown():
    """The grown forest with a PRM (prm-v1: high on u1, a wrong step) and a labelling scheme (human-v1)."""
    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.9, 0.9])
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), prm_version="prm-v1", prm_output=[1.0, 1.0, 1.0])
    make_label(grown.rollout("B", "b1 ", "no"), prm_version="prm-v1", prm_output=[0.2, 0.1])
    make_scheme("human-v1")
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), prm_version="human-v1", prm_output=[1, 0, 1])
    return grown


def page(client, forest_name: str, **query):
    return client.get(reverse("forests:prm_compare", args=[forest_name]), query)


def test_the_page_is_closed_to_anonymous_users_and_to_logins_without_the_viewer_permission(client, django_user_model):
    grown = labelled_grown()
    url = reverse("forests:prm_compare", args=[grown.forest.name])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
    client.force_login(django_user_model.objects.create_user(username="labeller", password="a-long-test-password"))
    assert client.get(url).status_code == 403
    assert client.post(url).status_code in (403, 405)


def test_every_source_by_default_with_evaluate_prms_figures_and_coverage(viewer_client):
    grown = labelled_grown()
    response = page(viewer_client, grown.forest.name)
    assert response.status_code == 200
    rows = {row["c"].source: row["c"] for row in response.context["rows"]}
    assert list(rows) == ["labels:human-v1", "prm:prm-v1"]
    expected = prm_evaluation(prm_version="prm-v1", reference="labelled", forest=grown.forest).as_dict()
    assert rows["prm:prm-v1"].figures == expected
    scheme = prm_evaluation(prm_version="human-v1", reference="labelled", forest=grown.forest, codes=True).as_dict()
    assert rows["labels:human-v1"].figures == scheme and rows["labels:human-v1"].not_scored is None
    assert (rows["prm:prm-v1"].rollouts, rows["prm:prm-v1"].forest_rollouts) == (3, 8)
    html = response.content.decode()
    assert "3 of 8 rollouts" in html and "1 of 8 rollouts" in html
    assert f"{expected['num_rollouts']}</td>" in html
    # The forest page links here.
    detail = viewer_client.get(reverse("forests:detail", args=[grown.forest.name])).content.decode()
    assert reverse("forests:prm_compare", args=[grown.forest.name]) in detail


def test_a_labelling_scheme_as_the_reference(viewer_client):
    grown = labelled_grown()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="human-v1", prm_output=[0, 0])
    response = page(
        viewer_client, grown.forest.name, reference="labels:human-v1", sources="prm:prm-v1", threshold="0.3"
    )
    assert response.status_code == 200
    (row,) = response.context["rows"]
    expected = prm_evaluation(
        prm_version="prm-v1", reference="labels:human-v1", forest=grown.forest, threshold=0.3
    ).as_dict()
    assert row["c"].figures == expected and expected["num_rollouts"] == 1  # u1: the one rollout both label


def test_a_labelling_scheme_is_scored_with_its_codes_read_as_values(viewer_client):
    """human-v1 at threshold 0.6 against the exact values (tests/forests/grown.py):
    - s1 t2 yes, codes [1, 0, 1] -> values [1, 0, 1]; every exact value > 0 (a correct rollout): the scheme's first
      step below 0.6 is step 1, so it does not pass the rollout whole; steps agreeing: 2 of 3.
    - u1 no, codes [2, 0] -> values [0.5, 0]; exact values 0 and 0 (first error at step 0): neutral reads 0.5, below
      0.6, so the scheme finds that first error (the raw code 2 would pass the step); steps agreeing: 2 of 2.
    """
    grown = labelled_grown()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="human-v1", prm_output=[2, 0])
    response = page(viewer_client, grown.forest.name, sources="labels:human-v1", threshold="0.6")
    assert response.status_code == 200
    (row,) = response.context["rows"]
    figures = row["c"].figures
    assert (figures["num_rollouts"], figures["num_erroneous"], figures["num_correct"]) == (2, 1, 1)
    assert (figures["error_accuracy"], figures["correct_accuracy"], figures["f1"]) == (1.0, 0.0, 0.0)
    assert (figures["step_agreement"], figures["num_steps"]) == (0.8, 5)
    assert figures["prm_version"] == "human-v1" and figures["reference"] == "labelled"
    html = response.content.decode()
    assert "not scored" not in html and "0.8" in html


def test_a_scheme_chosen_as_the_reference_is_not_scored_against_itself(viewer_client):
    grown = labelled_grown()
    response = page(viewer_client, grown.forest.name, sources="labels:human-v1", reference="labels:human-v1")
    (row,) = response.context["rows"]
    assert row["c"].figures is None and row["c"].not_scored == SAME_AS_REFERENCE


def test_the_steps_farthest_from_the_exact_values_link_to_the_tree_with_both_sources(viewer_client):
    grown = labelled_grown()
    response = page(viewer_client, grown.forest.name, sources=["prm:prm-v1", "labels:human-v1"])
    rows = {row["c"].source: row for row in response.context["rows"]}
    prm = rows["prm:prm-v1"]["disagreements"]
    # u1, u1.no: 0.9 against 0; b1.no: 0.1 against 1 (ties by id); s1.s2: 1 against 2/3; b1: 0.2 against 1/2; s1: 1
    # against 3/4; ...
    nodes = [d.node_id for d, _ in prm]
    u1, u1_no = grown.node("A", "u1 "), grown.node("A", "u1 ", "no")
    assert nodes[:2] == [u1.pk, u1_no.pk]
    assert nodes[2:6] == [
        grown.node("B", "b1 ", "no").pk,
        grown.node("A", "s1 ", "s2 ").pk,
        grown.node("B", "b1 ").pk,
        grown.node("A", "s1 ").pk,
    ]
    first, link = prm[0]
    assert (first.exact, first.exact_count, first.source, first.source_count) == (0.0, 1, 0.9, 1)
    tree = reverse("forests:tree", args=[grown.forest.name, grown.roots["A"].pk])
    assert link == f"{tree}?source=exact&compare=prm%3Aprm-v1#node-{u1.pk}"
    scheme = rows["labels:human-v1"]["disagreements"]
    assert scheme[0][0].node_id == grown.node("A", "s1 ", "t2 ").pk and scheme[0][0].difference == 1.0
    html = response.content.decode()
    assert link.replace("&", "&amp;") in html
    # The tree page opens on it.
    assert viewer_client.get(link.split("#")[0]).status_code == 200


def test_the_newest_search_report_of_each_source_on_one_plot_and_a_word_for_the_others(viewer_client):
    grown = labelled_grown()

    def keep(option):
        report = forest_search_report(
            forest=grown.forest, num_beam_values=[1, 2], value_function_option=option, aggregation="last"
        )
        return forest_search_report_save(forest=grown.forest, report=report.as_dict())

    keep("prm:prm-v1")
    newest = keep("prm:prm-v1")
    response = page(viewer_client, grown.forest.name)
    assert response.context["report_ids"] == str(newest.pk)
    html = response.content.decode()
    assert f"{reverse('forests:search_reports_plot', args=[grown.forest.name])}?ids={newest.pk}" in html
    assert 'id="missing-reports"' in html and "<code>labels:human-v1</code>" in html
    assert (
        viewer_client.get(
            f"{reverse('forests:search_reports_plot', args=[grown.forest.name])}?ids={newest.pk}"
        ).status_code
        == 200
    )


def test_a_forest_without_labels_says_so(viewer_client):
    grown = grow()
    response = page(viewer_client, grown.forest.name)
    assert response.status_code == 200 and NO_SOURCES in response.content.decode()
    assert page(viewer_client, "no-such-forest").status_code == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sources": "prm:nope"}, UNKNOWN_SOURCE.format(source="prm:nope", forest="metrics-forest")),
        ({"sources": "labelled"}, EXACT_NOT_COMPARED),
        ({"reference": "prm:prm-v1"}, REFERENCE_INVALID.format(reference="prm:prm-v1")),
        ({"reference": "labels:nope"}, UNKNOWN_SOURCE.format(source="labels:nope", forest="metrics-forest")),
        ({"threshold": "2"}, BAD_THRESHOLD),
        ({"threshold": "nan"}, BAD_THRESHOLD),
        ({"threshold": "x"}, BAD_THRESHOLD),
    ],
)
def test_a_bad_choice_is_a_400_in_one_line(viewer_client, query, message):
    labelled_grown()
    response = page(viewer_client, "metrics-forest", **query)
    assert response.status_code == 400
    assert response.content.decode() == message and "\n" not in message


def test_a_source_that_is_not_a_value_function_and_too_many_sources_are_400s(viewer_client):
    grown = labelled_grown()
    response = page(viewer_client, grown.forest.name, sources="<b>junk</b>")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/plain")
    for i in range(SOURCES_MAX + 1):
        make_label(grown.rollout("B", "c1 ", "yes"), prm_version=f"v{i}", prm_output=[0.5, 0.5])
    response = page(viewer_client, grown.forest.name, sources=",".join(f"prm:v{i}" for i in range(SOURCES_MAX + 1)))
    assert response.status_code == 400 and response.content.decode() == TOO_MANY_SOURCES.format(max=SOURCES_MAX)
    # None asked: the first SOURCES_MAX, not a 400.
    response = page(viewer_client, grown.forest.name)
    assert response.status_code == 200 and len(response.context["rows"]) == SOURCES_MAX


def test_a_hostile_version_name_is_shown_inert(viewer_client):
    grown = grow()
    hostile = '<script>alert("x")</script>'
    make_label(grown.rollout("A", "u1 ", "no"), prm_version=hostile, prm_output=[0.9, 0.9])
    response = page(viewer_client, grown.forest.name)
    assert response.status_code == 200
    assert_no_live_markup(response.content.decode())


def test_a_fixed_number_of_queries_however_large_the_forest(viewer_client):
    grown = labelled_grown()
    make_forest("other-forest")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert page(viewer_client, grown.forest.name).status_code == 200
        return len(captured)

    before = queries()
    for steps in (["d1 ", "no"], ["d1 ", "yes"], ["e1 ", "f1 ", "yes"], ["g1 ", "no"]):
        for tree in ("B", "C"):
            rollout = add_rollout(tree, steps, 1)
            make_label(rollout, prm_version="prm-v1", prm_output=[0.4] * len(steps))
            make_label(rollout, prm_version="human-v1", prm_output=[1] * len(steps))
    assert queries() == before
