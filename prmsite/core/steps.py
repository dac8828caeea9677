"""Splitting a model response into reasoning steps. Pure: no Django.

The split is lossless — ``"".join(split_steps(text, pattern)) == text`` for every input — so a trie path can always
be turned back into the exact response the model wrote.
"""

from __future__ import annotations

import itertools
import re

Pattern = str | re.Pattern[str]


def compile_pattern(pattern: Pattern) -> re.Pattern[str]:
    """Compile ``pattern``; a pattern that does not compile raises ``ValueError`` naming it."""
    if isinstance(pattern, re.Pattern):
        return pattern
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"reasoning_delimiter_pattern {pattern!r} does not compile: {exc}") from exc


def split_steps(text: str, pattern: Pattern) -> list[str]:
    """Split ``text`` before every match of ``pattern``; each step starts with the delimiter that opened it.

    Invariants:
    - ``"".join(result) == text`` (nothing is dropped, added or reordered);
    - every step holds some text that is neither delimiter nor white space, except when the whole text has none
      (then the text is one step, or there are no steps for ``""``): runs of delimiters (``"<u>Step"``) open one
      step together, and delimiters at the very end stay with the step before them;
    - text before the first delimiter is a step of its own.
    """
    if text == "":
        return []
    regex = compile_pattern(pattern)
    cuts = sorted({m.start() for m in regex.finditer(text) if m.end() > m.start() and m.start() > 0})
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]

    def has_content(piece: str) -> bool:
        return regex.sub("", piece).strip() != ""

    steps: list[str] = []
    pending = ""  # delimiters (and white space) waiting for the content of the step they open
    for piece in pieces:
        if has_content(piece):
            steps.append(pending + piece)
            pending = ""
        else:
            pending += piece
    if pending:
        if steps:
            steps[-1] += pending
        else:
            steps.append(pending)
    return steps
