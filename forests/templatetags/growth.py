"""Template helpers of the forest pages' growth display."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def get_item(mapping: dict, key: Any) -> Any:
    """``mapping[key]`` in a template (``{{ tree_tokens|get_item:root.pk }}``), ``None`` when missing."""
    return mapping.get(key) if hasattr(mapping, "get") else None
