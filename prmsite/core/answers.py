"""What a response states: the prediction a worker reads from a model's answer. Pure: no Django."""

from __future__ import annotations

import re


def parse_prediction(response: str, pattern: str) -> int | None:
    """The label a response states: the last match of ``pattern`` (its group if it has one), as an ``int``.

    The last match wins when there are several, since the verdict ends the response (a model often restates the
    answer format earlier); ``None`` when there is no match or the matched text is not an integer.
    """
    matches = list(re.finditer(pattern, response))
    if not matches:
        return None
    match = matches[-1]
    text = match.group(1) if match.re.groups else match.group(0)
    return label_of_answer(text)


def label_of_answer(text: str | None) -> int | None:
    """The class label an answer text states (``" 1,024 "`` is 1024), or ``None`` when it states no integer."""
    if text is None:
        return None
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        return None
