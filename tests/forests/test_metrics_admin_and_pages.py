"""The admin actions (search metrics, export download) and the forest page's table and plot."""

from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from datasets import load_dataset, load_from_disk
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.urls import reverse

from forests.search_reports import forest_search_report, forest_search_report_saved
from forests.services import forest_search_report_save
from tests.forests.grown import PROMPTS, grow
from tests.html_checks import assert_inert

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:forests_forest_changelist")


def act(client, action: str, forests, **fields):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [forest.pk for forest in forests], **fields}
    return client.post(CHANGELIST, data)


@pytest.fixture
def user_client(client, django_user_model):
    researcher = django_user_model.objects.create_user(username="researcher", password="a-long-test-password")
    researcher.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(researcher)
    return client


def test_the_metrics_action_asks_for_its_settings_then_saves_the_report(staff_client):
    grown = grow()
    form = act(staff_client, "compute_search_metrics", [grown.forest])
    assert form.status_code == 200
    html = form.content.decode()
    assert 'name="num_beam_values"' in html and 'value="1,5"' in html and 'name="aggregation"' in html
    done = act(
        staff_client,
        "compute_search_metrics",
        [grown.forest],
        apply="1",
        num_beam_values="1,3",
        value_function_option="labelled",
        aggregation="mean",
    )
    assert done.status_code == 302
    grown.forest.refresh_from_db()
    report = forest_search_report_saved(forest=grown.forest)
    assert report["aggregation"] == "mean"
    assert [row["num_beams"] for row in report["results"]] == [1, 3]
    assert report["results"][0]["accuracy"] == 1.0
    page = staff_client.get(done["Location"]).content.decode()
    assert "Search report #" in page and "N=1: 1.000" in page


def test_a_bad_setting_is_shown_on_the_form_and_a_failure_per_forest_as_a_message(staff_client):
    grown = grow()
    bad = act(staff_client, "compute_search_metrics", [grown.forest], apply="1", num_beam_values="x",
              value_function_option="labelled", aggregation="last")  # fmt: skip
    assert bad.status_code == 200 and "whole numbers from 1 up" in bad.content.decode()
    assert 'value="x"' in bad.content.decode()  # the input is kept
    failed = act(staff_client, "compute_search_metrics", [grown.forest], apply="1", num_beam_values="1,4",
                 value_function_option="prm:missing", aggregation="last")  # fmt: skip
    page = failed.content.decode()  # a value source the forest does not have is not offered, and said so in words
    assert failed.status_code == 200 and "prm:missing is not one of this forest" in page and 'value="1,4"' in page
    assert forest_search_report_saved(forest=grown.forest) is None


def test_the_actions_are_for_staff_with_permissions_only(client, django_user_model):
    grown = grow()
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password", is_staff=True)
    client.force_login(user)
    response = act(client, "compute_search_metrics", [grown.forest], apply="1", num_beam_values="1",
                   value_function_option="labelled", aggregation="last")  # fmt: skip
    assert response.status_code == 403  # no view permission on forests: the admin refuses the changelist
    user.user_permissions.add(Permission.objects.get(codename="view_forest"))
    form = act(client, "compute_search_metrics", [grown.forest])
    assert form.status_code == 302  # viewing is not enough to compute and save metrics: no such action
    grown.forest.refresh_from_db()
    assert forest_search_report_saved(forest=grown.forest) is None
    download = act(client, "download_export", [grown.forest])
    assert download.status_code == 200 and 'name="kind"' in download.content.decode()  # viewers may download


def test_the_forest_page_shows_the_saved_table_and_plot(user_client):
    grown = grow()
    html = user_client.get(reverse("forests:detail", args=[grown.forest.name])).content.decode()
    assert 'id="search-report"' not in html

    report = forest_search_report(
        forest=grown.forest, num_beam_values=[1, 5], value_function_option="labelled", aggregation="last"
    )
    forest_search_report_save(forest=grown.forest, report=report.as_dict())
    html = user_client.get(reverse("forests:detail", args=[grown.forest.name])).content.decode()
    table = re.search(r'<table class="grid" id="beam-results">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r'<td class="num">(.*?)</td>', table) == ["1", "1.000 ± 0.000", "2", "5", "1.000 ± 0.000", "2"]
    baselines = re.search(r'<table class="grid" id="baselines"[^>]*>(.*?)</table>', html, re.S).group(1)
    assert "majority vote (self-consistency)" in baselines and "oracle (any rollout correct)" in baselines
    plot_url = reverse("forests:search_plot", args=[grown.forest.name])
    img = (
        f'<img id="search-plot" src="{plot_url}" alt="Accuracy against N with the baselines" width="700" height="420">'
    )
    assert img in html
    assert_inert(html.replace(img, ""))  # the page's own plot is the one image
    assert reverse("forests:search_reports", args=[grown.forest.name]) in html
    plot = user_client.get(plot_url)
    assert plot.status_code == 200 and plot["Content-Type"] == "image/svg+xml"
    assert plot.content.startswith(b"<?xml") and b"<script" not in plot.content


def test_the_plot_needs_a_login_and_a_saved_report(client, user_client):
    grown = grow()
    url = reverse("forests:search_plot", args=[grown.forest.name])
    assert user_client.get(url).status_code == 404
    forest_search_report_save(forest=grown.forest, report={"results": [], "baselines": {}, "aggregation": "last"})
    assert client.logout() is None
    anonymous = type(client)().get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))


def test_saving_a_report_keeps_the_forests_other_attributes():
    grown = grow()
    grown.forest.attributes = {"limit": 3}
    grown.forest.save()
    forest_search_report_save(forest=grown.forest, report={"results": [], "baselines": {}, "aggregation": "last"})
    grown.forest.refresh_from_db()
    assert grown.forest.attributes == {"limit": 3} and grown.forest.search_reports.count() == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf_disk"])
def test_the_export_action_downloads_the_same_file_as_the_command(staff_client, tmp_path, fmt):
    grown = grow()
    form = act(staff_client, "download_export", [grown.forest])
    assert form.status_code == 200 and 'name="kind"' in form.content.decode()
    response = act(
        staff_client, "download_export", [grown.forest], apply="1", kind="pairs", format=fmt,
        value_function_option="labelled", min_margin="0", paths="distinct", threshold="0", placeholder_token="ки",
    )  # fmt: skip
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    disposition = response["Content-Disposition"]
    assert disposition.startswith("attachment") and f"{grown.forest.name}-pairs" in disposition
    if fmt == "hf_disk":
        zipfile.ZipFile(io.BytesIO(body)).extractall(tmp_path)
        dataset = load_from_disk(str(tmp_path / f"{grown.forest.name}-pairs"))
    else:
        path = tmp_path / f"pairs.{fmt}"
        path.write_bytes(body)
        dataset = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(path), split="train")
    assert len(dataset) == 5 and dataset[0]["prompt"] == PROMPTS["A"]


def test_the_export_action_takes_one_forest_and_shows_errors_on_its_form(staff_client):
    grown = grow()
    other = grow("second-forest")
    response = act(staff_client, "download_export", [grown.forest, other.forest])
    page = staff_client.get(response["Location"]).content.decode()
    assert "Select exactly one forest to export." in page
    failed = act(
        staff_client, "download_export", [grown.forest], apply="1", kind="pairs", format="jsonl",
        value_function_option="labelled", min_margin="5", paths="distinct", threshold="0", placeholder_token="ки",
    )  # fmt: skip
    assert failed.status_code == 200 and "nothing to export" in failed.content.decode()


def test_the_saved_report_is_json_that_matches_the_command_output(tmp_path):
    grown = grow()
    output = tmp_path / "r.json"
    call_command(
        "beam_search", "--forest_name", grown.forest.name, "--output_json", str(output), "--save",
        stdout=io.StringIO(), stderr=io.StringIO(),
    )  # fmt: skip
    grown.forest.refresh_from_db()
    saved = forest_search_report_saved(forest=grown.forest)
    written = json.loads(output.read_text())
    assert {key: saved[key] for key in written} == written
