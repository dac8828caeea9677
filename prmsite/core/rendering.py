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

**Math.** LaTeX between ``$…$``, ``$$…$$``, ``\\(…\\)`` and ``\\[…\\]`` (and a top-level ``\\begin{align}…\\end{align}``
and the other amsmath environments) is math: markdown never reads what lies inside the delimiters, and each formula
becomes MathML (``latex2mathml``) that browsers draw natively, with its source kept in an ``<annotation>``. A ``$``
opens math only when followed by a non-space, non-digit character and closes it only after a non-space character not
followed by a digit (pandoc's rule), so "it costs $5 and $10" stays prose. A formula latex2mathml cannot read, longer
than ``MATH_MAX_CHARS``, nested deeper than ``MATH_MAX_DEPTH`` or defining macros (``\\newcommand``: their expansion
is exponential in the text) is shown as its source in a ``<code class="math-source">``. MathML goes through the same
allow-list (``MATH_TAGS``/``MATH_ATTRIBUTES``): no ``href``, no ``style``, no ``<maction>``, and text inside
``\\text{…}`` stays text. Math costs what the rest of a text does: its source counts in a page's ``markdown_chars``
(latex2mathml takes time linear in a formula's length, bounded by the caps), its MathML in ``html_bytes``.

Bounding each text is not enough: markdown-it-py parses about 0.5 MB/s of prose but only 30 KB/s of brackets
(``"![" * 50_000``, 100,000 characters, takes 3 s), and a tree of 60 steps of 200,000 characters took 230 s and 16 MB
of HTML. So every page view shows its texts through one ``PageBudget``: at most ``markdown_chars`` characters parsed as
markdown and ``html_bytes`` bytes of text HTML per view, whatever the texts, the cache or the process. Beyond the
budget a text is shown as escaped plain text, cut to what is left (``ShownText`` says how much was shown, so the page
links to the whole text on a page of its own).
"""

from __future__ import annotations

import functools
import hashlib
import html
import re
import secrets
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nh3
from latex2mathml.converter import convert_to_element
from markdown_it import MarkdownIt
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "del", "details", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
    "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
# Presentation MathML (what latex2mathml writes, and MathML Core draws). Left out on purpose: maction (its actions),
# annotation-xml (it may hold HTML), mglyph (an image source), and every href, style, class, id and colour attribute.
MATH_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac", "msqrt",
    "mroot", "mover", "munder", "munderover", "mmultiscripts", "mprescripts", "none", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror", "semantics", "annotation",
}  # fmt: skip
_MATH_COMMON = {"mathvariant", "displaystyle", "scriptlevel"}
MATH_ATTRIBUTES = {
    "math": {"display"} | _MATH_COMMON,
    "mo": {"stretchy", "fence", "separator", "lspace", "rspace", "form", "largeop", "movablelimits", "symmetric",
           "minsize", "maxsize", "accent"} | _MATH_COMMON,
    "mspace": {"width", "height", "depth", "linebreak"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"} | _MATH_COMMON,
    "mfrac": {"linethickness"} | _MATH_COMMON,
    "mover": {"accent"} | _MATH_COMMON,
    "munder": {"accentunder"} | _MATH_COMMON,
    "munderover": {"accent", "accentunder"} | _MATH_COMMON,
    "mtable": {"columnalign", "rowalign", "columnspacing", "rowspacing", "columnlines", "rowlines", "frame"}
    | _MATH_COMMON,
    "mtr": {"columnalign", "rowalign"},
    "mtd": {"columnalign", "rowalign", "columnspan", "rowspan"} | _MATH_COMMON,
    "menclose": {"notation"} | _MATH_COMMON,
    "annotation": {"encoding"},
} | {tag: set(_MATH_COMMON) for tag in ("mrow", "mi", "mn", "ms", "mtext", "msub", "msup", "msubsup", "msqrt",
                                        "mroot", "mstyle", "mmultiscripts")}  # fmt: skip
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
# A longer formula, or one nested deeper ({…}, \\left…\\right), is shown as its source: latex2mathml's time grows
# with a formula's length (about 10 µs a character) and its recursion with the nesting.
MATH_MAX_CHARS = 4000
MATH_MAX_DEPTH = 40
# Converted formulas kept per process.
MATH_CACHE_ENTRIES = 4096

_local = threading.local()
_cache: OrderedDict[str, str] = OrderedDict()
_cache_lock = threading.Lock()


# --- Math -------------------------------------------------------------------------------------------------------

# Defining a macro lets a short formula expand exponentially (\newcommand\b{\a\a}, \newcommand\c{\b\b}, …).
_MACRO_DEFINITION = re.compile(
    r"\\(?:newcommand|renewcommand|providecommand|newenvironment|renewenvironment|def|gdef|edef|xdef|let"
    r"|DeclareMathOperator)(?![A-Za-z])"
)
_NESTING = re.compile(r"\\\\|\\[{}]|[{}]|\\left(?![A-Za-z])|\\right(?![A-Za-z])")
_NUMERIC_REFERENCE = re.compile(r"&#x([0-9A-Fa-f]{1,6});")
# Top-level amsmath environments, read as display math without delimiters (the markdown-it amsmath plugin's list).
_ENVIRONMENT = re.compile(
    r"\\begin\{(equation|multline|gather|align|alignat|flalign|matrix|pmatrix|bmatrix|Bmatrix|vmatrix|Vmatrix"
    r"|eqnarray)(\*?)\}"
)
_CLOSING = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
_BLOCK_DELIMITERS = (("$$", "$$"), ("\\[", "\\]"))


def _nesting(tex: str) -> int:
    """How deeply ``tex`` nests groups ({…} and \\left…\\right), read linearly."""
    depth = deepest = 0
    for match in _NESTING.finditer(tex):
        token = match[0]
        if token in ("{", "\\left"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("}", "\\right"):
            depth = max(0, depth - 1)
    return deepest


def _to_mathml(tex: str, display: bool) -> ET.Element:
    """latex2mathml's tree for ``tex`` (may raise anything on bad LaTeX)."""
    return convert_to_element(tex, display="block" if display else "inline")


def _unreference(text: str | None) -> str | None:
    # latex2mathml writes symbols as the text "&#x0002B;" and unescapes its whole output, which would also turn a
    # "<" of \text{…} into markup; the tree is serialised escaped instead, with the symbols as characters.
    if not text or "&#x" not in text:
        return text
    return _NUMERIC_REFERENCE.sub(lambda m: chr(int(m[1], 16)) if int(m[1], 16) <= 0x10FFFF else m[0], text)


def math_source_html(tex: str, *, block: bool = False, opening: str = "", closing: str = "") -> str:
    """The formula as written, delimiters included, escaped in a ``<code class="math-source">`` (in a ``<pre>`` for a
    formula on lines of its own)."""
    code = f'<code class="math-source">{html.escape(opening + tex + closing)}</code>'
    return f"<pre>{code}</pre>\n" if block else code


def math_html(tex: str, *, display: bool, block: bool = False, opening: str = "", closing: str = "") -> str:
    """``tex`` (LaTeX, without its delimiters) as a ``<math>`` element (``display="block"`` for display math), its
    source in an annotation; the source in a code span when it cannot be shown as math (see the module's notes).
    ``block``: the formula stands on lines of its own, not inside a paragraph. Not yet sanitised: the renderer
    cleans the whole document."""
    source = tex.strip()
    if (
        not source
        or len(source) > MATH_MAX_CHARS
        or _MACRO_DEFINITION.search(source)
        or _nesting(source) > MATH_MAX_DEPTH
    ):
        return math_source_html(tex, block=block, opening=opening, closing=closing)
    markup = _mathml(source, display)
    if markup is None:
        return math_source_html(tex, block=block, opening=opening, closing=closing)
    return f"{markup}\n" if block else markup


@functools.lru_cache(maxsize=MATH_CACHE_ENTRIES)
def _mathml(source: str, display: bool) -> str | None:
    """``source`` as a ``<math>`` element with its source in an annotation; None when latex2mathml cannot read it.
    Cached: a formula repeated across steps and pages is converted once per process."""
    try:
        converted = _to_mathml(source, display)
    except Exception:  # latex2mathml raises many kinds (RecursionError included) on bad LaTeX: show the source
        return None
    math = ET.Element("math", {"display": "block" if display else "inline"})
    semantics = ET.SubElement(math, "semantics")
    children = list(converted)
    if len(children) == 1 and children[0].tag == "mrow":  # latex2mathml's one row: the presentation child
        row = children[0]
        semantics.append(row)
    else:
        row = ET.SubElement(semantics, "mrow")
        row.extend(children)
    for element in row.iter():
        element.text = _unreference(element.text)
        element.tail = _unreference(element.tail)
        element.attrib.pop("xmlns", None)
    annotation = ET.SubElement(semantics, "annotation", {"encoding": "application/x-tex"})
    annotation.text = source
    return sanitize_mathml(ET.tostring(math, encoding="unicode", short_empty_elements=False))


def _render_math(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    # A placeholder no text can forge (a fresh nonce per document): the document is sanitised without MathML on its
    # list, so raw <math> a model writes is dropped, and then each placeholder becomes its sanitised formula.
    formulas = env.setdefault("math", [])
    formulas.append(_render_math_token(tokens[idx]))
    return f"\ue000{env['math_nonce']}:{len(formulas) - 1}\ue001"


def _render_math_token(token: Token) -> str:
    block = token.type == "math_block"
    if token.markup == "env":  # \begin{align}…\end{align}: the delimiters are part of the LaTeX
        return math_html(token.content, display=True, block=block)
    return math_html(
        token.content,
        display=token.type != "math_inline",
        block=block,
        opening=token.markup,
        closing=_CLOSING.get(token.markup, ""),
    )


def _find_from(state: StateInline, needle: str, start: int) -> int:
    """``state.src.find(needle, start)``, remembering the last answer per text: openings are tried left to right,
    so an unclosed ``\\(`` repeated n times costs one scan, not n."""
    memo = state.env.setdefault("math_find", {})
    key = (needle, state.src)  # str hashes are cached: cheap after the first use
    last = memo.get(key)
    if last is not None and last[0] <= start and (last[1] < 0 or last[1] >= start):
        return last[1]
    found = _scan(state.src, needle, start)
    memo[key] = (start, found)
    return found


def _scan(src: str, needle: str, start: int) -> int:
    return src.find(needle, start)


def _math_inline_brackets(state: StateInline, silent: bool) -> bool:
    r"""``\(…\)`` (inline) and ``\[…\]`` (display) inside a paragraph, read before markdown's backslash escapes."""
    pos, src = state.pos, state.src
    if src[pos] != "\\" or pos + 1 >= state.posMax or src[pos + 1] not in "([":
        return False
    opening = src[pos : pos + 2]
    closing = _CLOSING[opening]
    end = _find_from(state, closing, pos + 2)
    if end < 0 or end + 2 > state.posMax or not src[pos + 2 : end].strip():
        return False
    if not silent:
        token = state.push("math_inline" if opening == "\\(" else "math_inline_double", "math", 0)
        token.content = src[pos + 2 : end]
        token.markup = opening
    state.pos = end + 2
    return True


def _line(state: StateBlock, line: int) -> str:
    return state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]].rstrip()


def _stop_line(state: StateBlock, closing: str, line: int) -> int:
    """The first line from ``line`` on that is blank or ends with ``closing`` (-1: none), from a table built once
    per document and closing: each line is read once however many openings there are."""
    tables = state.env.setdefault("math_stops", {})
    stops = tables.get(closing)
    if stops is None:
        stops = [-1] * (state.lineMax + 1)
        for index in range(state.lineMax - 1, -1, -1):
            text = _line(state, index)
            stops[index] = index if not text or text.endswith(closing) else stops[index + 1]
        tables[closing] = stops
    return stops[line] if line < len(stops) else -1


def _math_block(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    r"""Display math on lines of its own: ``$$…$$``, ``\[…\]`` or an amsmath environment, on one line or several
    (no blank line inside, as in LaTeX); it may interrupt a paragraph, so markdown never reads its lines."""
    if state.is_code_block(start_line):
        return False
    first = _line(state, start_line)
    environment = _ENVIRONMENT.match(first) if first.startswith("\\begin{") else None
    if environment:
        opening, closing, markup = "", f"\\end{{{environment[1]}{environment[2]}}}", "env"
    else:
        delimiters = next((pair for pair in _BLOCK_DELIMITERS if first.startswith(pair[0])), None)
        if delimiters is None:
            return False
        (opening, closing), markup = delimiters, delimiters[0]
    rest = first[len(opening) :]
    if closing in rest:
        # On one line: the line must end with the (only) closing delimiter; otherwise it is inline math in prose.
        if not rest.endswith(closing) or closing in rest[: -len(closing)] or not rest[: -len(closing)].strip():
            return False
        last_line, lines = start_line, [first]
    else:
        last_line = _stop_line(state, closing, start_line + 1)
        if last_line < 0 or last_line >= end_line or not _line(state, last_line):
            return False
        lines = [first]
        lines += [state.src[state.bMarks[i] : state.eMarks[i]] for i in range(start_line + 1, last_line)]
        lines.append(_line(state, last_line))
    if silent:
        return True
    content = "\n".join(lines)
    if markup != "env":
        content = content[len(opening) : -len(closing)]
    token = state.push("math_block", "math", 0)
    token.block = True
    token.content = content
    token.markup = markup
    token.map = [start_line, last_line + 1]
    state.line = last_line + 1
    return True


def _add_math(md: MarkdownIt) -> None:
    # $…$ and inline $$…$$ from mdit-py-plugins' dollarmath (pandoc's rule for where a $ opens and closes), its
    # block rule replaced by ours, which also takes \[…\] and amsmath environments and may interrupt a paragraph.
    dollarmath_plugin(md, allow_labels=False, allow_space=False, allow_digits=False, double_inline=True)
    md.block.ruler.at(
        "math_block", _math_block, {"alt": ["paragraph", "reference", "blockquote", "list", "footnote_def"]}
    )
    md.inline.ruler.before("escape", "math_inline_brackets", _math_inline_brackets)
    for kind in ("math_inline", "math_inline_double", "math_block"):
        md.add_render_rule(kind, _render_math)


def _markdown() -> MarkdownIt:
    # One parser per thread: a MarkdownIt instance holds no per-document state, but its rules are mutable.
    md = getattr(_local, "md", None)
    if md is None:
        md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
        _add_math(md)
        _local.md = md
    return md


def sanitize_mathml(markup: str) -> str:
    """One formula's MathML with everything off the MathML allow-list removed (no href, style, maction…)."""
    return nh3.clean(
        markup,
        tags=MATH_TAGS,
        clean_content_tags=CLEAN_CONTENT_TAGS,
        attributes=MATH_ATTRIBUTES,
        url_schemes=set(),
        strip_comments=True,
    )


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


def _math_text() -> MarkdownIt:
    # Plain text with math: no markdown but paragraphs and line breaks, any HTML in it escaped.
    md = getattr(_local, "math_text", None)
    if md is None:
        md = MarkdownIt("zero", {"html": False, "breaks": True}).enable(["newline"])
        _add_math(md)
        _local.math_text = md
    return md


def _render(text: str, *, plain: bool = False) -> str:
    if len(text) > RENDER_MAX_CHARS:
        return f'<pre class="plain-text">{html.escape(text)}</pre>'
    env: dict[str, Any] = {"math_nonce": secrets.token_hex(8)}
    cleaned = sanitize_html((_math_text() if plain else _markdown()).render(text, env))
    formulas = env.get("math")
    if not formulas:
        return cleaned
    placeholder = re.compile(f"\ue000{env['math_nonce']}:([0-9]+)\ue001")
    return placeholder.sub(lambda match: formulas[int(match[1])], cleaned)


def render_markdown(text: str) -> str:
    """Safe HTML for ``text`` read as Markdown (tables and fenced code blocks included), cached by content."""
    return _cached_render(text, plain=False)


def render_math_text(text: str) -> str:
    """Safe HTML for ``text`` read as plain text with math (a labeller's note): its math as MathML, its line breaks
    kept, nothing else read as markdown or HTML. Cached by content."""
    return _cached_render(text, plain=True)


def _cached_render(text: str, *, plain: bool) -> str:
    key = ("text:" if plain else "") + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    rendered = _render(text, plain=plain)
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
