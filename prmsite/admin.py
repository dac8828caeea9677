"""What a staff member types into the admin is refused with the form's error or the change list's "?e=1", never a 500.

- ``StorableJSONFormField``: the form field of every JSON model field in our change forms (``JSON_FORM_FIELDS`` in
  ``formfield_overrides``). Django's own parses ``NaN``, a NUL (``"\\u0000"``), a lone surrogate and a 100,000-deep
  array without complaint, and the database then refuses the row (a 500, on SQLite and PostgreSQL alike).
- ``OverflowSafeChangeList``: the change list of every model admin (Django's, the packages' and ours). A filter value
  too large for a date (``?created_at__year=99999999999``) or for the database's integers
  (``?groups__exact=10**30``) raised ``OverflowError``, a 500; it is now an unusable filter, like any other.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django import forms
from django.contrib.admin.options import IncorrectLookupParameters, ModelAdmin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput

from prmsite.parsers import JSON_TOO_DEEP, text_problem

NOT_FINITE = "JSON holds NaN or Infinity, which JSON text cannot store."


def _not_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_not_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_not_finite(item) for item in value.values())
    return False


def _storable_problem(value: Any) -> str | None:
    """Why the database could not store ``value`` (parsed JSON); ``None`` when it can. ``text_problem`` bounds the
    depth first, so the finite check below recurses no deeper than that."""
    return text_problem(value, where="the JSON") or (NOT_FINITE if _not_finite(value) else None)


class StorableJSONFormField(forms.JSONField):
    def to_python(self, value):
        try:
            converted = super().to_python(value)
        except RecursionError as exc:
            raise ValidationError(JSON_TOO_DEEP, code="invalid") from exc
        if problem := _storable_problem(converted):
            raise ValidationError(problem, code="invalid")
        return converted

    def bound_data(self, data, initial):
        # The refused text is shown back as it was typed (parsing it again could recurse, or yield unprintable text).
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        try:
            parsed = json.loads(data, cls=self.decoder)
        except (json.JSONDecodeError, RecursionError):
            return InvalidJSONInput(data)
        return InvalidJSONInput(data) if _storable_problem(parsed) else parsed


JSON_FORM_FIELDS = {models.JSONField: {"form_class": StorableJSONFormField}}


class OverflowSafeChangeList(ChangeList):
    def __init__(self, *args, **kwargs) -> None:
        try:
            super().__init__(*args, **kwargs)
        except OverflowError as exc:
            raise IncorrectLookupParameters(exc) from exc


def _get_changelist(self, request, **kwargs):
    return OverflowSafeChangeList


# Every model admin, including those of django.contrib.auth, knox and axes, which this project does not define.
ModelAdmin.get_changelist = _get_changelist
