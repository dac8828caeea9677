"""What an export is asked for: ``ExportOptions``, the one check of every export parameter (``export_preferences``
and the admin's download both build them). Pure: no Django, no heavy library."""

from __future__ import annotations

import math
from dataclasses import dataclass

from forests.metrics.export.names import DEFAULT_PLACEHOLDER, KINDS, PAIRS
from forests.metrics.preferences import (  # the pure pairing checks the same parameters, with these messages
    MAX_PAIRS_INVALID,
    MIN_MARGIN_INVALID,
    PATH_MODES,
    PATHS_DISTINCT,
    PATHS_UNKNOWN,
)

# The placeholder is written after every step of every path: its length multiplies the export (a 2,000-character one
# made 949 MiB and 6.3 GB of memory from a small forest; 5 MB overflowed Arrow). A tokenizer's special token is short.
PLACEHOLDER_MAX_CHARS = 32
PLACEHOLDER_EMPTY = "placeholder_token: the placeholder token must not be empty"
PLACEHOLDER_TOO_LONG = "placeholder_token: the placeholder token must be at most {max} characters, not {length}"
PLACEHOLDER_CONTROL = (
    "placeholder_token: the placeholder token must not hold line breaks, tabs, NUL or other control characters"
)
KIND_UNKNOWN = "kind must be one of {kinds}, not {kind!r}"
THRESHOLD_INVALID = "threshold must be a finite number, not {value!r}"


def placeholder_token_check(token: str) -> str:
    """``token`` when it can follow every step of an export: 1 to ``PLACEHOLDER_MAX_CHARS`` characters, none of them
    a control character (a line break would split the line-based formats). ``ValueError`` otherwise."""
    if not token:
        raise ValueError(PLACEHOLDER_EMPTY)
    if len(token) > PLACEHOLDER_MAX_CHARS:
        raise ValueError(PLACEHOLDER_TOO_LONG.format(max=PLACEHOLDER_MAX_CHARS, length=len(token)))
    if any(not character.isprintable() and character != " " for character in token):
        raise ValueError(PLACEHOLDER_CONTROL)
    return token


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ExportOptions:
    kind: str = PAIRS
    paths: str = PATHS_DISTINCT
    min_margin: float = 0.0
    max_pairs_per_node: int | None = None
    neutral_pairs: bool = False
    threshold: float = 0.0  # a step is good when its value is above this (0: any correct rollout through it)
    soft_labels: bool = False
    placeholder_token: str = DEFAULT_PLACEHOLDER

    def __post_init__(self) -> None:
        """``ValueError`` with one of the messages above when a parameter is out of its range."""
        if self.kind not in KINDS:
            raise ValueError(KIND_UNKNOWN.format(kinds=", ".join(KINDS), kind=self.kind))
        if self.paths not in PATH_MODES:
            raise ValueError(PATHS_UNKNOWN.format(modes=", ".join(PATH_MODES), paths=self.paths))
        if not _is_real(self.min_margin) or self.min_margin < 0:
            raise ValueError(MIN_MARGIN_INVALID.format(value=self.min_margin))
        if self.max_pairs_per_node is not None and (
            not isinstance(self.max_pairs_per_node, int)
            or isinstance(self.max_pairs_per_node, bool)
            or self.max_pairs_per_node < 1
        ):
            raise ValueError(MAX_PAIRS_INVALID.format(value=self.max_pairs_per_node))
        if not _is_real(self.threshold):
            raise ValueError(THRESHOLD_INVALID.format(value=self.threshold))
        placeholder_token_check(self.placeholder_token)
