"""The words the forest page's search indexes and looks for: one rule for the index and the query (SQLite).

A word is a run of letters, digits and underscores (``\\w+``, Unicode), lowercased, cut to ``SEARCH_WORD_CHARS``
characters (an index entry stays small, and a longer word still finds itself: both sides are cut alike), read from
the first ``SEARCH_TEXT_CHARS`` characters of a text. PostgreSQL reads words with its own parser instead
(``to_tsvector('simple', …)``), on both sides too (``forests.forest_search``).
"""

from __future__ import annotations

import json
import re

SEARCH_TEXT_CHARS = 100_000  # characters of each text that are indexed (migration 0009_tree_words holds the figure)
SEARCH_WORD_CHARS = 64  # characters of a word that are indexed and searched for (idem)

_WORD = re.compile(r"\w+", re.UNICODE)


def search_words(text: str | None) -> list[str]:
    """The distinct words of ``text``, in the order they first appear."""
    if not text:
        return []
    words = (match.group().lower()[:SEARCH_WORD_CHARS] for match in _WORD.finditer(text, 0, SEARCH_TEXT_CHARS))
    return list(dict.fromkeys(words))


def search_words_json(text: str | None) -> str:
    """``search_words`` as a JSON array: what SQLite's ``prmsite_search_words(text)`` answers (``prmsite.db``), so a
    trigger can read a text's words with ``json_each``."""
    return json.dumps(search_words(text), ensure_ascii=False)
