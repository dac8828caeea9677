"""adapters.peft_patterns: the regular expressions of a peft config, matched as re.fullmatch would, in counted steps."""

from __future__ import annotations

import random
import re

import pytest

from adapters import peft_patterns
from adapters.peft_patterns import PatternRefused, PatternTooCostly, pattern_compile

UNSLOTH = (
    r"(?:.*?(?:vision|image|visual|patch|language|text).*?(?:self_attn|attention|attn|mlp|feed_forward|ffn|dense).*?"
    r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj).*?)|(?:\bmodel\.layers\.[\d]{1,}\.(?:self_attn|"
    r"attention|attn|mlp|feed_forward|ffn|dense)\.(?:(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)))"
)
# What real configs carry (peft's docs, unsloth's generated pattern) and the corners of the accepted subset.
PATTERNS = [
    r".*\.(q_proj|v_proj)$",
    r".*\.(q_proj|v_proj)",
    r"^model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj$",
    r".*decoder.*(SelfAttention|EncDecAttention).*(q|v)$",
    UNSLOTH,
    "all-linear",
    r"a{2,4}b?",
    r"[^a-c]+x",
    r"\bab\B.",
    r"\Aab\Z",
    r"a$",
    r"(?:ab)?c",
    r"(a|b|)c",
    r"(q|v)*",
    r"",
    r"[\w.]+",
    r"[\s\S]a",
    r"\d{3}",
    r"a.c",
    r"^$",
    r"\b",
    r"\B",
    r".*",
    r"a|^b",
    r"(?:a|b$)\n?",
    r"(?x) a  b # verbose",
]
NAMES = [
    "a",
    "ab",
    "abc",
    "aab",
    "model.layers.0.self_attn.q_proj",
    "model.layers.12.mlp.down_proj",
    "model.language_model.layers.3.self_attn.v_proj",
    "encoder.block.0.layer.0.SelfAttention.q",
    "decoder.block.1.layer.1.EncDecAttention.v",
]


def random_names(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("ab.cqv_1x -A") for _ in range(rng.randint(1, 8))) for _ in range(count)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_pattern_matches_exactly_what_re_fullmatch_matches(pattern):
    names = NAMES + random_names(1500)
    compiled = pattern_compile(pattern)
    answers = compiled.fullmatch_all(names, max_steps=10**9)
    assert answers == {name: re.fullmatch(pattern, name) is not None for name in names}
    assert all(pattern_compile(pattern).fullmatch(name, max_steps=10**9) == answers[name] for name in NAMES)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("a*" * 8 + "!", "a" * 1000),  # re: about 1000**8 / 8! steps
        (".*" * 12 + "x", "b" * 800),
        (r".*a.{40}", "ab" * 500),  # a DFA of 2**40 states
        ("(?:a|aa|aaa)?" * 100 + "!", "a" * 1000),
        (r"[\w.]*[\w.]*[\w.]*\.lora", "model.layers." * 60),
    ],
)
def test_patterns_that_make_re_backtrack_for_years_are_matched_in_one_step_a_character(pattern, text):
    compiled = pattern_compile(pattern)
    assert compiled.fullmatch(text, max_steps=10**9) is False  # none matches (re would take years to say so)
    assert compiled.steps == len(text) + 1


@pytest.mark.parametrize("name", ["", "a\n", "\n", "café", "a\x00b", "tab\tname"])
def test_only_printable_ascii_names_are_matched(name):
    # On those, RE2's ASCII classes, its $ and its \B agree with re's; module names are printable ASCII.
    with pytest.raises(ValueError, match="printable ASCII"):
        pattern_compile(".*").fullmatch(name, max_steps=10**9)


def test_matching_stops_at_its_budget():
    compiled = pattern_compile(r".*a.{40}")
    with pytest.raises(PatternTooCostly):
        compiled.fullmatch_all([f"{index:b}" * 100 for index in range(1000)], max_steps=5000)
    assert compiled.steps == 5001


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a+)+b", peft_patterns.REPEATED_GROUP),
        ("(ab|c)*", peft_patterns.REPEATED_GROUP),
        ("(?:a?){2,}", peft_patterns.REPEATED_GROUP),
        ("(", "missing ), unterminated subpattern"),
        ("a{1,99999999999}", "the repetition number is too large"),
        ("[z-a]", "bad character range"),
        ("(?i)q_proj", "flags"),
        ("(?s:.)", "flags"),
        (r"(a)\1", "a backreference"),
        ("(?=q)q_proj", "a lookahead or lookbehind"),
        ("(?<!x)q", "a negative lookahead or lookbehind"),
        ("(a)?(?(1)b|c)", "a conditional group"),
        ("(?>a)", "an atomic group"),
        ("a*+", "a possessive quantifier"),
        ("x" * (peft_patterns.PATTERN_MAX_CHARS + 1), "characters long"),
        ("a{4000}b{1000}", peft_patterns.TOO_MANY_STATES),
        ("(" * 40 + "a" + ")" * 40, peft_patterns.TOO_NESTED),
    ],
)
def test_patterns_outside_the_regular_subset_are_refused_with_the_reason(pattern, reason):
    with pytest.raises(PatternRefused) as refused:
        pattern_compile(pattern)
    assert reason in str(refused.value)
