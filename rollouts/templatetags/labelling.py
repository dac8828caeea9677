"""Filters of the labelling pages: durations, shares and kappas as people read them."""

from __future__ import annotations

from django import template
from django.utils.safestring import SafeString, mark_safe

from prmsite.core.rendering import PageBudget, render_math_text
from rollouts.labelling.forms import RATING_WORDS
from rollouts.labelling.services import NOTE_MAX_CHARS

register = template.Library()

NONE = "\u2013"  # an en dash


@register.filter
def duration(seconds) -> str:
    """``1:05`` for 65 seconds, ``1:01:05`` past an hour; a dash for none."""
    if seconds is None or seconds == "":
        return NONE
    total = round(float(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@register.filter
def percent(share) -> str:
    """``73.2%`` for 0.732; a dash for none."""
    return NONE if share is None else f"{100 * float(share):.1f}%"


@register.filter
def figure(value, digits: int = 3) -> str:
    """A kappa or a rate with ``digits`` decimals; a dash for none (undefined)."""
    return NONE if value is None else f"{float(value):.{int(digits)}f}"


@register.filter
def rating_text(rating) -> str:
    """A rating as its sign and word (``+1 right``), as the labelling page shows it."""
    words = {int(choice["value"]): f"{choice['sign']} {choice['word']}" for choice in RATING_WORDS}
    return words.get(rating, "unrated")


@register.filter
def note_html(note) -> SafeString:
    """A labeller's note as sanitised HTML: its math as MathML, its line breaks kept, nothing else read as markdown
    (a note is at most NOTE_MAX_CHARS, so each costs a bounded render)."""
    text = ("" if note is None else str(note))[:NOTE_MAX_CHARS]
    shown = PageBudget(markdown_chars=NOTE_MAX_CHARS, render=render_math_text).show(text)
    return mark_safe(shown.html)  # noqa: S308 - PageBudget.show returns sanitised or escaped HTML
