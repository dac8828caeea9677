"""The search reports page: every kept report of a forest, any of them compared on one plot (drawn once per choice,
then cached), each report's own plot drawn at save; closed to anyone without the forest viewer's permission; a fixed
number of queries however many reports. And the admin's action form: the forest's value sources as choices."""

from __future__ import annotations

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from forests import views
from forests.search_reports import COVERAGE_FEW, SOURCE_PRM, forest_search_report
from forests.services import forest_search_report_save
from forests.views import COMPARE_MAX, COMPARE_NOT_FOUND, COMPARE_NOT_NUMBERS, COMPARE_TOO_MANY, SVG_POLICY
from tests.factories import make_label
from tests.forests.grown import grow
from tests.html_checks import assert_no_live_markup

pytestmark = pytest.mark.django_db


def keep(grown, option: str = "labelled", aggregation: str = "last", beams=(1, 2, 4)):
    report = forest_search_report(
        forest=grown.forest, num_beam_values=list(beams), value_function_option=option, aggregation=aggregation
    )
    return forest_search_report_save(forest=grown.forest, report=report.as_dict())


@pytest.fixture
def viewer_client(client, django_user_model):
    viewer = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    viewer.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(viewer)
    return client


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def urls(forest_name: str, report_id: int) -> list[str]:
    return [
        reverse("forests:search_reports", args=[forest_name]),
        reverse("forests:search_reports_plot", args=[forest_name]),
        reverse("forests:search_report_plot", args=[forest_name, report_id]),
        reverse("forests:search_plot", args=[forest_name]),
    ]


def test_the_pages_are_closed_to_anonymous_users_and_to_logins_without_the_viewer_permission(client, django_user_model):
    grown = grow()
    row = keep(grown)
    for url in urls(grown.forest.name, row.pk):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login")), url
    labeller = django_user_model.objects.create_user(username="labeller", password="a-long-test-password")
    client.force_login(labeller)
    for url in urls(grown.forest.name, row.pk):
        assert client.get(url).status_code == 403, url


def test_every_report_is_listed_and_the_newest_of_each_source_compared_by_default(viewer_client):
    grown = grow()
    old_exact = keep(grown)
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.2, 0.1])
    prm = keep(grown, "prm:prm-v1")
    new_exact = keep(grown)
    minimum = keep(grown, aggregation="min")
    response = viewer_client.get(reverse("forests:search_reports", args=[grown.forest.name]))
    assert response.status_code == 200
    html = response.content.decode()
    for row in (old_exact, prm, new_exact, minimum):
        assert f'id="report-{row.pk}"' in html
    assert response.context["compared"] == sorted([prm.pk, new_exact.pk, minimum.pk])
    plot = reverse("forests:search_reports_plot", args=[grown.forest.name])
    assert f'src="{plot}?ids={prm.pk},{new_exact.pk},{minimum.pk}"' in html
    warning = COVERAGE_FEW.format(source="PRM prm-v1", rollouts=8, trees=3, covered_rollouts=1, covered_trees=1)
    assert warning in html  # the PRM reaches one rollout of eight
    assert_no_live_markup(html)
    chosen = viewer_client.get(
        reverse("forests:search_reports", args=[grown.forest.name]), {"ids": [old_exact.pk, prm.pk]}
    )
    assert chosen.context["compared"] == [old_exact.pk, prm.pk]
    forest_page = viewer_client.get(reverse("forests:detail", args=[grown.forest.name])).content.decode()
    assert reverse("forests:search_reports", args=[grown.forest.name]) in forest_page


def test_the_comparison_plot_is_svg_drawn_once_per_choice(viewer_client, monkeypatch):
    grown = grow()
    first, second = keep(grown), keep(grown, aggregation="min")
    drawn = []
    real = views.search_plot
    monkeypatch.setattr(views, "search_plot", lambda reports, **kw: drawn.append(len(reports)) or real(reports, **kw))
    url = reverse("forests:search_reports_plot", args=[grown.forest.name])
    responses = [viewer_client.get(url, {"ids": f"{first.pk},{second.pk}"}) for _ in range(2)]
    assert drawn == [2]  # the second view is served from the cache
    for response in responses:
        assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
        assert response["Content-Security-Policy"] == SVG_POLICY
        assert response.content.startswith(b"<?xml") and b"<script" not in response.content
    assert responses[0].content == responses[1].content
    own = viewer_client.get(reverse("forests:search_report_plot", args=[grown.forest.name, first.pk]))
    assert own.status_code == 200 and own.content.decode() == first.plot_svg and drawn == [2]  # drawn at save
    newest = viewer_client.get(reverse("forests:search_plot", args=[grown.forest.name]))
    assert newest.content.decode() == second.plot_svg


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("3,x", COMPARE_NOT_NUMBERS),
        (",".join(str(n) for n in range(1, COMPARE_MAX + 2)), COMPARE_TOO_MANY.format(max=COMPARE_MAX)),
        ("other", COMPARE_NOT_FOUND),
    ],
)
def test_a_bad_choice_of_reports_is_a_400_with_one_line(viewer_client, ids, message):
    grown = grow()
    other = grow("other-forest")
    keep(grown)
    if ids == "other":
        ids = str(keep(other).pk)
    for name in ("forests:search_reports", "forests:search_reports_plot"):
        response = viewer_client.get(reverse(name, args=[grown.forest.name]), {"ids": ids})
        assert response.status_code == 400 and response.content.decode() == message


def test_a_report_of_another_forest_and_a_forest_without_reports_are_404(viewer_client):
    grown = grow()
    other = grow("other-forest")
    theirs = keep(other)
    assert (
        viewer_client.get(reverse("forests:search_report_plot", args=[grown.forest.name, theirs.pk])).status_code == 404
    )
    assert viewer_client.get(reverse("forests:search_reports_plot", args=[grown.forest.name])).status_code == 404
    page = viewer_client.get(reverse("forests:search_reports", args=[grown.forest.name]))
    assert page.status_code == 200 and "No search report yet." in page.content.decode()


def test_the_page_makes_a_fixed_number_of_queries_however_many_reports(viewer_client):
    grown = grow()
    url = reverse("forests:search_reports", args=[grown.forest.name])
    keep(grown)
    viewer_client.get(url)  # the session and permission caches warm up
    counts = []
    for more in (0, 5):
        for _ in range(more):
            keep(grown, aggregation="min")
        with CaptureQueriesContext(connection) as queries:
            assert viewer_client.get(url).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_the_admin_form_offers_the_forests_value_sources_and_warns_of_few_rollouts(staff_client):
    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.2, 0.1])
    changelist = reverse("admin:forests_forest_changelist")
    selected = {"action": "compute_search_metrics", helpers.ACTION_CHECKBOX_NAME: [grown.forest.pk]}
    form = staff_client.post(changelist, selected).content.decode()
    assert '<option value="prm:prm-v1">' + SOURCE_PRM.format(version="prm-v1", rollouts=1) + "</option>" in form
    assert "--" not in form.split('<form method="post"', 1)[1].split("</form>", 1)[0]  # no command-line flags
    done = staff_client.post(
        changelist,
        {
            **selected,
            "apply": "1",
            "num_beam_values": "1,2",
            "value_function_option": "prm:prm-v1",
            "aggregation": "min",
        },
        follow=True,
    )
    levels = [message.level_tag for message in done.context["messages"]]
    assert levels == ["success", "warning"]
    assert grown.forest.search_reports.get().created_by.username == "staff"


def test_the_export_form_offers_the_forests_value_sources_and_keeps_its_input_on_an_error(staff_client):
    grown = grow()
    make_label(grown.rollout("A", "u1 ", "no"), prm_version="prm-v1", prm_output=[0.2, 0.1])
    changelist = reverse("admin:forests_forest_changelist")
    selected = {"action": "download_export", helpers.ACTION_CHECKBOX_NAME: [grown.forest.pk]}
    form = staff_client.post(changelist, selected).content.decode()
    assert '<option value="prm:prm-v1">' in form and '<option value="labelled" selected>' in form
    fields = {"kind": "pairs", "format": "jsonl", "min_margin": "5", "paths": "distinct", "threshold": "0.25"}
    failed = staff_client.post(
        changelist,
        {**selected, **fields, "apply": "1", "value_function_option": "prm:prm-v1", "placeholder_token": "x"},
    )
    html = failed.content.decode()
    assert failed.status_code == 200 and '<option value="prm:prm-v1" selected>' in html and 'value="0.25"' in html
