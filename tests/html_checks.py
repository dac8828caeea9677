"""One definition of "injected HTML is inert", for every test of a page that shows model output or user text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# A URL attribute whose value runs code or embeds a document.
_SCRIPT_URL = re.compile(
    r"""(?:href|src|action|formaction|xlink:href)\s*=\s*["']?\s*(?:javascript|vbscript|data):""", re.I
)
# An event-handler attribute inside a tag (text such as "onerror=" outside a tag is harmless).
_EVENT_ATTRIBUTE = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)
# A form the page itself draws (the forest page's filters), marked with data-page-control.
_PAGE_CONTROLS = re.compile(r"<form\b[^>]*\sdata-page-control\b.*?</form>", re.I | re.S)


def assert_inert(html: str, *, marker: str = "alert") -> None:
    """No injected script element, event handler or script URL in ``html``.

    ``marker`` is the text the injected payloads carry (``<script>alert(…)``), so the page's own scripts do not count.
    """
    assert f"<script>{marker}" not in html, "an injected <script> element survived"
    assert not re.search(rf"<script[^>]*>[^<]*{re.escape(marker)}", html), "an injected <script> element survived"
    assert not _EVENT_ATTRIBUTE.search(html), "an event-handler attribute survived"
    assert not _SCRIPT_URL.search(html), "a javascript:/data: URL survived in an attribute"
    html = _PAGE_CONTROLS.sub("", html)  # the page's own forms (sanitised output keeps no form and no data- attribute)
    assert not re.search(r"<(?:img|iframe|svg|object|embed|form|input)\b", html, re.I), "an active element survived"


# --- The same, read by an HTML parser: for whole pages (the admin's forms and change lists included) ---------------

# Markup injected into every text field by the hostile-page tests; each piece carries "__pwned".
PWNED = "__pwned"
PAYLOADS = (
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    '<a href="javascript:window.__pwned=3">link</a>',
    "[md link](javascript:window.__pwned=4)",
    "<svg onload=window.__pwned=5></svg>",
    '<iframe src="javascript:window.__pwned=6"></iframe>',
    '"><script>window.__pwned=7</script>',
    "'><img src=x onerror=window.__pwned=8>",
    "</textarea></title><script>window.__pwned=9</script>",
)
HOSTILE_TEXT = " ".join(PAYLOADS)

_URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "poster", "background", "srcdoc"}
_SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
# Elements whose src must be this server's (a path starting with one "/"): an injected one points anywhere else.
_SRC_ELEMENTS = {"script", "img", "iframe", "frame", "embed", "object", "audio", "video", "source", "input"}
# (the admin draws inline <svg>; our pages draw LaTeX as <math>, each element and attribute on the MathML allow-list of
# prmsite.core.rendering, so <math> itself is no sign of injection: the checks below still apply inside it)
_NEVER_OURS = {"iframe", "frame", "frameset", "object", "embed", "base", "maction", "annotation-xml", "mglyph"}


class _LiveMarkup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._script: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        where = f"<{tag} {' '.join(f'{k}={v!r}' for k, v in attrs)}>"[:200]
        if tag in _NEVER_OURS:
            self.problems.append(f"an element no page of ours has: {where}")
        for name, value in attrs:
            value = value or ""
            if name.startswith("on"):
                self.problems.append(f"an event-handler attribute: {where}")
            squashed = "".join(ch for ch in value if ch > " ").lower()
            if name in _URL_ATTRIBUTES and squashed.startswith(_SCRIPT_SCHEMES):
                self.problems.append(f"a script URL: {where}")
            if name == "src" and tag in _SRC_ELEMENTS and not (value.startswith("/") and not value.startswith("//")):
                self.problems.append(f"a src that is not this server's: {where}")
            if name == "http-equiv" and value.lower() == "refresh":
                self.problems.append(f"a refresh: {where}")
        if tag == "script":
            kind = dict(attrs).get("type") or "text/javascript"
            self._script = [] if "json" not in kind else None

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            if PWNED in "".join(self._script):
                self.problems.append("an injected <script> element")
            self._script = None


def live_markup(html: str) -> list[str]:
    """What in ``html`` would run injected code in a browser: injected script elements, event-handler attributes,
    script URLs, elements loading from elsewhere, elements no page of ours uses. Text shown escaped is no problem."""
    parser = _LiveMarkup()
    parser.feed(html)
    parser.close()
    if f"<script>window.{PWNED}" in html:
        parser.problems.append("an injected <script> element (raw text)")
    return parser.problems


def assert_no_live_markup(html: str) -> None:
    problems = live_markup(html)
    assert not problems, problems[:5]
