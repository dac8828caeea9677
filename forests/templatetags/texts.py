"""Texts as the forest and labelling pages show them (markdown and math, sanitised), for other pages: the admin's
change forms show a node's text, a rollout's prompt and steps and a scheme's instructions this way under the fields
that edit their source."""

from __future__ import annotations

from django import template
from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

from prmsite.core.rendering import PageBudget

register = template.Library()


@register.simple_tag
def page_texts(*texts) -> list[SafeString]:
    """Each text (a list counts as its items) as sanitised HTML, all within one page's budget
    (PAGE_MARKDOWN_MAX_CHARS, PAGE_TEXT_MAX_BYTES): ``{% page_texts obj.example obj.reasoning as shown %}``."""
    budget = PageBudget(markdown_chars=settings.PAGE_MARKDOWN_MAX_CHARS, html_bytes=settings.PAGE_TEXT_MAX_BYTES)
    flat: list[str] = []
    for text in texts:
        if isinstance(text, list | tuple):
            flat.extend(item if isinstance(item, str) else str(item) for item in text)
        elif text is not None:
            flat.append(text if isinstance(text, str) else str(text))
    return [mark_safe(budget.show(text).html) for text in flat]  # noqa: S308 - PageBudget.show returns safe HTML
