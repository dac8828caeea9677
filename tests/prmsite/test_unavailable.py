"""The 503 "database unavailable" answer in each of its forms (``prmsite.unavailable``), and who reads it as JSON
(``prmsite.refusals``): the same detail, code and Retry-After everywhere."""

from __future__ import annotations

import json

from django.test import RequestFactory

from prmsite.refusals import error_body, wants_json
from prmsite.unavailable import (
    DATABASE_RETRY_AFTER_S,
    DATABASE_UNAVAILABLE,
    DATABASE_UNAVAILABLE_CODE,
    DATABASE_UNAVAILABLE_PAGE,
    RETRY_AFTER,
    database_unavailable_api_response,
    database_unavailable_body,
    database_unavailable_response,
)

BODY = {"detail": DATABASE_UNAVAILABLE, "code": DATABASE_UNAVAILABLE_CODE}


def test_the_body_is_the_one_error_shape_with_the_one_message():
    assert database_unavailable_body() == BODY == error_body(DATABASE_UNAVAILABLE, DATABASE_UNAVAILABLE_CODE)
    assert str(DATABASE_RETRY_AFTER_S) == RETRY_AFTER


def test_a_program_gets_json_and_a_browser_a_page():
    factory = RequestFactory()
    program = factory.get("/rollout", HTTP_AUTHORIZATION="Token abc", HTTP_ACCEPT="text/html")
    script = factory.get("/rollout", HTTP_ACCEPT="application/json")
    browser = factory.get("/forests/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert wants_json(program) and wants_json(script) and not wants_json(browser)

    for request in (program, script):
        response = database_unavailable_response(request)
        assert response.status_code == 503 and response["Retry-After"] == RETRY_AFTER
        assert json.loads(response.content) == BODY
    page = database_unavailable_response(browser)
    assert page.status_code == 503 and page["Retry-After"] == RETRY_AFTER
    assert page["Content-Type"] == "text/html; charset=utf-8"
    assert page.content.decode() == DATABASE_UNAVAILABLE_PAGE


def test_inside_drf_the_answer_carries_the_same_body_and_header():
    response = database_unavailable_api_response()
    assert response.status_code == 503 and response["Retry-After"] == RETRY_AFTER
    assert response.data == BODY
