"""The dataset item's own text (its question, problem or statement), as the forest page shows a tree's prompt.

A root's text is the config's template filled with the item, mostly the template's boilerplate; the item's own
text is what the template puts in: of the template's ``{fields}`` that the item holds as text, the longest (a
template may also put in an id or a date); without one, the first field of a common name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prmsite.core.configs.interfaces import ConfigError, template_fields

ITEM_TEXT_FIELDS = ("question", "problem", "statement", "prompt", "query", "input", "text")


def item_text_fields(template: Any) -> tuple[list[str], list[str]]:
    """The item fields that may hold its own text: the template's fields, and the common names it lacks."""
    fields: list[str] = []
    if isinstance(template, str):
        try:
            fields = template_fields(template)
        except ConfigError:
            fields = []
    return fields, [name for name in ITEM_TEXT_FIELDS if name not in fields]


def item_text(values: Mapping[str, Any], fields: tuple[list[str], list[str]]) -> str | None:
    """The item's own text among ``values`` (field -> value): the longest non-blank text of the template's fields,
    else the first non-blank text of the common names, else ``None``."""
    template, common = fields
    texts = [values.get(name) for name in template]
    texts = [value for value in texts if isinstance(value, str) and value.strip()]
    if texts:
        return max(texts, key=len)
    for name in common:
        value = values.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None
