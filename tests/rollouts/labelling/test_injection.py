"""Model output, instructions, notes, user and version names are shown inert on every labelling page: markdown goes
through the forests' sanitising renderer, everything else is escaped."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from rollouts.labels import label_create
from rollouts.models import LabelDraft
from tests.factories import make_rollout
from tests.html_checks import _EVENT_ATTRIBUTE, _SCRIPT_URL, assert_inert
from tests.rollouts.labelling.conftest import (
    claim_next,
    form_data,
    make_labeller,
    make_scheme,
    md_fragments,
    rollout_url,
    submit,
)

pytestmark = pytest.mark.django_db

PAYLOADS = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    "[click](javascript:alert(3))",
    '<a href="javascript:alert(4)">link</a>',
    "<svg onload=alert(5)></svg>",
    '<iframe src="javascript:alert(6)"></iframe>',
    "<form action=/x><input name=a onfocus=alert(7) autofocus></form>",
]
HOSTILE = "\n\n".join(PAYLOADS)
NOTE = "</textarea><script>alert(8)</script>"


def assert_page_inert(html: str) -> None:
    """No injected script, handler, script URL anywhere, and no active element where rendered text goes.

    Text put into an attribute value (a version name as a checkbox's value) is escaped, quotes included, so an
    "onload=" inside a quoted value is text, not an attribute: values are blanked before looking for handlers."""
    assert "<script>alert" not in html
    assert not re.search(r"<script[^>]*>[^<]*alert", html)
    tags = re.sub(r'="[^"]*"', '=""', html)
    assert not _EVENT_ATTRIBUTE.search(tags), "an event-handler attribute survived"
    assert not _SCRIPT_URL.search(html), "a javascript:/data: URL survived"
    fragments = md_fragments(html)
    for fragment in fragments:
        assert_inert(fragment)
    return fragments


def test_hostile_text_is_inert_on_the_labelling_pages(client):
    user = make_labeller("ann")
    scheme = make_scheme("human-x", title="<b>Title</b><script>alert(0)</script>", instructions=HOSTILE)
    rollout = make_rollout(example=HOSTILE, reasoning=[HOSTILE, "**fine** step"])
    client.force_login(user)
    for url in (reverse("labelling:schemes"), reverse("labelling:scheme", kwargs={"prm_version": "human-x"})):
        html = client.get(url).content.decode()
        assert_page_inert(html)
        assert "&lt;b&gt;Title&lt;/b&gt;" in html
    claim_next(client, scheme)
    client.post(rollout_url(scheme, rollout.pk), form_data([1, None], notes=[NOTE, ""], action="save"))
    assert LabelDraft.objects.get().notes[0] == NOTE
    html = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    fragments = assert_page_inert(html)
    assert len(fragments) == 4  # instructions, prompt, two steps
    assert "<strong>fine</strong>" in html  # markdown still renders
    assert "&lt;/textarea&gt;&lt;script&gt;alert(8)&lt;/script&gt;</textarea>" in html
    invalid = client.post(rollout_url(scheme, rollout.pk), form_data([1, None], notes=[NOTE, ""]))
    assert invalid.status_code == 400
    assert_page_inert(invalid.content.decode())
    submit(client, scheme, rollout.pk, [1, -1], notes=[NOTE, ""])
    labelled = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert "You labelled this rollout" in labelled
    assert_page_inert(labelled)
    assert "&lt;/textarea&gt;&lt;script&gt;" in labelled
    revise = reverse("labelling:revise", kwargs={"prm_version": "human-x", "rollout_id": rollout.pk})
    html = client.get(revise).content.decode()
    assert_page_inert(html)
    assert "&lt;/textarea&gt;&lt;script&gt;alert(8)&lt;/script&gt;</textarea>" in html
    assert client.post(revise, form_data([1, 1], notes=[NOTE, NOTE])).status_code == 302
    revised = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert "revised it 1 time" in revised
    assert_page_inert(revised)


def test_hostile_names_are_inert_on_the_staff_pages(staff_client, django_user_model):
    scheme = make_scheme("human-x", instructions=HOSTILE, labels_per_rollout=2)
    rollout = make_rollout(example=HOSTILE, reasoning=[HOSTILE, "ok"])
    for who in ("ann", "eve<script>alert(9)</script>"):
        label_create(
            rollout_id=rollout.pk,
            prm_version="human-x",
            prm_output=[1, 0],
            worker=who,
            labelled_by=who,
            attributes={"finish_reason": "<img src=x onerror=alert(10)>", "rated_steps": 2},
        )
    label_create(rollout_id=rollout.pk, prm_version="<svg onload=alert(11)>", prm_output=[1, 1], worker="judge")
    html = staff_client.get(reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version})).content.decode()
    assert_page_inert(html)
    assert "eve&lt;script&gt;alert(9)&lt;/script&gt;" in html
    export = staff_client.get(
        reverse("labelling:export", kwargs={"prm_version": scheme.prm_version}), {"rule": "steps"}
    )
    page = export.content.decode()
    assert "Records kept" in page
    assert_page_inert(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the first record, shown as escaped JSON


def test_a_labellers_page_for_a_hostile_version_name_is_a_plain_404(client):
    client.force_login(make_labeller("ann"))
    response = client.get("/label/%3Cscript%3Ealert(1)%3C%2Fscript%3E/")
    assert response.status_code == 404
    assert "<script>alert" not in response.content.decode()


def test_the_consensus_preview_shows_the_first_record_with_its_math_and_nothing_live(staff_client):
    make_scheme("human-m", labels_per_rollout=1)
    steps = ["Halve: $\\frac{10}{28} = \\frac{5}{14}$ <script>alert(1)</script>", "So \\(x^2\\) stays."]
    rollout = make_rollout(example="What is \\[\\frac{10}{28}\\] reduced?", reasoning=steps)
    label_create(rollout_id=rollout.pk, prm_version="human-m", prm_output=[1, 0], worker="ann", labelled_by="ann")
    page = staff_client.get(reverse("labelling:export", kwargs={"prm_version": "human-m"}), {"rule": "steps"})
    html = page.content.decode()
    assert_page_inert(html)
    preview = html.split("First record as the pages show it", 1)[1]
    assert preview.count("<math") == 3 and "<mfrac>" in preview
    assert "<script>alert(1)" not in preview
