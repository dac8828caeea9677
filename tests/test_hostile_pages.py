"""Hostile input on every page (issue 13, item 4): the forest pages, the labelling and staff pages, the admin's change
lists, change forms, delete and history pages and its actions. Pages are read from the URL conf
(tests/hostile_routes.py) and the admin's registry, so a page added later is attacked without being named.

- Who may see: an anonymous visitor is sent to a login page; a logged-in user without the permission gets 403.
- Markup in every text field a page shows (model output, worker and user names, notes, forest, config and version
  names, errors) stays text: no injected element, handler or script URL (tests/html_checks.py reads each page with
  an HTML parser).
- SQL-looking strings and LIKE wildcards in every search box and filter are text: nothing extra matches, no 500.
- Forms refuse a POST without the CSRF token, and bodies a database cannot store, writing nothing.
"""

from __future__ import annotations

import html as html_module
import re
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth.models import Group
from django.db import models
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from adapters.models import PRMAdapter
from forests.growth.plan import growth_plan_set
from forests.growth.queue import expansion_claim, expansion_release
from forests.models import Forest
from forests.services import forest_search_report_save
from rollouts.models import Adjudication, GoldItem, LabelDraft, ProcessRewardLabel, Rollout, RolloutCheckout
from tests.factories import make_forest, make_label, make_rollout, make_root, make_worker_token
from tests.hostile_routes import page_routes
from tests.html_checks import HOSTILE_TEXT, PWNED, assert_no_live_markup
from tests.rollouts.conftest import rollout_body
from tests.rollouts.labelling.conftest import (
    claim_next,
    form_data,
    labellers_group,
    make_labeller,
    make_scheme,
    rollout_url,
)

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"
# For fields with a length limit and names that go into URLs (one path segment: no "/").
SHORT = "<img src=x onerror=window.__pwned=2>\"'><svg onload=window.__pwned=5>"
SCHEME = "human-x"
PUBLIC = {"login", "logout", "welcome"}  # pages anyone may open (welcome: a labeller's invitation link)
SQL_LOOKING = ["' OR 1=1 --", '" OR ""="', "%", "%%", "\\", "\\%", "1; DROP TABLE rollouts_rollout; --", "_"]


def db_counts() -> dict[str, int]:
    labels = ("forests", "rollouts", "adapters", "auth", "admin")
    return {m._meta.label: m.objects.count() for label in labels for m in apps.get_app_config(label).get_models()}


# --- The world every page shows: hostile text in every field -------------------------------------------------------


@pytest.fixture
def world(db, staff_user, django_user_model):
    """Rows of every model, their text fields holding markup; the staff user is a labeller too."""

    forest = Forest.objects.create(
        name="forest-" + SHORT,
        config_name=SHORT,
        dataset_split=SHORT,
        config_source=HOSTILE_TEXT,
        rollout_config={"template": HOSTILE_TEXT, "config_name": SHORT},
        attributes={"note": HOSTILE_TEXT, SHORT: 1},
    )
    root = make_root(forest, HOSTILE_TEXT, ground_truth=1, serialized_item={"statement": HOSTILE_TEXT, SHORT: [1]})
    worker = django_user_model.objects.create_user(SHORT[:150])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {make_worker_token(worker)}")
    for steps, prediction in (([HOSTILE_TEXT, "Verdict: " + SHORT], 1), ([HOSTILE_TEXT, "other " + SHORT], 0)):
        body = rollout_body(
            forest_name=forest.name, model=SHORT, worker=SHORT, reasoning=steps, prediction=prediction, ground_truth=1
        )
        body["example"] = HOSTILE_TEXT
        body[SHORT.replace('"', "").replace("'", "")[:40]] = HOSTILE_TEXT  # an extra field, kept in attributes
        response = api.post("/rollout", body, format="json")
        assert response.status_code == 200, response.content
    rollouts = list(Rollout.objects.order_by("pk"))
    now = timezone.now()
    growth_plan_set(forest_name=forest.name, given={"num_repeats": 4}, by=SHORT, now=now)
    claim = expansion_claim(forest_name=forest.name, claimed_by=SHORT[:150], now=now, limit=1)
    expansion_release(
        forest_name=forest.name,
        ids=[e.id for e in claim.expansions],
        released_by=SHORT[:150],
        now=now,
        failed=True,
        error=HOSTILE_TEXT,
    )
    report = {"baselines": {SHORT: {"accuracy": 0.5}}, "results": [], "num_trees": 1, "aggregation": "last"}
    forest_search_report_save(forest=forest, report=report)
    make_label(
        rollouts[0],
        prm_version="ai-" + SHORT,
        worker=SHORT,
        labelled_by=SHORT,
        explanations=[HOSTILE_TEXT, HOSTILE_TEXT],
        attributes={"finish_reason": SHORT, "note": HOSTILE_TEXT},
    )
    RolloutCheckout.objects.create(
        rollout=rollouts[1], prm_version="ai-" + SHORT, claimed_by=SHORT, expires_at=now + timedelta(hours=1)
    )
    PRMAdapter.objects.create(
        prm_version="adapter-" + SHORT, base_model=SHORT, worker=SHORT, sha256="0" * 64, size=1, file="x.zip"
    )
    scheme = make_scheme(SCHEME, title=SHORT, instructions=HOSTILE_TEXT, labels_per_rollout=2)
    # Gold items and adjudications (with their history) of a scheme of their own, so SCHEME's queue is as it was.
    checked = make_scheme("checked-x", title=SHORT, instructions=HOSTILE_TEXT)
    GoldItem.objects.create(
        scheme=checked, rollout=rollouts[0], prm_output=[1, 0], rated_steps=2, created_by=staff_user
    )
    Adjudication.objects.create(
        scheme=checked,
        rollout=rollouts[1],
        prm_output=[1, 2],
        rated_steps=1,
        explanations=[HOSTILE_TEXT, SHORT],
        reason=HOSTILE_TEXT,
        decided_by=staff_user,
        decided_at=now,
    )
    staff_user.groups.add(labellers_group())
    staff_user.first_name, staff_user.last_name, staff_user.email = SHORT[:150], SHORT[:150], "a@b.c"
    staff_user.save()
    Group.objects.create(name="group-" + SHORT)
    # A failed login by a hostile username and browser: the rows django-axes keeps (its admin shows them).
    Client(HTTP_USER_AGENT=SHORT).post("/admin/login/", {"username": SHORT, "password": "wrong"})
    Client().force_login(staff_user)
    labeller = make_labeller("ann", first_name=SHORT[:150])
    return {
        "forest": forest,
        "root": root,
        "rollouts": rollouts,
        "scheme": scheme,
        "labeller": labeller,
        "worker": worker,
    }


@pytest.fixture
def labeller_client(client, db):
    client.force_login(make_labeller("ann"))
    return client


@pytest.fixture
def hostile_client(client, world, staff_user):
    """The staff user, logged in, holding a draft of the first rollout with markup in its notes and a stored label of
    the second."""
    client.force_login(staff_user)
    scheme = world["scheme"]
    rollout_id = claim_next(client, scheme)
    assert rollout_id is not None
    saved = client.post(
        rollout_url(scheme, rollout_id), form_data([1, None], notes=[HOSTILE_TEXT, SHORT], action="save")
    )
    assert saved.status_code == 302
    other = world["labeller"]
    other_client = Client()
    other_client.force_login(other)
    other_id = claim_next(other_client, scheme)
    page = other_client.get(rollout_url(scheme, other_id)).content.decode()
    visit = re.search(r'name="visit" value="([^"]*)"', page).group(1)
    done = other_client.post(
        rollout_url(scheme, other_id), form_data([1, -1], notes=[HOSTILE_TEXT, SHORT], visit=visit)
    )
    assert done.status_code == 302, done.content[:500]
    return client


# Pages that only take a POST: claim the next rollout, skip one.
POST_ONLY = ("next", "skip")
# The search plots: SVG images we draw (texts as paths), checked in tests/forests/test_search_reports_pages.py.
PLOTS = ("search_plot", "search_reports_plot", "search_report_plot")


def page_urls(world) -> list[str]:
    """Every HTML page outside the admin, filled with the world's names."""
    values = {
        "forest_name": quote(world["forest"].name, safe=""),
        "root_id": world["root"].pk,
        "node_id": world["root"].pk,  # the node pages (a root is a node of its tree; its page shows the item)
        "prm_version": SCHEME,
        "rollout_id": world["rollouts"][0].pk,
    }
    urls = []
    for route in page_routes():
        if route.name in PUBLIC or route.name in (*POST_ONLY, *PLOTS, "revise"):
            continue  # next and skip are POSTs (claimed in the fixture); the plots are SVG images; revise: see below
        urls.append(route.path(**values))
    scheme = world["scheme"]
    urls += [
        rollout_url(scheme, world["rollouts"][1].pk),  # labelled by the other labeller: not ours
        # Revising a label needs one's own (the author's page is in tests/rollouts/labelling/test_injection.py).
        reverse("labelling:stats", kwargs={"prm_version": SCHEME}) + f"?compare={quote(SHORT)}&mc=1",
        reverse("labelling:export", kwargs={"prm_version": SCHEME}) + "?rule=steps&min_labels=1",
        reverse("labelling:export", kwargs={"prm_version": SCHEME}) + f"?rule={quote(SHORT)}&versions={quote(SHORT)}",
        reverse("forests:tree", kwargs={"forest_name": world["forest"].name, "root_id": world["root"].pk})
        + "?open=1000",
    ]
    return urls


def admin_urls(world) -> list[str]:
    """The admin's index, each app's index, and each registered model's change list, add, change, delete and history
    pages for every row."""
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:app_list", args=[model._meta.app_label]))
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        if model_admin.has_add_permission(_superuser_request(world)):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
        for pk in model.objects.values_list("pk", flat=True)[:5]:
            for view in ("change", "delete", "history"):
                urls.append(reverse(f"admin:{info[0]}_{info[1]}_{view}", args=[pk]))
    return sorted(set(urls))


def _superuser_request(world):
    request = RequestFactory().get("/")
    request.user = type("U", (), {"has_perm": lambda *a: True, "is_active": True, "is_staff": True})()
    return request


# --- Markup stays text on every page -------------------------------------------------------------------------------


def test_every_page_shows_hostile_text_inert(hostile_client, world):
    urls = page_urls(world) + admin_urls(world)
    assert len(urls) > 60  # the enumeration found the pages
    shown = 0
    for url in urls:
        response = hostile_client.get(url)
        # 302: /<forest_name> goes to the forest's page; 400: an export form refusing its hostile options.
        assert response.status_code in (200, 302, 400), (url, response.status_code)
        if response.status_code == 302 or not response["Content-Type"].startswith("text/html"):
            continue
        html = response.content.decode()
        try:
            assert_no_live_markup(html)
        except AssertionError as exc:
            raise AssertionError(f"{url}: {exc}") from None
        shown += PWNED in html
    assert shown >= len(urls) * 0.7  # most pages do show the hostile text (escaped), so the check is not vacuous


def test_the_admin_actions_show_hostile_names_and_errors_inert(hostile_client, world):
    changelist = reverse("admin:forests_forest_changelist")
    forest = world["forest"]
    selected = {helpers.ACTION_CHECKBOX_NAME: [forest.pk]}
    pages = [
        hostile_client.post(changelist, {"action": "compute_search_metrics", **selected}),
        hostile_client.post(changelist, {"action": "download_export", **selected}),
        hostile_client.post(changelist, {"action": "delete_selected", **selected}),
        hostile_client.post(
            changelist,
            {
                "action": "compute_search_metrics",
                "apply": "1",
                "num_beam_values": SHORT,
                "value_function_option": HOSTILE_TEXT,
                "aggregation": "last",
                **selected,
            },
        ),
        hostile_client.post(
            changelist,
            {
                "action": "download_export",
                "apply": "1",
                "kind": "pairs",
                "format": "jsonl",
                "value_function_option": "prm:" + SHORT,
                "min_margin": "0",
                "paths": "distinct",
                "threshold": "0",
                "placeholder_token": SHORT,
                **selected,
            },
        ),
    ]
    metrics = hostile_client.post(
        changelist,
        {
            "action": "compute_search_metrics",
            "apply": "1",
            "num_beam_values": "1",
            "value_function_option": "prm:" + SHORT,
            "aggregation": "last",
            **selected,
        },
        follow=True,
    )
    pages.append(metrics)
    for page in pages:
        assert page.status_code == 200, page.status_code
        html = page.content.decode()
        assert_no_live_markup(html)
        assert PWNED in html
    # A value source the forest lacks is refused on the form, in words, with the input kept: not a crash.
    assert "is not one of this forest" in metrics.content.decode() and not list(metrics.context["messages"])


def test_the_seed_form_shows_hostile_input_back_inert(staff_client):
    response = staff_client.post(
        reverse("admin:forests_forest_add"),
        {
            "config_name": SHORT,
            "dataset_split": HOSTILE_TEXT,
            "forest_name_suffix": SHORT,
            "limit": "1",
            "dataset_name": "../../" + SHORT,
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_live_markup(html)
    assert PWNED in html
    assert not Forest.objects.exists()


# --- Who may see each page -----------------------------------------------------------------------------------------


def route_cases():
    for route in page_routes():
        if route.name not in PUBLIC:
            yield pytest.param(route, id=route.path(forest_name="F", prm_version="V"))


def visit(client, route, world=None):
    values = {"forest_name": "forest-x", "prm_version": SCHEME, "root_id": 1, "rollout_id": 1}
    url = route.path(**values)
    return client.post(url) if route.name in POST_ONLY else client.get(url)


@pytest.fixture
def plain_world(db):
    forest = make_forest("forest-x")
    make_root(forest)
    make_rollout()
    make_scheme(SCHEME)


@pytest.mark.parametrize("route", list(route_cases()))
def test_an_anonymous_visitor_is_sent_to_a_login_page(client, plain_world, route):
    response = visit(client, route)
    assert response.status_code == 302
    assert response["Location"].startswith(("/admin/login/", "/label/login/"))


@pytest.mark.parametrize("route", list(route_cases()))
def test_a_logged_in_user_without_the_permission_is_refused(client, plain_world, django_user_model, route):
    client.force_login(django_user_model.objects.create_user("nobody", password=PASSWORD))
    before = db_counts()
    response = visit(client, route)
    # The /<name> redirect says nothing about which forests exist to someone who may not see them.
    assert response.status_code == (404 if route.name == "redirect" else 403)
    assert PWNED not in response.content.decode()
    assert db_counts() == before


@pytest.mark.parametrize("route", [r for r in route_cases() if r.values[0].route.startswith("forests/")])
def test_a_labeller_may_not_see_the_forest_pages(client, plain_world, route):
    # They show ground truths and values: a labeller must not see them.
    client.force_login(make_labeller("ann"))
    assert visit(client, route).status_code == 403


@pytest.mark.parametrize("route", [r for r in route_cases() if r.values[0].name in ("stats", "export")])
def test_a_labeller_may_not_see_the_staff_pages(client, plain_world, route):
    client.force_login(make_labeller("ann"))
    assert visit(client, route).status_code == 403


@pytest.mark.parametrize("route", list(route_cases()))
def test_a_deactivated_users_session_is_sent_to_a_login_page(client, plain_world, staff_user, route):
    client.force_login(staff_user)
    staff_user.is_active = False
    staff_user.save()
    response = visit(client, route)
    assert response.status_code == 302
    assert response["Location"].startswith(("/admin/login/", "/label/login/"))


def admin_cases():
    for model in admin.site._registry:
        info = (model._meta.app_label, model._meta.model_name)
        for view in ("changelist", "add"):
            yield pytest.param(reverse("admin:{}_{}_{}".format(*info, view)), id=f"{info[0]}.{info[1]}.{view}")
        for view in ("change", "delete", "history"):
            url = reverse("admin:{}_{}_{}".format(*info, view), args=[1])
            yield pytest.param(url, id=f"{info[0]}.{info[1]}.{view}")


@pytest.mark.parametrize("url", [reverse("admin:index"), *[p.values[0] for p in admin_cases()]])
def test_the_admin_sends_anonymous_and_non_staff_visitors_to_its_login(client, django_user_model, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    client.force_login(django_user_model.objects.create_user("nobody", password=PASSWORD))
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [p.values[0] for p in admin_cases()])
def test_staff_without_the_models_permissions_get_403_in_the_admin(client, django_user_model, url):
    client.force_login(django_user_model.objects.create_user("clerk", password=PASSWORD, is_staff=True))
    response = client.get(url)
    if url.endswith("/history/"):  # Django looks the object up first: no object, back to the index
        assert response.status_code in (403, 302)
        assert response.status_code == 403 or response["Location"] == "/admin/"
    else:
        assert response.status_code == 403


# --- Search boxes and filters: SQL-looking strings and wildcards are text ----------------------------------------


FILTER_VALUES = ("' OR 1=1 --", "%", "\\", "9" * 30, "nan", "2026-13-45", SHORT)
CHANGE_LINK = re.compile(r'href="/admin/\w+/\w+/(\d+)/change/')


def filter_parameters(model_admin) -> list[str]:
    """Query parameters each list filter, the date hierarchy and the change list itself read."""
    names = ["o", "p", "e", "all", "_to_field", "_popup"]
    for entry in model_admin.list_filter:
        if isinstance(entry, tuple):
            names.append(f"{entry[0]}__id__exact")
        elif isinstance(entry, str):
            field = model_admin.model._meta.get_field(entry)
            names += [f"{entry}__exact", f"{entry}__isnull", f"{entry}__gte", f"{entry}__lt"]
            if field.is_relation:
                names.append(f"{entry}__id__exact")
        else:
            names.append(entry.parameter_name)
    if model_admin.date_hierarchy:
        names += [f"{model_admin.date_hierarchy}__{part}" for part in ("year", "month", "day")]
    return names


def filter_cases():
    for model, _model_admin in admin.site._registry.items():
        yield pytest.param(model, id=model._meta.label)


@pytest.mark.parametrize("model", [p.values[0] for p in filter_cases()], ids=lambda m: m._meta.label)
def test_sql_and_wildcards_in_every_admin_search_and_filter_are_text(hostile_client, world, model):
    model_admin = admin.site._registry[model]
    changelist = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    rows = model.objects.count()
    assert rows or model._meta.app_label in ("axes", "knox"), f"the world has no {model._meta.label}"
    for value in [*SQL_LOOKING, "9" * 30, "-1", "nan", "2026-13-45", SHORT]:
        if model_admin.search_fields:
            response = hostile_client.get(changelist, {"q": value})
            assert response.status_code == 200, (value, response.status_code)
            assert_no_live_markup(response.content.decode())
            if value not in ("_", SHORT) and not value.isdigit():
                # No row holds these: a wildcard or an injected condition matching everything would list them.
                assert not CHANGE_LINK.search(response.content.decode()), (model, value)
        for parameter in filter_parameters(model_admin) if value in FILTER_VALUES else ():
            response = hostile_client.get(changelist, {parameter: value})
            # The admin answers a filter it cannot apply with the unfiltered list and ?e=1, or a 400.
            assert response.status_code in (200, 302, 400), (parameter, value, response.status_code)
            if response.status_code == 200:
                assert_no_live_markup(response.content.decode())
    assert model.objects.count() == rows


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/admin/rollouts/labeldraft/", "user__password__startswith"),
        ("/admin/auth/user/", "password__startswith"),
        ("/admin/rollouts/rollout/", "labels__explanations__icontains"),
    ],
)
def test_filtering_on_a_field_the_admin_does_not_offer_is_refused(staff_client, url, parameter):
    # The classic admin leak: guessing a password hash or a token digest one character at a time.
    response = staff_client.get(url, {parameter: "p"})
    assert response.status_code in (400, 302)
    if response.status_code == 302:
        assert "e=1" in response["Location"]


@pytest.mark.parametrize(
    "url",
    [
        "/forests/?page={v}",
        "/forests/{forest}/?page={v}",
        "/forests/{forest}/?q={v}",
        "/forests/{forest}/?sort={v}&truth={v}&min_accuracy={v}&max_nodes={v}",
        "/forests/{forest}/?q=step&sort=-accuracy&truth=1&min_rollouts={v}&page={v}",
        "/forests/{forest}/?sort=-disagreement&source={v}",
        "/forests/{forest}/trees/{root}/?node={v}",
        "/forests/{forest}/trees/{root}/?open={v}",
        "/label/{scheme}/stats/?compare={v}&mc={v}",
        "/label/{scheme}/export/?rule={v}&min_labels={v}&versions={v}&format={v}&mc={v}",
        "/label/{scheme}/export/?rule=steps&download=1&format={v}",
        "/label/?include_closed={v}",
        "/{v}",
        "/forests/{v}/",
        "/label/{v}/",
    ],
)
def test_sql_and_wildcards_in_every_page_filter_are_answered_cleanly(hostile_client, world, url):
    for value in [*SQL_LOOKING, "9" * 30, "-1", "0", "%FF", SHORT, "x" * 5000]:
        filled = url.format(
            v=quote(value, safe="") if value != "%FF" else value,
            forest=quote(world["forest"].name, safe=""),
            root=world["root"].pk,
            scheme=SCHEME,
        )
        response = hostile_client.get(filled)
        assert response.status_code in (200, 301, 302, 400, 404), (filled[:200], response.status_code)
        if response["Content-Type"].startswith("text/html"):
            assert_no_live_markup(response.content.decode())


@pytest.mark.parametrize("value", ["%", "_", "%25", "forest-_", "FOREST-X", "' OR 1=1 --"])
def test_a_wildcard_in_a_page_name_finds_nothing(staff_client, plain_world, value):
    for url in (f"/forests/{quote(value, safe='')}/", f"/label/{quote(value, safe='')}/stats/"):
        assert staff_client.get(url).status_code == 404, url


# --- CSRF: every form refuses a POST without its token -----------------------------------------------------------


def csrf_cases(world):
    forest, scheme = world["forest"], world["scheme"]
    changelist = reverse("admin:forests_forest_changelist")
    selected = {helpers.ACTION_CHECKBOX_NAME: [forest.pk]}
    return [
        (reverse("admin:forests_forest_add"), {"config_name": "liar", "dataset_split": "test", "limit": "1"}),
        (changelist, {"action": "compute_search_metrics", "apply": "1", "num_beam_values": "1", **selected}),
        (changelist, {"action": "download_export", "apply": "1", "kind": "pairs", "format": "jsonl", **selected}),
        (changelist, {"action": "delete_selected", "post": "yes", **selected}),
        (reverse("admin:forests_forest_delete", args=[forest.pk]), {"post": "yes"}),
        (reverse("admin:forests_forest_change", args=[forest.pk]), {"rollout_config": "{}", "attributes": "{}"}),
        (reverse("admin:rollouts_labellingscheme_add"), {"prm_version": "new", "title": "t", "instructions": "i"}),
        (reverse("admin:rollouts_labellingscheme_delete", args=[scheme.pk]), {"post": "yes"}),
        (reverse("admin:rollouts_rollout_delete", args=[world["rollouts"][0].pk]), {"post": "yes"}),
        (reverse("admin:auth_user_add"), {"username": "x", "password1": PASSWORD, "password2": PASSWORD}),
        (reverse("admin:password_change"), {"old_password": PASSWORD, "new_password1": "n" * 20}),
        (reverse("admin:logout"), {}),
        (reverse("labelling:next", kwargs={"prm_version": SCHEME}), {}),
        (rollout_url(scheme, world["rollouts"][0].pk), form_data([1, 1], action="save")),
        (rollout_url(scheme, world["rollouts"][0].pk), form_data([1, 1])),
        (reverse("labelling:logout"), {}),
        (reverse("labelling:login"), {"username": "ann", "password": PASSWORD}),
        (reverse("admin:login"), {"username": "staff", "password": PASSWORD}),
    ]


def test_every_form_refuses_a_post_without_the_csrf_token(world, staff_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    cases = csrf_cases(world)
    assert len(cases) >= 18
    for url, data in cases:
        before = db_counts()
        response = client.post(url, data)
        assert response.status_code == 403, (url, response.status_code)
        assert "CSRF" in response.content.decode(), url
        assert db_counts() == before, url
        assert client.session.get("_auth_user_id") == str(staff_user.pk), f"{url} logged the user out"


def test_a_post_with_the_token_of_another_session_is_refused(world, staff_user):
    thief = Client(enforce_csrf_checks=True)
    thief.get(reverse("labelling:login"))
    stolen = thief.cookies["csrftoken"].value
    victim = Client(enforce_csrf_checks=True)
    victim.force_login(staff_user)
    before = db_counts()
    response = victim.post(reverse("labelling:next", kwargs={"prm_version": SCHEME}), {"csrfmiddlewaretoken": stolen})
    assert response.status_code == 403
    assert db_counts() == before


# --- Bodies a form must refuse: NUL, deep JSON, oversize, too many fields ----------------------------------------


def json_field_cases():
    """(model, JSON field) of every admin change form with a JSON field it lets staff edit."""
    for model, model_admin in admin.site._registry.items():
        for field in model._meta.get_fields():
            request = _superuser_request(None)
            if (
                isinstance(field, models.JSONField)
                and model_admin.has_change_permission(request)
                and field.name not in model_admin.get_readonly_fields(request)
            ):
                yield pytest.param(model, field.name, id=f"{model._meta.label}.{field.name}")


def change_form_data(client, url) -> dict:
    """The change form's current values, as a browser would post them back."""
    html = client.get(url).content.decode()
    data = {}
    for name, value in re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html):
        data[name] = value
    for name, value in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        data[name] = value.strip()
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        data[name] = chosen.group(1) if chosen else ""
    return {k: html_module.unescape(v) for k, v in data.items() if k != "csrfmiddlewaretoken"}


@pytest.mark.parametrize(("model", "field"), list(json_field_cases()))
@pytest.mark.parametrize(
    "value",
    [
        '{"a": "b\\u0000c"}',
        '["\\u0000"]',
        '{"\\u0000": 1}',
        "[" * 100_000 + "]" * 100_000,
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": "\\ud800"}',
    ],
    ids=["NUL in a value", "NUL in a list", "NUL in a key", "100000 deep", "NaN", "Infinity", "lone surrogate"],
)
def test_an_admin_json_field_refuses_what_a_database_cannot_store(hostile_client, world, model, field, value):
    obj = model.objects.order_by("pk").first()
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[obj.pk])
    data = change_form_data(hostile_client, url)
    data[field] = value
    before = db_counts()
    stored = model.objects.filter(pk=obj.pk).values(field).get()
    response = hostile_client.post(url, data)
    assert response.status_code == 200, (response.status_code, response.content[:300])  # the form, with its error
    assert "errornote" in response.content.decode() or "errorlist" in response.content.decode()
    assert db_counts() == before
    assert model.objects.filter(pk=obj.pk).values(field).get() == stored


@pytest.mark.parametrize(
    "notes",
    [["a\x00b", ""], ["x" * 100_000, ""]],
    ids=["NUL", "100000 characters"],
)
def test_the_labelling_form_refuses_notes_it_cannot_store(labeller_client, notes):
    scheme = make_scheme()
    rollout = make_rollout()
    rollout_id = claim_next(labeller_client, scheme)
    assert rollout_id == rollout.pk
    before = db_counts()
    for action in ("save", "submit"):
        response = labeller_client.post(rollout_url(scheme, rollout.pk), form_data([1, 1], notes=notes, action=action))
        assert response.status_code == 400
        assert_no_live_markup(response.content.decode())
    assert db_counts() == before
    assert not LabelDraft.objects.exists() and not ProcessRewardLabel.objects.exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"rating_0": "1" * 5000},
        {"rating_0": "1e308"},
        {"rating_0": "-0"},
        {"rating_99999": "1"},
        {"finish_reason": SHORT},
        {"action": "drop table"},
        {"visit": "x" * 5000},
    ],
    ids=lambda f: next(iter(f)),
)
def test_the_labelling_form_refuses_odd_values_writing_nothing(labeller_client, fields):
    scheme = make_scheme()
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    before = db_counts()
    response = labeller_client.post(rollout_url(scheme, rollout.pk), {**form_data([1, 1]), **fields})
    if "rating_99999" in fields:  # a field no step has is ignored; the label is stored
        assert response.status_code == 302
        return
    assert response.status_code == 400
    assert db_counts() == before


@pytest.mark.parametrize(("url_name", "method"), [("labelling:rollout", "post"), ("labelling:login", "post")])
def test_an_oversize_form_or_too_many_fields_is_a_400_writing_nothing(labeller_client, settings, url_name, method):
    scheme = make_scheme()
    rollout = make_rollout()
    kwargs = {"labelling:next": {"prm_version": scheme.prm_version}}.get(url_name, {})
    if url_name == "labelling:rollout":
        kwargs = {"prm_version": scheme.prm_version, "rollout_id": rollout.pk}
    url = reverse(url_name, kwargs=kwargs)
    before = db_counts()
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    big = labeller_client.post(url, {"note_0": "x" * 20_000})
    many = labeller_client.post(url, {f"f{i}": "1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)})
    for response in (big, many):
        assert response.status_code == 400, response.status_code
    assert db_counts() == before


def test_non_utf8_and_nul_in_a_form_body_are_refused_or_replaced(labeller_client):
    scheme = make_scheme()
    rollout = make_rollout()
    claim_next(labeller_client, scheme)
    url = rollout_url(scheme, rollout.pk)
    before = db_counts()
    raw = b"action=save&rating_0=1&note_0=%FF%FE%00&note_1=%C3%28"
    response = labeller_client.generic("POST", url, raw, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400  # the NUL
    assert db_counts() == before
    raw = b"action=save&rating_0=1&note_0=%FF%FE&note_1=%C3%28"
    response = labeller_client.generic("POST", url, raw, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 302
    assert LabelDraft.objects.get().notes[0] == "\ufffd\ufffd"  # undecodable bytes are replaced, never stored raw


@pytest.mark.parametrize(
    "path",
    [
        "/forests/a%00b/",
        "/label/a%00b/",
        "/label/human-v1/rollouts/1/?x=%00",
        "/admin/rollouts/rollout/%00/change/",
        "/admin/rollouts/rollout/?q=%00",
        "/admin/rollouts/rollout/?worker__exact=%00",
        "/a%00",
    ],
)
def test_a_nul_in_a_pages_path_or_query_is_a_400(staff_client, path):
    assert staff_client.get(path, HTTP_ACCEPT="text/html").status_code == 400


def test_a_forest_page_for_a_huge_or_negative_tree_id_is_a_404(staff_client, plain_world):
    for root in ("9" * 30, "99999999999999999999", "0"):
        response = staff_client.get(f"/forests/forest-x/trees/{root}/")
        assert response.status_code == 404, root
    assert staff_client.get("/label/human-v1/rollouts/99999999999999999999/").status_code == 404
