"""Markdown to safe HTML for the forest pages. Pure: no Django.

Model output is untrusted, in two ways:

- **Content.** Text is rendered with markdown-it-py (CommonMark plus tables and strikethrough) and the HTML is then
  cleaned with an explicit allow-list: no ``<script>``/``<style>``/``<iframe>``, no event-handler attributes, only
  ``text-align`` in a table cell's style, and links only to ``http``, ``https`` and ``mailto`` URLs. Raw HTML a model
  writes (``<u>Step 1</u>``) survives when its tags are on the list, and is dropped (tags) or removed with its content
  (script, style) otherwise.
- **Cost.** markdown-it-py's parser has no recursion that input can drive past its nesting limit (``maxNesting``) and
  runs in time linear in the input, so no text can make a page fail or hang (Python-Markdown recursed on
  ``"- " * 496``, and took minutes on ``"[" * 45000``). Text longer than ``RENDER_MAX_CHARS`` is not parsed at all: it
  is shown escaped, as preformatted plain text. Rendered HTML is cached by the text's hash, so a page shows a popular
  step without rendering it again.
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections import OrderedDict

import nh3
from markdown_it import MarkdownIt

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "code": {"class"},
    "td": {"style"},
    "th": {"style"},
    "ol": {"start"},
}
# The only CSS kept: the column alignment markdown tables write (style="text-align:center").
ALLOWED_STYLE_PROPERTIES = {"text-align"}
URL_SCHEMES = {"http", "https", "mailto"}
# Removed together with everything inside them, not just unwrapped.
CLEAN_CONTENT_TAGS = {"script", "style", "iframe", "object", "embed", "noscript", "template", "textarea", "select"}
# Longer texts are shown as escaped plain text instead of being parsed (a step is rarely longer than a few KB).
RENDER_MAX_CHARS = 200_000
# Rendered documents kept per process (by sha256 of the text).
CACHE_ENTRIES = 4096

_local = threading.local()
_cache: OrderedDict[str, str] = OrderedDict()
_cache_lock = threading.Lock()


def _markdown() -> MarkdownIt:
    # One parser per thread: a MarkdownIt instance holds no per-document state, but its rules are mutable.
    md = getattr(_local, "md", None)
    if md is None:
        md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
        _local.md = md
    return md


def sanitize_html(markup: str) -> str:
    """``markup`` with everything off the allow-list removed."""
    return nh3.clean(
        markup,
        tags=ALLOWED_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        filter_style_properties=ALLOWED_STYLE_PROPERTIES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def _render(text: str) -> str:
    if len(text) > RENDER_MAX_CHARS:
        return f'<pre class="plain-text">{html.escape(text)}</pre>'
    return sanitize_html(_markdown().render(text))


def render_markdown(text: str) -> str:
    """Safe HTML for ``text`` read as Markdown (tables and fenced code blocks included), cached by content."""
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    rendered = _render(text)
    with _cache_lock:
        _cache[key] = rendered
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return rendered
