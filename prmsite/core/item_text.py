"""The dataset item's own text (its question, problem or statement), as the forest page shows a tree's prompt.

A root's text is the config's template filled with the item, mostly the template's boilerplate; the item's own
text is the field the template puts in (the first ``{field}`` of the template that the item holds as text), else a
field of a common name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prmsite.core.configs.interfaces import ConfigError, template_fields

ITEM_TEXT_FIELDS = ("question", "problem", "statement", "prompt", "query", "input", "text")


def item_text_fields(template: Any) -> list[str]:
    """The item fields that may hold its own text, most likely first: the template's fields, then common names."""
    fields: list[str] = []
    if isinstance(template, str):
        try:
            fields = template_fields(template)
        except ConfigError:
            fields = []
    return fields + [name for name in ITEM_TEXT_FIELDS if name not in fields]


def item_text(values: Mapping[str, Any], fields: list[str]) -> str | None:
    """The first of ``fields`` that ``values`` holds as non-blank text, else ``None``."""
    for name in fields:
        value = values.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None
