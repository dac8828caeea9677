"""The labelling form's own reading of its body: a rollout may have ``PRM_ROLLOUT_MAX_STEPS`` steps and the form two
fields per step (rating, note), more than Django's ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` from 499 steps on. So the labelling
view reads its urlencoded body itself, with a bound of its own (``label_form_fields_max``), before the CSRF check
(``bounded_label_form``); a body beyond the bounds is a clear 400 page that links to where skipping works.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.utils.datastructures import MultiValueDict
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from rollouts.labelling.access import asks_for_json

FORM_TOO_MANY_FIELDS = (
    "Your form was not read: it has more than {max} fields, more than a rollout's steps can fill. Nothing was "
    "stored; open the rollout again, or skip it."
)
FORM_TOO_LARGE = (
    "Your form was not read: it is larger than the server accepts ({max} bytes; the notes are too long in all). "
    "Nothing was stored; shorten the notes, or skip the rollout."
)
# Fields of the labelling form besides a rating and a note per step (CSRF token, action, finish reason, bad-problem
# flag, visit, resume), with room to spare.
LABEL_FORM_FIXED_FIELDS = 16


def label_form_fields_max() -> int:
    """The most fields the labelling view reads from one form: a rating and a note for each step of the longest
    rollout the server stores (``PRM_ROLLOUT_MAX_STEPS``), plus the fixed ones; never fewer than Django's
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS``. Bounded by the settings, not by what a client sends."""
    default = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS or 0
    return max(default, 2 * settings.PRM_ROLLOUT_MAX_STEPS + LABEL_FORM_FIXED_FIELDS)


def _form_refused(request: HttpRequest, message: str, kwargs: dict) -> HttpResponse:
    """A 400 for a labelling form the server would not read, saying why; the page links back to the rollout and its
    scheme, where skipping works (it posts nothing but its CSRF token)."""
    if asks_for_json(request):
        return JsonResponse({"saved": False, "errors": [message]}, status=400)
    context = {"message": message, "prm_version": kwargs.get("prm_version"), "rollout_id": kwargs.get("rollout_id")}
    return render(request, "rollouts/labelling/refused.html", context, status=400)


def _urlencoded_post(request: HttpRequest, *, max_fields: int) -> QueryDict:
    """The request's urlencoded body as Django would read it (undecodable bytes replaced), with ``max_fields``
    instead of ``DATA_UPLOAD_MAX_NUMBER_FIELDS``. ``ValueError`` beyond it; ``RequestDataTooBig`` for a body beyond
    ``DATA_UPLOAD_MAX_MEMORY_SIZE``."""
    encoding = request.encoding or settings.DEFAULT_CHARSET
    body = request.body
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError:  # as Django's QueryDict does for misbehaving user agents
        text = body.decode("iso-8859-1")
    post = QueryDict(mutable=True, encoding=encoding)
    for key, value in parse_qsl(text, keep_blank_values=True, encoding=encoding, max_num_fields=max_fields):
        post.appendlist(key, value)
    post._mutable = False  # request.POST is immutable, as Django makes it
    return post


def bounded_label_form(view: Callable) -> Callable:
    """Read a urlencoded POST body with ``label_form_fields_max()`` fields at most, then check its CSRF token exactly
    as the middleware does (``csrf_protect``; the middleware itself skips the view, since it would read the body
    with Django's smaller bound first and refuse a long rollout's form). A body beyond the bounds is a clear 400 page
    and nothing else happens. Other bodies (multipart) are left to Django, with its bound."""
    protected = csrf_protect(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            max_fields = label_form_fields_max()
            try:
                request.POST = _urlencoded_post(request, max_fields=max_fields)
            except RequestDataTooBig:
                return _form_refused(request, FORM_TOO_LARGE.format(max=settings.DATA_UPLOAD_MAX_MEMORY_SIZE), kwargs)
            except ValueError:  # parse_qsl: more than max_fields fields
                return _form_refused(request, FORM_TOO_MANY_FIELDS.format(max=max_fields), kwargs)
            request._files = MultiValueDict()  # read already: request.FILES must not parse the body again
        return protected(request, *args, **kwargs)

    return csrf_exempt(wrapper)
