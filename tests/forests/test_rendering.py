"""Text fields render as markdown (tables, fenced code), and whatever HTML a model writes is made inert."""

from __future__ import annotations

import pytest

from forests.rendering import render_markdown


def test_tables_render():
    html = render_markdown("| claim | verdict |\n| --- | :-: |\n| sky is green | false |")
    assert "<table>" in html
    assert "<th>claim</th>" in html
    assert '<td align="center">false</td>' in html


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
        ("[click](javascript:alert(1))", ["javascript:"]),
        ('<a href="javascript:alert(1)">x</a>', ["javascript:"]),
        ('<a href="https://ok.org" onclick="steal()">x</a>', ["onclick", "steal"]),
        ("<iframe src='https://evil.example'></iframe>", ["<iframe", "evil.example"]),
        ("<style>body{display:none}</style>", ["<style", "display:none"]),
        ('<p style="background:url(x)">x</p>', ["style="]),
        ("<svg onload=alert(1)><circle/></svg>", ["<svg", "onload"]),
        ("[x](data:text/html;base64,PHNjcmlwdD4=)", ["data:text"]),
        ("<form action=/x><input name=a></form>", ["<form", "<input"]),
    ],
)
def test_injected_html_never_survives(text, forbidden):
    html = render_markdown(text)
    for fragment in forbidden:
        assert fragment not in html


def test_rendering_is_the_same_on_every_call():
    # One Markdown instance per thread is reused: state from a document must not leak into the next.
    first = render_markdown("Footnote-free [ref]: https://a.example\n\ntext")
    render_markdown("| a |\n|---|\n| b |")
    assert render_markdown("Footnote-free [ref]: https://a.example\n\ntext") == first
