"""Issue 19, item 3: math on every page. A tree page, a labelling page, the labelled page (notes), a scheme's page
(instructions) and the admin's change forms show $…$, $$…$$, \\(…\\) and \\[…\\] as MathML, with markup inside math
inert: checked in the HTML the server sends, and in a real headless chromium (skipped where it is absent), where the
<math> elements are MathML with the expected structure and the labelling page's keyboard still works.
Screenshots go to test-artifacts/math/ (git-ignored)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from forests.models import Node
from rollouts.models import Rollout
from tests.browser import requires_chromium, screenshot, wait_for
from tests.factories import make_child, make_forest, make_rollout, make_root
from tests.rollouts.labelling.conftest import (
    PASSWORD,
    claim_next,
    make_labeller,
    make_scheme,
    rollout_url,
    submit,
)

PROMPT = r"Let \(f(x) = x^{2}\). Find $f(3)$ if it costs $5 and $10."
STEPS = [
    r"Inline dollars: $x^{2} + y_1$, and markdown around it is **bold**.",
    r"Inline parentheses: \(\frac{a}{b}\) and $a*b*c$ untouched.",
    "Display dollars:\n\n$$\n\\sqrt{2}\n$$\n",
    "Display brackets:\n\\[\n\\sum_{k=1}^{n} k\n\\]\nafter.",
    r"Hostile: $\text{<script>window.__pwned=1</script>}$ \(\href{javascript:window.__pwned=2}{x}\) "
    r"$\text{<img src=x onerror=window.__pwned=3>}$ $\style{background:red}{y}$",
]
NOTE = r"Should be \(x^{3}\), not $x^2$ <b>really</b>"
INSTRUCTIONS = r"Rate each step; a step with $\frac{1}{2}$ is fine."
# (annotation source, display, the first element of the formula's row)
EXPECTED = [
    ("f(x) = x^{2}", "inline", "mi"),
    ("f(3)", "inline", "mi"),
    ("x^{2} + y_1", "inline", "msup"),
    (r"\frac{a}{b}", "inline", "mfrac"),
    ("a*b*c", "inline", "mi"),
    (r"\sqrt{2}", "block", "msqrt"),
    (r"\sum_{k=1}^{n} k", "block", "munderover"),
]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.in_annotation = False
        self.display = ""
        self.annotations: list[str] = []
        self.displays: list[str] = []  # the display mode of the formula of each annotation

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "math":
            self.display = dict(attrs).get("display") or ""
        if tag == "annotation":
            self.in_annotation = True
            self.annotations.append("")
            self.displays.append(self.display)

    def handle_endtag(self, tag):
        if tag == "annotation":
            self.in_annotation = False

    def handle_data(self, data):
        if self.in_annotation:
            self.annotations[-1] += data


def parsed(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def assert_math_shown(html: str, expected=EXPECTED) -> None:
    """Every expected formula is a <math> with its display mode and its source, exactly; nothing injected is live."""
    page = parsed(html)
    shown = set(zip(page.annotations, page.displays, strict=True))
    for source, display, _ in expected:
        assert (source, display) in shown, f"{source!r} is not shown as {display} math"
    for tag, attrs in page.elements:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag in {"math", "mrow", "mi", "mo", "mn", "mtext", "msup", "mfrac", "semantics", "annotation"}:
            assert not {"href", "style", "src", "xlink:href"} & set(attrs), (tag, attrs)
    assert not re.search(r"<script>window\.__pwned", html)
    assert "<img src=x" not in html and 'href="javascript:' not in html
    assert "$5 and $10" in html  # a price stays prose


def may_read_forests(user):
    from django.contrib.auth.models import Permission  # deferred: the app registry is ready only in a test

    user.user_permissions.add(Permission.objects.get(codename="view_forest", content_type__app_label="forests"))
    return user


def tree_with_math():
    forest = make_forest("math-forest")
    root = make_root(forest, text=PROMPT)
    node = root
    for text in STEPS:
        node = make_child(node, text)
    Node.objects.filter(pk=node.pk).update(is_leaf=True)
    return forest, root


def labelling_with_math():
    scheme = make_scheme("math-v1", instructions=INSTRUCTIONS)
    rollout = make_rollout(example=PROMPT, reasoning=STEPS)
    return scheme, rollout


# --- The HTML the server sends (runs everywhere) -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_tree_page_shows_each_delimiter_as_math(client, django_user_model):
    client.force_login(may_read_forests(django_user_model.objects.create_user(username="reader", password=PASSWORD)))
    forest, root = tree_with_math()
    html = client.get(reverse("forests:tree", args=[forest.name, root.pk]), {"open": 99}).content.decode()
    assert_math_shown(html)


@pytest.mark.django_db
def test_the_labelling_pages_show_math_in_the_prompt_steps_instructions_and_notes(client):
    client.force_login(make_labeller("ann"))
    scheme, rollout = labelling_with_math()
    assert claim_next(client, scheme) == rollout.pk
    html = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert_math_shown(html, [*EXPECTED, (r"\frac{1}{2}", "inline", "mfrac")])
    assert 'src="/static/rollouts/labelling.js"' in html  # the page's keyboard script is still there

    detail = client.get(reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version})).content.decode()
    assert r"\frac{1}{2}" in parsed(detail).annotations

    response = submit(client, scheme, rollout.pk, [1, 1, 1, 1, -1], notes=["", "", "", "", NOTE])
    assert response.status_code == 302
    labelled = client.get(rollout_url(scheme, rollout.pk)).content.decode()
    assert_math_shown(labelled)
    notes = parsed(labelled)
    assert "x^{3}" in notes.annotations and "x^2" in notes.annotations
    assert "&lt;b&gt;really&lt;/b&gt;" in labelled  # a note is plain text with math: its HTML stays text


@pytest.mark.django_db
def test_the_admin_change_forms_show_texts_with_math(admin_client):
    _, root = tree_with_math()
    leaf = Node.objects.filter(tree=root).order_by("-depth").first()
    html = admin_client.get(reverse("admin:forests_node_change", args=[leaf.pk])).content.decode()
    assert r"\text{&lt;script&gt;window.__pwned=1&lt;/script&gt;}" in html
    assert any("<math" in line for line in html.splitlines())
    assert not re.search(r"<script>window\.__pwned", html)

    scheme, rollout = labelling_with_math()
    html = admin_client.get(reverse("admin:rollouts_rollout_change", args=[rollout.pk])).content.decode()
    assert_math_shown(html)
    html = admin_client.get(reverse("admin:rollouts_labellingscheme_change", args=[scheme.pk])).content.decode()
    assert r"\frac{1}{2}" in parsed(html).annotations


# --- In a real browser ---------------------------------------------------------------------------------------------

MATHML_NS = "http://www.w3.org/1998/Math/MathML"
READ_FORMULAS = """
return Array.from(document.querySelectorAll('math')).map(m => ({
  ns: m.namespaceURI,
  display: m.getAttribute('display'),
  block: getComputedStyle(m).display,
  source: (m.querySelector('annotation') || {}).textContent,
  first: m.querySelector('semantics > mrow') && m.querySelector('semantics > mrow').firstElementChild
         && m.querySelector('semantics > mrow').firstElementChild.localName,
  height: m.getBoundingClientRect().height,
  live: m.querySelectorAll('script, img, a, iframe, [href], [style], [onerror], [onclick]').length,
}));
"""


def check_formulas_in_browser(driver) -> None:
    formulas = {f["source"]: f for f in driver.execute_script(READ_FORMULAS)}
    for source, display, first in EXPECTED:
        formula = formulas.get(source)
        assert formula is not None, f"{source!r} is not a <math> element in the page"
        assert formula["ns"] == MATHML_NS, formula
        assert formula["display"] == display and formula["first"] == first, formula
        assert formula["height"] > 0, f"{source!r} is not drawn"
        if display == "block":
            assert formula["block"].startswith("block"), formula
    assert all(f["live"] == 0 for f in formulas.values())
    hostile = [f for f in formulas.values() if "pwned" in (f["source"] or "")]
    assert len(hostile) == 3 and all(f["live"] == 0 for f in hostile)
    assert driver.execute_script("return window.__pwned === undefined")
    assert driver.execute_script("return document.querySelectorAll('script').length") == len(
        driver.execute_script("return Array.from(document.scripts).filter(s => s.src).map(s => s.src)")
    )  # no inline script at all: every script is one of ours, by URL


@requires_chromium
@pytest.mark.django_db(transaction=True)
def test_math_renders_as_mathml_on_a_tree_page_and_a_labelling_page_in_chromium(browser, live_api_server):
    from selenium.webdriver.common.action_chains import ActionChains  # deferred: selenium is optional
    from selenium.webdriver.common.by import By  # deferred: selenium is optional

    labeller = may_read_forests(make_labeller("ann"))
    forest, root = tree_with_math()
    scheme, rollout = labelling_with_math()
    base = live_api_server.url

    browser.get(base + "/label/login/")
    browser.find_element(By.NAME, "username").send_keys(labeller.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + "\n")
    wait_for(browser, lambda d: d.current_url == base + "/label/", "the login did not lead to the scheme list")

    # The labelling page: the script starts, the formulas are MathML, and the keyboard still rates steps.
    browser.get(base + reverse("labelling:scheme", kwargs={"prm_version": scheme.prm_version}))
    browser.find_element(
        By.CSS_SELECTOR, "form[action$='/next/'] button, form[action$='/next/'] input[type=submit]"
    ).click()
    wait_for(browser, lambda d: d.current_url == base + rollout_url(scheme, rollout.pk), "no rollout was handed out")
    wait_for(
        browser,
        lambda d: d.execute_script("return document.querySelector('li.step.current') !== null"),
        "the labelling script did not start",
    )
    check_formulas_in_browser(browser)
    screenshot(browser, "math", "1-labelling-page")
    ActionChains(browser).send_keys("+").perform()
    wait_for(
        browser,
        lambda d: "Draft saved" in d.find_element(By.ID, "save-status").text,
        "rating a step with the keyboard did not save a draft",
    )

    # The tree page (the forest pages take any logged-in user).
    browser.get(base + reverse("forests:tree", args=[forest.name, root.pk]) + "?open=99")
    wait_for(browser, lambda d: d.execute_script("return document.querySelectorAll('math').length") > 0, "no math")
    check_formulas_in_browser(browser)
    screenshot(browser, "math", "2-tree-page")
    assert Rollout.objects.filter(pk=rollout.pk).exists()
