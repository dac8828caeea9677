"""The words the forest page's search reads (SQLite's index and every query): one rule, pure."""

from prmsite.core.search_words import SEARCH_TEXT_CHARS, SEARCH_WORD_CHARS, search_words, search_words_json


def test_words_are_lowercased_letter_and_digit_runs_each_once_in_order():
    assert search_words("Step 1: The cat, the CAT; x^2 = 3.14 — naïve_word") == [
        "step",
        "1",
        "the",
        "cat",
        "x",
        "2",
        "3",
        "14",
        "naïve_word",
    ]
    assert search_words("") == [] and search_words(None) == [] and search_words("?! -- ...") == []


def test_a_long_word_is_cut_and_only_the_texts_start_is_read():
    assert search_words("a" * (SEARCH_WORD_CHARS + 10)) == ["a" * SEARCH_WORD_CHARS]
    text = "x " * (SEARCH_TEXT_CHARS // 2) + "late"
    assert "late" not in search_words(text)
    assert search_words(text[: SEARCH_TEXT_CHARS - 10] + " early") == ["x", "early"]


def test_the_json_form_is_what_sqlites_triggers_read():
    assert search_words_json('Élan "quoted"') == '["élan", "quoted"]'
