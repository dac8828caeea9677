"""Text fields render as markdown (tables, fenced code), and whatever HTML a model writes is made inert."""

from __future__ import annotations

import pytest

from prmsite.core.rendering import RENDER_MAX_CHARS, PageBudget, render_markdown
from tests.html_checks import assert_inert


def test_tables_render():
    html = render_markdown("| claim | verdict |\n| --- | :-: |\n| sky is green | false |")
    assert "<table>" in html
    assert "<th>claim</th>" in html
    assert '<td style="text-align:center">false</td>' in html


def test_fenced_code_renders_with_its_language_and_stays_escaped():
    html = render_markdown("```python\nif a < b:\n    print('<b>')\n```")
    assert '<pre><code class="language-python">' in html
    assert "if a &lt; b:" in html
    assert "&lt;b&gt;" in html


def test_emphasis_lists_and_safe_links_render():
    html = render_markdown("**bold** and *it*\n\n- one\n- two\n\n[site](https://example.org)")
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html
    assert "<li>one</li>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">site</a>' in html


def test_the_underline_tags_of_the_liar_template_survive():
    assert "<u>Step 1: Understanding the statement</u>" in render_markdown("<u>Step 1: Understanding the statement</u>")


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("<script>alert('x')</script>", ["<script", "alert("]),
        ("hi <img src=x onerror=alert(1)>", ["onerror", "<img"]),
        ("[click](javascript:alert(1))", ['href="javascript:']),
        ('<a href="javascript:alert(1)">x</a>', ["javascript:"]),
        ('<a href="https://ok.org" onclick="steal()">x</a>', ["onclick", "steal"]),
        ("<iframe src='https://evil.example'></iframe>", ["<iframe", "evil.example"]),
        ("<style>body{display:none}</style>", ["<style", "display:none"]),
        ('<p style="background:url(x)">x</p>', ["style="]),
        ("<svg onload=alert(1)><circle/></svg>", ["<svg", "onload"]),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", ['href="data:']),
        ("<form action=/x><input name=a></form>", ["<form", "<input"]),
    ],
)
def test_injected_html_never_survives(text, forbidden):
    html = render_markdown(text)
    for fragment in forbidden:
        assert fragment not in html
    assert_inert(html)


def test_rendering_is_the_same_on_every_call():
    # Parsers are reused and results cached: state from a document must not leak into the next.
    first = render_markdown("Footnote-free [ref]: https://a.example\n\ntext")
    render_markdown("| a |\n|---|\n| b |")
    assert render_markdown("Footnote-free [ref]: https://a.example\n\ntext") == first


@pytest.mark.parametrize(
    "text",
    [
        "- " * 496 + "x",  # recursed past Python's limit in Python-Markdown: a permanent 500 on the tree page
        "> " * 5000 + "x",
        "[" * 45000,  # took minutes of CPU in Python-Markdown
        "[a](" * 20000,
        "*a " * 30000,
        "|a|\n|-|\n" + "|x|\n" * 5000,
    ],
)
def test_pathological_markdown_renders_without_failing(text):
    html = render_markdown(text)
    assert isinstance(html, str) and html


def test_pathological_markdown_renders_in_seconds_not_minutes():
    # A hang guard, not a speed goal: a child process must finish these well inside the timeout (the old renderer
    # needed minutes for the brackets alone). The linear growth itself is measured by bench/bench_rendering.py.
    import subprocess
    import sys

    code = (
        "from prmsite.core.rendering import render_markdown\n"
        "for text in ['[' * 45000, '- ' * 496 + 'x', '[a](' * 20000, '<' * 50000]:\n"
        "    render_markdown(text)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_text_over_the_render_limit_is_shown_as_escaped_plain_text(monkeypatch):
    from prmsite.core import rendering

    monkeypatch.setattr(rendering, "RENDER_MAX_CHARS", 10)
    html = rendering.render_markdown("<script>alert(1)</script> **not bold**")
    assert html.startswith('<pre class="plain-text">')
    assert "<script" not in html and "&lt;script&gt;" in html
    assert "<strong>" not in html


# --- PageBudget: what one page view may spend on its texts (issue 17, item 7) ------------------------------------


def counting_budget(markdown_chars: int, html_bytes: int | None = None) -> tuple[PageBudget, list[int]]:
    parsed: list[int] = []

    def render(text: str) -> str:
        parsed.append(len(text))
        return render_markdown(text)

    return PageBudget(markdown_chars=markdown_chars, html_bytes=html_bytes, render=render), parsed


def test_a_page_parses_at_most_its_budget_as_markdown_and_shows_the_rest_as_plain_text():
    budget, parsed = counting_budget(markdown_chars=250)
    shown = [budget.show(f"**step {i}** " + "x" * 90) for i in range(10)]
    assert sum(parsed) <= 250 and len(parsed) == budget.markdown_calls == 2
    assert [s.markdown for s in shown] == [True, True] + [False] * 8
    assert "<strong>step 0</strong>" in shown[0].html
    assert shown[5].html.startswith('<pre class="plain-text">**step 5** xxx') and not shown[5].cut
    assert not shown[5].whole  # shown whole, but not as markdown: the page links to it


def test_a_page_emits_at_most_its_html_bytes_whatever_the_texts_escape_to():
    budget, _ = counting_budget(markdown_chars=1000, html_bytes=5000)
    texts = ["<" * 3000, '"&' * 2000, "é" * 4000, "- a\n" * 500, "[x](https://example.org) " * 200, "plain " * 1000]
    shown = [budget.show(text) for text in texts]
    assert sum(len(s.html.encode()) for s in shown) == budget.html_used <= 5000
    assert all(s.shown_chars <= s.full_chars for s in shown)
    assert any(s.cut for s in shown)
    for s in shown:  # a cut never splits an entity: the HTML stays well formed
        assert s.html == "" or s.html.endswith(("</pre>", ">\n", ">"))


def test_a_text_shows_at_most_its_limit_and_knows_its_whole_length():
    budget, parsed = counting_budget(markdown_chars=10_000)
    shown = budget.show("abc" * 100, full_chars=5000, limit=30)
    assert (shown.shown_chars, shown.full_chars, shown.cut, shown.markdown) == (30, 5000, True, True)
    assert parsed == [30]


def test_no_text_longer_than_render_max_chars_is_parsed_even_within_budget():
    budget, parsed = counting_budget(markdown_chars=10 * RENDER_MAX_CHARS)
    shown = budget.show("[" * (RENDER_MAX_CHARS + 1))
    assert parsed == [] and not shown.markdown and shown.shown_chars == RENDER_MAX_CHARS + 1


def test_json_values_are_escaped_in_a_code_span_within_the_budget():
    budget, parsed = counting_budget(markdown_chars=1000, html_bytes=60)
    shown = budget.show_code('{"a": "<script>"}' * 10)
    assert parsed == [] and shown.html.startswith("<code>{&quot;a&quot;: &quot;&lt;script&gt;") and shown.cut
    assert shown.html.endswith("</code>") and len(shown.html.encode()) <= 60
    assert budget.show_code("more").html == ""  # nothing left
