"""Markdown to safe HTML for the forest pages. Pure: no Django.

Model output is untrusted. Text is rendered with Markdown (tables, fenced code) and the HTML is then cleaned with an
explicit allow-list: no ``<script>``/``<style>``/``<iframe>``, no event-handler or ``style`` attributes, and links
only to ``http``, ``https`` and ``mailto`` URLs. Raw HTML a model writes (``<u>Step 1</u>``) survives when its tags
are on the list, and is dropped (tags) or removed with its content (script, style) otherwise.
"""

from __future__ import annotations

import threading

import markdown
import nh3

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "code": {"class"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
}
URL_SCHEMES = {"http", "https", "mailto"}
# Removed together with everything inside them, not just unwrapped.
CLEAN_CONTENT_TAGS = {"script", "style", "iframe", "object", "embed", "noscript", "template", "textarea", "select"}

_local = threading.local()


def _markdown() -> markdown.Markdown:
    # A Markdown instance is not thread-safe; one per thread, reset between documents.
    md = getattr(_local, "md", None)
    if md is None:
        md = markdown.Markdown(
            extensions=["tables", "fenced_code", "sane_lists"],
            extension_configs={"tables": {"use_align_attribute": True}},
            output_format="html",
        )
        _local.md = md
    return md


def sanitize_html(html: str) -> str:
    """``html`` with everything off the allow-list removed."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render_markdown(text: str) -> str:
    """Safe HTML for ``text`` read as Markdown (tables and fenced code blocks included)."""
    md = _markdown()
    try:
        html = md.convert(text)
    finally:
        md.reset()
    return sanitize_html(html)
