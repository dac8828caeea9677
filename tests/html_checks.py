"""One definition of "injected HTML is inert", for every test of a page that shows model output or user text."""

from __future__ import annotations

import re

# A URL attribute whose value runs code or embeds a document.
_SCRIPT_URL = re.compile(
    r"""(?:href|src|action|formaction|xlink:href)\s*=\s*["']?\s*(?:javascript|vbscript|data):""", re.I
)
# An event-handler attribute inside a tag (text such as "onerror=" outside a tag is harmless).
_EVENT_ATTRIBUTE = re.compile(r"<[^>]*\son[a-z]+\s*=", re.I)


def assert_inert(html: str, *, marker: str = "alert") -> None:
    """No injected script element, event handler or script URL in ``html``.

    ``marker`` is the text the injected payloads carry (``<script>alert(…)``), so the page's own scripts do not count.
    """
    assert f"<script>{marker}" not in html, "an injected <script> element survived"
    assert not re.search(rf"<script[^>]*>[^<]*{re.escape(marker)}", html), "an injected <script> element survived"
    assert not _EVENT_ATTRIBUTE.search(html), "an event-handler attribute survived"
    assert not _SCRIPT_URL.search(html), "a javascript:/data: URL survived in an attribute"
    assert not re.search(r"<(?:img|iframe|svg|object|embed|form|input)\b", html, re.I), "an active element survived"
