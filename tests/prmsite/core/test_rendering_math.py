"""Issue 19, item 3: LaTeX in texts renders as MathML, server-side, for $…$, $$…$$, \\(…\\) and \\[…\\]; markdown never
alters what lies inside the delimiters; a $5 price stays prose; bad LaTeX shows its source; MathML stays sanitised;
the cost of math is bounded and counted."""

from __future__ import annotations

import html as html_module
import re
from html.parser import HTMLParser
from xml.etree import ElementTree as ET

import pytest

from prmsite.core import rendering
from prmsite.core.rendering import MATH_MAX_CHARS, MATH_MAX_DEPTH, PageBudget, render_markdown
from tests.html_checks import assert_inert


@pytest.fixture(autouse=True)
def _fresh_caches():
    # Rendered documents and converted formulas are cached per process: each test counts its own work.
    rendering._cache.clear()
    rendering._mathml.cache_clear()
    yield
    rendering._cache.clear()
    rendering._mathml.cache_clear()


def formulas(markup: str) -> list[ET.Element]:
    """The <math> elements of ``markup``, parsed as XML (the renderer writes well-formed MathML)."""
    found = re.findall(r"<math\b.*?</math>", markup.replace("&nbsp;", "&#160;"), re.S)
    return [ET.fromstring(m) for m in found]  # noqa: S314 - our own renderer's output, without a DTD


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def tags(markup: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every element of ``markup`` as a browser's tokenizer reads it: (tag, attributes)."""
    parser = _Tags()
    parser.feed(markup)
    parser.close()
    return parser.tags


def assert_math_inert(markup: str) -> None:
    """Only allow-listed elements and attributes: no script, no event handler, no link, no style."""
    for tag, attributes in tags(markup):
        assert tag in rendering.ALLOWED_TAGS | rendering.MATH_TAGS, tag
        allowed = rendering.ALLOWED_ATTRIBUTES.get(tag, set()) | rendering.MATH_ATTRIBUTES.get(tag, set())
        assert set(attributes) <= allowed, (tag, attributes)
        assert tag != "a" or not (attributes.get("href") or "").lower().startswith("javascript:")


def annotation(math: ET.Element) -> str:
    return math.find("semantics/annotation").text


def test_each_delimiter_renders_as_math_with_its_display_mode():
    cases = [
        (r"Let $x^2$ be", "inline", "x^2"),
        (r"Let \(x^2\) be", "inline", "x^2"),
        ("Then\n\n$$\n\\frac{1}{2}\n$$\n", "block", "\\frac{1}{2}"),
        ("Then\n\n\\[\n\\frac{1}{2}\n\\]\n", "block", "\\frac{1}{2}"),
        (r"inline display \[ y = 3 \] in prose", "block", "y = 3"),
        (r"inline display $$y = 3$$ in prose", "block", "y = 3"),
    ]
    for text, display, source in cases:
        html = render_markdown(text)
        [math] = formulas(html)
        assert math.get("display") == display, text
        assert annotation(math) == source, text
        assert "$" not in html.replace(source, "") and "\\(" not in html and "\\[" not in html


def test_the_mathml_has_the_expected_structure():
    [math] = formulas(render_markdown(r"\(\frac{a}{b} + x^{2}\)"))
    row = math.find("semantics/mrow")
    assert [child.tag for child in row] == ["mfrac", "mo", "msup"]
    assert [mi.text for mi in row.find("mfrac").iter("mi")] == ["a", "b"]
    assert row.find("mo").text == "+"  # the symbol as a character, not the text "&#x0002B;"
    assert [e.text for e in row.find("msup")] == ["x", None] and row.find("msup/mrow/mn").text == "2"
    [sqrt] = formulas(render_markdown(r"$\sqrt{2}$"))
    assert sqrt.find("semantics/mrow/msqrt").find(".//mn").text == "2"


def test_an_amsmath_environment_on_lines_of_its_own_is_display_math():
    text = "Solve:\n\\begin{align*}\na &= b + c \\\\\nd &= e\n\\end{align*}\nso it holds."
    html = render_markdown(text)
    [math] = formulas(html)
    assert math.get("display") == "block" and math.find(".//mtable") is not None
    assert annotation(math) == "\\begin{align*}\na &= b + c \\\\\nd &= e\n\\end{align*}"
    assert "<p>Solve:</p>" in html and "<p>so it holds.</p>" in html


@pytest.mark.parametrize(
    "text",
    [
        "It costs $5 and $10.",
        "Between $3 and $4 a day, or $ 5 to $ 6.",
        "I have $a and $b left.",  # a space before the closing $: not math (pandoc's rule)
        "Prices: $1,000 vs $2,000.",
        r"Escaped \$x\$ is text.",
    ],
)
def test_dollar_prices_in_prose_stay_text(text):
    html = render_markdown(text)
    assert "<math" not in html and "math-source" not in html
    assert "$" in html


def test_markdown_never_alters_what_lies_inside_math():
    sources = [
        r"a*b*c",
        r"a_1 + b_2 + c_1",
        r"x \\ y",
        r"\, \; \!",
        r"[x](y)",
        r"`z`",
        r"<b>bold</b>",
        r"**s**",
        r"a &lt; b",
    ]
    for source in sources:
        for opening, closing in (("$", "$"), ("\\(", "\\)"), ("$$", "$$"), ("\\[", "\\]")):
            html = render_markdown(f"Before {opening}{source}{closing} after *emphasis*")
            found = formulas(html)
            if found:
                assert annotation(found[0]) == source, (opening, source)
            else:  # latex2mathml could not read it: its source, exactly, escaped
                assert f'<code class="math-source">{html_module.escape(opening + source + closing)}</code>' in html
            assert "<em>emphasis</em>" in html  # markdown outside the math still applies
            assert "<strong>" not in html.split("after")[0] and "<b>" not in html and "<a " not in html


def test_a_display_block_interrupts_a_paragraph_and_its_lines_are_never_markdown():
    text = "We get\n$$\nx\n- y\n# z\n$$\nand\n\\[\na\n+ b\n\\]\ndone"
    html = render_markdown(text)
    assert "<ul>" not in html and "<h1>" not in html and "<li>" not in html
    assert [annotation(m) for m in formulas(html)] == ["x\n- y\n# z", "a\n+ b"]


def test_bad_latex_shows_its_source_and_the_rest_of_the_text_renders():
    html = render_markdown("**ok** $\\frac{$ and $\\left( x$ then \\(\\sqrt[\\) then\n\n$$\n\\begin{foo}\n$$\n\nend")
    assert "<strong>ok</strong>" in html and "<p>end</p>" in html
    assert '<code class="math-source">$\\frac{$</code>' in html
    assert '<code class="math-source">\\(\\sqrt[\\)</code>' in html
    assert '<pre><code class="math-source">$$\n\\begin{foo}\n$$</code></pre>' in html


def test_source_shown_for_bad_latex_is_escaped():
    html = render_markdown(r"$\frac{<script>alert(1)</script>$")
    assert_inert(html)
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    "latex",
    [
        r"\href{javascript:alert(1)}{x}",
        r"\text{<script>alert(1)</script>}",
        r"\text{<img src=x onerror=alert(1)>}",
        r"\text{</math><script>alert(1)</script>}",
        r"\text{<a href='javascript:alert(1)'>x</a>}",
        r"\style{background:url(javascript:alert(1))}{x}",
        r"\color{white}{hidden}",
        r"\mathrm{<svg onload=alert(1)>}",
        r"\operatorname{<iframe src=javascript:alert(1)>}",
        r"\toggle{a}{b}\endtoggle",
    ],
)
def test_hostile_latex_renders_inert(latex):
    for text in (f"${latex}$", f"\\[{latex}\\]", f"$$\n{latex}\n$$"):
        html = render_markdown(text)
        assert_math_inert(html)
        assert [tag for tag, _ in tags(html) if tag in ("script", "img", "a", "iframe", "svg", "maction")] == []
        for fragment in ("<maction", "<script", "<a ", "<img", "<svg", "<iframe"):
            assert fragment not in html, (text, fragment)
        attributes = {name for _, found in tags(html) for name in found}
        assert not attributes & {"href", "xlink:href", "style", "mathcolor", "mathbackground", "src"}, text
        for math in formulas(html):  # what was markup in \text{…} is text, shown as written
            assert annotation(math) == latex


def test_raw_mathml_a_model_writes_is_not_on_the_allow_list():
    # Only the converter's MathML is let through: a model's own <math> (the classic mXSS vehicle) is dropped.
    payloads = [
        '<math><maction actiontype="statusline"><mtext>x</mtext><mtext>evil</mtext></maction></math>',
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
        '<math href="javascript:alert(1)"><mi xlink:href="javascript:alert(1)">x</mi></math>',
        "<math><annotation-xml encoding='text/html'><script>alert(1)</script></annotation-xml></math>",
    ]
    for payload in payloads:
        html = render_markdown(payload)
        assert "<math" not in html and "<maction" not in html and "<annotation-xml" not in html
        assert_inert(html)
        assert_math_inert(html)


def test_a_placeholder_cannot_be_forged_by_the_text():
    html = render_markdown("$x$ and \ue0000000000000000000:0\ue001 and \ue000abc:0\ue001")
    assert len(formulas(html)) == 1


def test_mathml_keeps_only_allow_listed_attributes():
    html = render_markdown(r"$\mathbb{R} \xrightarrow{f} \left( \frac{1}{2} \right) \overline{x} \, \boxed{5}$")
    names = set(re.findall(r"<[a-z]+((?:\s+[a-z:-]+=\"[^\"]*\")*)", html))
    attributes = {a for chunk in names for a in re.findall(r"([a-z:-]+)=", chunk)}
    allowed = set().union(*rendering.MATH_ATTRIBUTES.values())
    assert attributes <= allowed | {"encoding", "display"}
    assert '<menclose notation="box">' in html


# --- Cost: bounded and counted, never timed ----------------------------------------------------------------------


@pytest.fixture
def conversions(monkeypatch):
    """The formulas handed to latex2mathml: (source, display) pairs, in order."""
    calls: list[tuple[str, bool]] = []
    original = rendering._to_mathml

    def counting(tex: str, display: bool):
        calls.append((tex, display))
        return original(tex, display)

    monkeypatch.setattr(rendering, "_to_mathml", counting)
    return calls


@pytest.mark.parametrize(
    "latex",
    [
        "\\frac{" * 5000,  # far past the nesting cap
        "x^" * 50000,  # far past the length cap
        "{" * (MATH_MAX_DEPTH + 1) + "x" + "}" * (MATH_MAX_DEPTH + 1),
        "\\left(" * (MATH_MAX_DEPTH + 1) + "x" + "\\right)" * (MATH_MAX_DEPTH + 1),
        "a" * (MATH_MAX_CHARS + 1),
        # Macros expand exponentially in the text's length: never handed over.
        "\\newcommand{\\a}{xx}\\newcommand{\\b}{\\a\\a}\\newcommand{\\c}{\\b\\b}\\c",
        "\\def\\a{\\a\\a}\\a",
        "\\DeclareMathOperator{\\op}{op} \\op",
    ],
)
def test_formulas_past_the_caps_are_shown_as_source_without_conversion(latex, conversions):
    html = render_markdown(f"before ${latex}$ after")
    assert conversions == []
    assert "<math" not in html and '<code class="math-source">' in html and html.endswith("after</p>\n")


def test_a_formula_at_the_caps_is_converted_once():
    calls = []
    original = rendering._to_mathml
    rendering._to_mathml = lambda tex, display: calls.append(tex) or original(tex, display)
    try:
        nested = "{" * MATH_MAX_DEPTH + "x" + "}" * MATH_MAX_DEPTH
        html = render_markdown(f"${nested}$ and $" + "a" * MATH_MAX_CHARS + "$")
    finally:
        rendering._to_mathml = original
    assert calls == [nested, "a" * MATH_MAX_CHARS]
    assert len(formulas(html)) == 2


def test_latex2mathml_reads_at_most_the_texts_characters_and_each_distinct_formula_once(conversions):
    text = " ".join(f"$x_{{{i % 50}}}$ and \\(y^{i % 50}\\)" for i in range(400))
    render_markdown(text)
    assert sum(len(tex) for tex, _ in conversions) <= len(text)
    assert len(conversions) == len(set(conversions)) == 100  # repeated formulas come from the cache


def test_recursion_in_latex2mathml_is_caught_and_shown_as_source():
    html = render_markdown("$" + "\\sqrt" * 1500 + "x$")
    assert '<code class="math-source">$\\sqrt\\sqrt' in html


@pytest.mark.parametrize(
    "text",
    [
        "\\(" * 20000,  # unclosed openings: one scan for the closing, not one per opening
        "\\[" * 20000,
        "x\n" + "$$ a\n" * 5000,  # paragraph lines each tried as the start of display math
        "$$ a\n\n" * 5000,
        "- $$ a\n" * 5000,
        "x\n" + "\\begin{align}\n" * 5000,
        "$" + "\\$" * 20000,
    ],
)
def test_unclosed_delimiters_cost_linear_work(text, monkeypatch):
    # Count the characters the closing-delimiter searches read: linear in the text, whatever the openings.
    read = [0]
    scan = rendering._scan

    def counting_scan(src, needle, start):
        found = scan(src, needle, start)
        read[0] += (len(src) if found < 0 else found) - start
        return found

    monkeypatch.setattr(rendering, "_scan", counting_scan)
    stop_line = rendering._stop_line
    tables: list[str] = []

    def counting_stop_line(state, closing, line):
        if closing not in state.env.get("math_stops", {}):
            tables.append(closing)
        return stop_line(state, closing, line)

    monkeypatch.setattr(rendering, "_stop_line", counting_stop_line)
    render_markdown(text)
    assert read[0] <= 2 * len(text)
    assert len(tables) == len(set(tables)) <= 2  # each line table is built once per document and closing


def test_the_page_budget_counts_math_sources_as_markdown_and_mathml_as_html_bytes():
    text = " ".join(f"$x_{{{i}}}^{{{i}}}$" for i in range(100))
    budget = PageBudget(markdown_chars=10 * len(text), html_bytes=None)
    shown = budget.show(text)
    assert shown.markdown and budget.markdown_used == len(text)
    assert budget.html_used == len(shown.html.encode()) > 5 * len(text)  # MathML is much larger than its source

    # The byte cap still holds: a text whose MathML does not fit is shown as plain text within what is left.
    capped = PageBudget(markdown_chars=10 * len(text), html_bytes=3 * len(text))
    first = capped.show(text)
    assert not first.markdown and capped.html_used <= 3 * len(text)
    assert first.html.startswith('<pre class="plain-text">$x_{0}^{0}$')


def test_many_formulas_within_a_pages_budget_all_fit_the_byte_cap():
    budget = PageBudget(markdown_chars=5000, html_bytes=40_000)
    shown = [budget.show(f"Step {i}: $\\frac{{{i}}}{{{i + 1}}}$ and $$\\sum_{{k=1}}^{{{i}}} k$$") for i in range(200)]
    assert budget.html_used == sum(len(s.html.encode()) for s in shown) <= 40_000
    assert budget.markdown_used <= 5000
    assert any(s.markdown for s in shown) and any(not s.markdown for s in shown)


def test_a_note_is_plain_text_with_math():
    html = rendering.render_math_text("Wrong: *not* $x^2$ but \\(x^3\\)\n<b>sure</b> & it costs $5\n\n$$\n\\frac12\n$$")
    assert [annotation(m) for m in formulas(html)] == ["x^2", "x^3", "\\frac12"]
    assert "*not*" in html and "<em>" not in html  # no markdown but the math
    assert "&lt;b&gt;sure&lt;/b&gt; &amp; it costs $5" in html and "<br" in html  # HTML is text; line breaks kept
    assert_math_inert(html)
