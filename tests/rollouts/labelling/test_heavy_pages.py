"""The labelling page of a rollout of long steps parses a bounded amount of markdown per view and still shows every
character of every step (issue 17, item 7: one heavy rollout made a page of 14-16 s)."""

from __future__ import annotations

import html as html_lib

import pytest
from markdown_it import MarkdownIt

import prmsite.core.rendering
from tests.factories import make_label, make_rollout
from tests.rollouts.labelling.conftest import claim_next, rollout_url

pytestmark = pytest.mark.django_db

STEP_CHARS = 200_000


def heavy_step(step: int) -> str:
    return (f"**Step {step}** checks `a < b` & more. " + "words of a long step " * (STEP_CHARS // 21 + 1))[:STEP_CHARS]


@pytest.fixture
def markdown_work(monkeypatch):
    """The length of every text markdown-it parses (the render cache emptied first, so that every parse counts)."""
    parsed: list[int] = []
    real = MarkdownIt.render

    def counting(self, text: str, env=None) -> str:
        parsed.append(len(text))
        return real(self, text, env)

    monkeypatch.setattr(MarkdownIt, "render", counting)
    prmsite.core.rendering._cache.clear()
    return parsed


@pytest.fixture
def heavy_rollout():
    return make_rollout(reasoning=[heavy_step(i) for i in range(5)], prediction=1, ground_truth=1)


def test_the_labelling_page_of_a_heavy_rollout_parses_a_bounded_amount(
    labeller_client, scheme, heavy_rollout, markdown_work, settings
):
    assert claim_next(labeller_client, scheme) == heavy_rollout.pk
    response = labeller_client.get(rollout_url(scheme, heavy_rollout.pk))
    assert response.status_code == 200
    assert sum(markdown_work) <= settings.PAGE_MARKDOWN_MAX_CHARS  # was 1,000,000 characters
    page = response.content.decode()
    assert "<strong>every</strong>" in page  # the instructions fit the budget: read as markdown
    assert '<pre class="plain-text">**Step 0** checks `a &lt; b` &amp; more.' in page  # a step past it: plain text
    for step in heavy_rollout.reasoning:  # every character of every step is on the page: the labeller rates them
        assert html_lib.escape(step) in page or step in page


def test_the_labelled_page_of_a_heavy_rollout_parses_a_bounded_amount(
    labeller_client, labeller, scheme, heavy_rollout, markdown_work, settings
):
    make_label(heavy_rollout, prm_version=scheme.prm_version, labelled_by=labeller.get_username(), prm_output=[1] * 5)
    response = labeller_client.get(rollout_url(scheme, heavy_rollout.pk))
    assert response.status_code == 200
    assert sum(markdown_work) <= settings.PAGE_MARKDOWN_MAX_CHARS
    assert html_lib.escape(heavy_rollout.reasoning[-1]) in response.content.decode()
