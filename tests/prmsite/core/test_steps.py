"""Splitting a response into steps loses nothing, whatever the response looks like."""

from __future__ import annotations

import random

import pytest

from prmsite.core.steps import compile_pattern, split_steps

LIAR_PATTERN = "</?u>|Step|```"


def check_lossless(text: str, pattern: str) -> list[str]:
    steps = split_steps(text, pattern)
    assert "".join(steps) == text
    return steps


def test_each_step_starts_at_its_delimiter():
    text = "Intro. Step 1: read. Step 2: think. Step 3: answer."
    assert check_lossless(text, "Step") == ["Intro. ", "Step 1: read. ", "Step 2: think. ", "Step 3: answer."]


def test_no_delimiter_gives_one_step():
    assert check_lossless("The sky is blue, so: True.", "Step") == ["The sky is blue, so: True."]


def test_delimiter_at_the_start_opens_the_first_step():
    assert check_lossless("Step 1: a. Step 2: b.", "Step") == ["Step 1: a. ", "Step 2: b."]


def test_delimiter_at_the_end_stays_with_the_last_step():
    assert check_lossless("Step 1: a.\n```", "Step|```") == ["Step 1: a.\n```"]


def test_repeated_delimiters_open_one_step_together():
    text = "<u>Step 1: Understanding</u>\nThe claim.\n<u>Step 2: Verdict</u>"
    steps = check_lossless(text, LIAR_PATTERN)
    assert steps[0] == "<u>Step 1: Understanding"
    assert all(s.strip() not in {"<u>", "</u>", "Step", "```"} for s in steps)


def test_only_delimiters_and_white_space_is_one_step():
    assert check_lossless("<u></u>\n```", LIAR_PATTERN) == ["<u></u>\n```"]


def test_empty_response_has_no_steps():
    assert check_lossless("", LIAR_PATTERN) == []


def test_unicode_text_and_delimiters():
    text = "Schritt 1: Größe prüfen 🌍. Schritt 2: 答案是真的. Schritt 3: ✓"
    expected = ["Schritt 1: Größe prüfen 🌍. ", "Schritt 2: 答案是真的. ", "Schritt 3: ✓"]
    assert check_lossless(text, "Schritt") == expected


def test_a_pattern_that_matches_the_empty_string_does_not_loop_or_split_everywhere():
    assert check_lossless("abc Step def", "x*") == ["abc Step def"]


def test_a_pattern_that_does_not_compile_is_a_clear_error():
    with pytest.raises(ValueError, match="does not compile"):
        split_steps("text", "Step(")
    with pytest.raises(ValueError, match="does not compile"):
        compile_pattern("[unclosed")


def test_random_texts_round_trip():
    rng = random.Random(7)
    alphabet = ["Step", "<u>", "</u>", "```", " ", "\n", "a", "é", "字", "1", ":"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        steps = check_lossless(text, LIAR_PATTERN)
        assert all(step for step in steps)
