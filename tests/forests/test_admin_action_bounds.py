"""The admin's export and search-metrics actions do a bounded amount of work per request, with the same checks as
the commands (issue 17, item 9): a 2,000-character openrlhf placeholder answered 949 MiB (6.3 GB of server memory), a
5 MB one was a 500, N = 1..2000 ran past a 180 s client timeout. Hostile parameters are a form error (never a 500, never
an export), downloads stream from the file, and the commands refuse the same values in one line."""

from __future__ import annotations

import io
import tempfile

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.http import FileResponse
from django.test import Client

import forests.admin
from forests.admin import ACTION_TOO_LARGE
from forests.metrics.export.options import (
    MIN_MARGIN_INVALID,
    PLACEHOLDER_CONTROL,
    PLACEHOLDER_EMPTY,
    PLACEHOLDER_MAX_CHARS,
    PLACEHOLDER_TOO_LONG,
    THRESHOLD_INVALID,
    ExportOptions,
    placeholder_token_check,
)
from forests.metrics.search import (
    MAX_BEAM_VALUES,
    MAX_NUM_BEAMS,
    NUM_BEAMS_TOO_LARGE,
    NUM_BEAMS_TOO_MANY,
    parse_num_beam_values,
)
from forests.models import Node
from forests.search_reports import forest_search_report_saved
from tests.forests.grown import grow
from tests.forests.test_metrics_admin_and_pages import act

pytestmark = pytest.mark.django_db

EXPORT_FIELDS = {
    "apply": "1",
    "kind": "openrlhf",
    "format": "jsonl",
    "value_function_option": "labelled",
    "min_margin": "0",
    "paths": "distinct",
    "threshold": "0",
}
METRICS_FIELDS = {"apply": "1", "value_function_option": "labelled", "aggregation": "last"}


@pytest.fixture
def viewer_client(django_user_model):
    """Staff with the view permission only: enough for "Download an export" (a client of its own)."""
    client = Client()
    viewer = django_user_model.objects.create_user(username="viewer", password="a-long-test-password", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    client.force_login(viewer)
    return client


@pytest.fixture
def export_dirs(tmp_path, monkeypatch):
    """Exports go to a temporary folder of this test's own; returns a function listing what is left in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return lambda: sorted(path.name for path in folder.iterdir())


# --- the one validator of each parameter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("", PLACEHOLDER_EMPTY),
        ("x" * (PLACEHOLDER_MAX_CHARS + 1), PLACEHOLDER_TOO_LONG.format(max=PLACEHOLDER_MAX_CHARS, length=33)),
        ("a\nb", PLACEHOLDER_CONTROL),
        ("a\x00b", PLACEHOLDER_CONTROL),
        ("\t", PLACEHOLDER_CONTROL),
        ("a\u2028", PLACEHOLDER_CONTROL),
    ],
)
def test_a_placeholder_is_short_and_printable(token, message):
    with pytest.raises(ValueError) as refused:
        placeholder_token_check(token)
    assert str(refused.value) == message
    with pytest.raises(ValueError):
        ExportOptions(kind="openrlhf", placeholder_token=token)


def test_ordinary_placeholders_pass():
    for token in ("ки", "<step>", "<|reserved_special_token_0|>", "x" * PLACEHOLDER_MAX_CHARS):
        assert ExportOptions(kind="openrlhf", placeholder_token=token).placeholder_token == token


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_margin": float("nan")}, MIN_MARGIN_INVALID.format(value=float("nan"))),
        ({"min_margin": -1.0}, MIN_MARGIN_INVALID.format(value=-1.0)),
        ({"threshold": float("inf")}, THRESHOLD_INVALID.format(value=float("inf"))),
        ({"max_pairs_per_node": 0}, "max_pairs_per_node"),
        ({"paths": "every"}, "paths must be one of"),
    ],
)
def test_every_export_option_is_checked_once(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExportOptions(**fields)


def test_num_beam_values_are_few_and_bounded():
    assert parse_num_beam_values(",".join(str(n) for n in range(1, MAX_BEAM_VALUES + 1)))[-1] == MAX_BEAM_VALUES
    assert parse_num_beam_values(f"1,{MAX_NUM_BEAMS}") == [1, MAX_NUM_BEAMS]
    with pytest.raises(ValueError) as refused:
        parse_num_beam_values(",".join(str(n) for n in range(1, 2001)))
    assert str(refused.value) == NUM_BEAMS_TOO_MANY.format(max=MAX_BEAM_VALUES, count=2000)
    with pytest.raises(ValueError) as refused:
        parse_num_beam_values(str(MAX_NUM_BEAMS + 1))
    assert str(refused.value) == NUM_BEAMS_TOO_LARGE.format(max=MAX_NUM_BEAMS, value=MAX_NUM_BEAMS + 1)
    for text in ("9" * 5000, "1," * 10**6, "0", "½", "1e3"):
        with pytest.raises(ValueError):
            parse_num_beam_values(text)


# --- the admin actions ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("x" * 2000, f"Ensure this value has at most {PLACEHOLDER_MAX_CHARS} characters (it has 2000)."),
        ("a\nb", PLACEHOLDER_CONTROL),
        ("a\x0bb", PLACEHOLDER_CONTROL),
    ],
)
def test_a_hostile_placeholder_is_a_form_error_and_exports_nothing(viewer_client, export_dirs, token, message):
    grown = grow()
    response = act(viewer_client, "download_export", [grown.forest], placeholder_token=token, **EXPORT_FIELDS)
    assert response.status_code == 200
    assert not isinstance(response, FileResponse)
    assert message in response.content.decode().replace("&#x27;", "'")
    assert export_dirs() == []


def test_a_placeholder_of_5_mb_is_refused_without_a_500(viewer_client, export_dirs):
    grown = grow()
    response = act(viewer_client, "download_export", [grown.forest], placeholder_token="x" * 5_000_000, **EXPORT_FIELDS)
    assert response.status_code == 200  # within DJANGO_DATA_UPLOAD_MAX_BYTES: the form answers (it was a 500)
    assert f"Ensure this value has at most {PLACEHOLDER_MAX_CHARS} characters" in response.content.decode()
    assert not isinstance(response, FileResponse) and export_dirs() == []


def test_a_download_streams_from_a_file_already_removed_from_its_folder(viewer_client, export_dirs, monkeypatch):
    reads: list[int] = []
    handles: list[io.BufferedReader] = []

    class CountingReader(io.BufferedReader):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    def counting_open(path, mode="r"):
        assert mode == "rb"
        handles.append(CountingReader(io.FileIO(path, "r")))
        return handles[-1]

    monkeypatch.setattr(forests.admin, "open", counting_open, raising=False)
    grown = grow()
    response = act(viewer_client, "download_export", [grown.forest], placeholder_token="<step>", **EXPORT_FIELDS)
    assert response.status_code == 200 and isinstance(response, FileResponse) and response.streaming
    assert reads == []  # nothing of the file was read into memory to answer
    assert export_dirs() == []  # the export's folder is gone; the open handle keeps the bytes until it is closed
    body = b"".join(response.streaming_content)
    assert reads and all(0 < size <= FileResponse.block_size for size in reads)  # a block at a time, as it is sent
    assert b" <step>" in body
    response.close()
    assert handles[0].closed


def test_too_many_or_too_large_values_of_n_are_a_form_error(staff_client):
    grown = grow()
    for values, message in [
        (",".join(str(n) for n in range(1, 2001)), "at most 200 characters"),
        (",".join(str(n) for n in range(1, 18)), NUM_BEAMS_TOO_MANY.format(max=MAX_BEAM_VALUES, count=17)),
        ("1,5000", NUM_BEAMS_TOO_LARGE.format(max=MAX_NUM_BEAMS, value=5000)),
    ]:
        response = act(staff_client, "compute_search_metrics", [grown.forest], num_beam_values=values, **METRICS_FIELDS)
        assert response.status_code == 200
        assert message in response.content.decode(), message
    grown.forest.refresh_from_db()
    assert forest_search_report_saved(forest=grown.forest) is None


def test_forests_over_the_node_limit_are_left_to_the_commands(staff_client, viewer_client, settings, export_dirs):
    grown = grow()
    nodes = Node.objects.filter(forest=grown.forest).count()
    settings.ADMIN_ACTION_MAX_NODES = nodes - 1
    message = ACTION_TOO_LARGE.format(nodes=nodes, max=nodes - 1, command="beam_search --save")
    metrics = act(staff_client, "compute_search_metrics", [grown.forest], num_beam_values="1", **METRICS_FIELDS)
    assert metrics.status_code == 200 and message in metrics.content.decode()
    grown.forest.refresh_from_db()
    assert forest_search_report_saved(forest=grown.forest) is None
    export = act(viewer_client, "download_export", [grown.forest], placeholder_token="<s>", **EXPORT_FIELDS)
    assert export.status_code == 200 and not isinstance(export, FileResponse)
    assert ACTION_TOO_LARGE.format(nodes=nodes, max=nodes - 1, command="export_preferences") in export.content.decode()
    assert export_dirs() == []
    settings.ADMIN_ACTION_MAX_NODES = nodes
    done = act(staff_client, "compute_search_metrics", [grown.forest], num_beam_values="1", **METRICS_FIELDS)
    assert done.status_code == 302


# --- the commands: the same validators, one line ------------------------------------------------------------------


def test_the_commands_refuse_the_same_values_in_one_line(tmp_path):
    grown = grow()
    output = tmp_path / "out.jsonl"
    for token, message in [("x" * 2000, PLACEHOLDER_TOO_LONG.format(max=PLACEHOLDER_MAX_CHARS, length=2000))]:
        with pytest.raises(CommandError) as refused:
            call_command(
                "export_preferences", "--forest_name", grown.forest.name, "--output", str(output),
                "--kind", "openrlhf", "--placeholder_token", token, stderr=io.StringIO(),
            )  # fmt: skip
        assert str(refused.value) == f"export_preferences: {message}"
    values = ",".join(str(n) for n in range(1, 2001))
    with pytest.raises(CommandError) as refused:
        call_command(
            "beam_search", "--forest_name", grown.forest.name, "--num_beam_values", values,
            stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    assert str(refused.value) == "beam_search: " + NUM_BEAMS_TOO_MANY.format(max=MAX_BEAM_VALUES, count=2000)
    assert "\n" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []
