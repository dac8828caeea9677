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

Bounding each text is not enough: markdown-it-py parses about 0.5 MB/s of prose but only 30 KB/s of brackets
(``"![" * 50_000``, 100,000 characters, takes 3 s), and a tree of 60 steps of 200,000 characters took 230 s and 16 MB
of HTML. So every page view shows its texts through one ``PageBudget``: at most ``markdown_chars`` characters parsed as
markdown and ``html_bytes`` bytes of text HTML per view, whatever the texts, the cache or the process. Beyond the
budget a text is shown as escaped plain text, cut to what is left (``ShownText`` says how much was shown, so the page
links to the whole text on a page of its own).
"""

from __future__ import annotations

import hashlib
import html
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ShownText:
    """How a page shows one text: ``html`` (safe), made of the first ``shown_chars`` of the text's ``full_chars``
    characters, read as markdown (``markdown``) or shown as escaped plain text."""

    html: str
    shown_chars: int
    full_chars: int
    markdown: bool

    @property
    def whole(self) -> bool:
        """The whole text is shown, as markdown: nothing to link to."""
        return self.markdown and self.shown_chars == self.full_chars

    @property
    def cut(self) -> bool:
        """Part of the text is left out."""
        return self.shown_chars < self.full_chars


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


PLAIN_OPEN, PLAIN_CLOSE = '<pre class="plain-text">', "</pre>"
CODE_OPEN, CODE_CLOSE = "<code>", "</code>"


def _plain_html(text: str, max_bytes: int | None, *, code: bool = False) -> tuple[str, int]:
    """Escaped ``text`` (preformatted, or in a code span), cut so that it takes at most ``max_bytes`` (``None``: no
    cap): the HTML and how many characters of ``text`` it shows."""
    opening, closing = (CODE_OPEN, CODE_CLOSE) if code else (PLAIN_OPEN, PLAIN_CLOSE)
    tags = len(opening) + len(closing)
    chars = len(text) if max_bytes is None else min(len(text), max_bytes - tags)
    while chars > 0:
        body = html.escape(text[:chars])
        size = _utf8_size(body)
        if max_bytes is None or size + tags <= max_bytes:
            return f"{opening}{body}{closing}", chars
        # An escape or a UTF-8 character takes up to 6 bytes: shrink in proportion (strictly, so the loop ends).
        chars = min(chars - 1, chars * (max_bytes - tags) // size)
    return "", 0


@dataclass
class PageBudget:
    """What one page view may spend on showing texts; ``show`` each text through it, the most visible first.

    Promises, whatever the texts: at most ``markdown_chars`` characters in all are parsed as markdown (and none of a
    text longer than ``RENDER_MAX_CHARS``), and at most ``html_bytes`` bytes of text HTML are returned (``None``: no
    cap, for pages that must show every character, like the labelling page). Cached renders are charged like fresh
    ones, so a page looks the same in every process. ``markdown_calls``, ``markdown_used`` and ``html_used`` count
    the work done (tests read them).
    """

    markdown_chars: int
    html_bytes: int | None = None
    render: Callable[[str], str] | None = None  # markdown to safe HTML; render_markdown when None
    markdown_calls: int = 0
    markdown_used: int = 0
    html_used: int = 0

    @property
    def html_left(self) -> int | None:
        return None if self.html_bytes is None else max(0, self.html_bytes - self.html_used)

    def show(self, text: str, *, full_chars: int | None = None, limit: int | None = None) -> ShownText:
        """``text`` as HTML within what is left of the budget. ``text`` may be the start of a longer text of
        ``full_chars`` characters (what the database sent); ``limit`` caps the characters this page shows of it."""
        full = len(text) if full_chars is None else max(full_chars, len(text))
        piece = text if limit is None else text[:limit]
        html_left = self.html_left
        if len(piece) <= min(RENDER_MAX_CHARS, self.markdown_chars - self.markdown_used):
            self.markdown_calls += 1
            self.markdown_used += len(piece)
            markup = (self.render or render_markdown)(piece)
            size = _utf8_size(markup)
            if html_left is None or size <= html_left:
                self.html_used += size
                return ShownText(html=markup, shown_chars=len(piece), full_chars=full, markdown=True)
        return self._plain(piece, full, code=False)

    def show_code(self, text: str, *, limit: int | None = None) -> ShownText:
        """``text`` (JSON, say) escaped in a code span, never parsed, within what is left of the budget."""
        return self._plain(text if limit is None else text[:limit], len(text), code=True)

    def _plain(self, piece: str, full: int, *, code: bool) -> ShownText:
        markup, shown = _plain_html(piece, self.html_left, code=code)
        self.html_used += _utf8_size(markup)
        return ShownText(html=markup, shown_chars=shown, full_chars=full, markdown=False)
