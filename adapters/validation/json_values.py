"""What the checks ask of values read from an uploaded JSON file, and how a refusal quotes one."""

from __future__ import annotations

import math
from typing import Any


def is_int(value: Any) -> bool:
    """An integer, not a boolean (JSON's ``true`` is a Python ``int``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def is_number(value: Any) -> bool:
    """A finite integer or float."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(float(value))


def shorten(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a message (an uploaded value may be of any length)."""
    return text if len(text) <= limit else text[:limit] + "…"
