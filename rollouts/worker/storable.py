"""Text no database stores, made storable before a worker sends it.

A model may write a NUL character (PostgreSQL text cannot hold one), and text decoded from a server's JSON may hold
a lone UTF-16 surrogate (``"\\ud800"``: no UTF-8 encoding exists for it). The server refuses both (``prmsite.parsers
.text_problem``); a worker replaces each such character with U+FFFD, the Unicode replacement character, in every text
it sends, so that one odd generation is stored (visibly marked) instead of refused. One character stands for one, so
steps and their boundaries are kept.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"

# NUL, and any surrogate code point: a Python string decoded from JSON or UTF-8 holds surrogates only unpaired.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """``value`` (JSON-like: strings, lists, dicts, numbers, …) with every NUL and lone surrogate in its strings and
    keys replaced by ``REPLACEMENT``; ``value`` itself when it holds none (nothing is copied then)."""
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value) if _UNSTORABLE.search(value) else value
    if isinstance(value, list | tuple):
        items = [storable(item) for item in value]
        return value if all(new is old for new, old in zip(items, value, strict=True)) else type(value)(items)
    if isinstance(value, dict):
        pairs = [(storable(key), storable(item)) for key, item in value.items()]
        unchanged = all(k is key and v is item for (k, v), (key, item) in zip(pairs, value.items(), strict=True))
        return value if unchanged else dict(pairs)
    return value
