"""The one correctness rule: each answer kind on a table of equivalent and different pairs, the extraction of the final
answer, grouping by equivalence (bounded, counted), and hostile input answered by a clear verdict."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from prmsite.core import grading
from prmsite.core.domain import rollout_is_correct
from prmsite.core.errors import ConfigError
from prmsite.core.grading import (
    ANSWER_MAX_CHARS,
    GRADE_TIME_BUDGET_ENV,
    AnswerSpec,
    Verdict,
    answer_classes,
    equivalent,
    extract_answer,
    grade,
)

LABEL = AnswerSpec("label")
NUMBER = AnswerSpec("number")
MATH = AnswerSpec("math")
TEXT = AnswerSpec("text")

# A power tower sympy tries to evaluate: it never finishes within any budget.
HUGE_EXPONENT = "2^{2^{2^{2^{100}}}}"


@pytest.fixture
def short_budget(monkeypatch):
    """A short math-verify budget, so that the hostile cases time out quickly."""
    monkeypatch.setenv(GRADE_TIME_BUDGET_ENV, "0.5")
    grading.clear_cache()
    yield
    grading.clear_cache()


# --------------------------------------------------------------------------------------------------------------------
# The spec


def test_spec_defaults_to_integer_labels():
    assert AnswerSpec.from_settings(None) == AnswerSpec("label", 1e-6)
    assert AnswerSpec.from_settings({}) == LABEL
    assert AnswerSpec.from_settings({"answer_kind": None, "answer_tolerance": None}) == LABEL


def test_spec_round_trips_through_settings():
    spec = AnswerSpec.from_settings({"answer_kind": "number", "answer_tolerance": 0.01, "other": 1})
    assert spec == AnswerSpec("number", 0.01)
    assert spec.as_settings() == {"answer_kind": "number", "answer_tolerance": 0.01}
    assert AnswerSpec.from_settings(spec.as_settings()) == spec


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"answer_kind": "latex"}, "answer_kind"),
        ({"answer_kind": 3}, "answer_kind"),
        ({"answer_tolerance": "small"}, "answer_tolerance"),
        ({"answer_tolerance": -0.1}, "answer_tolerance"),
        ({"answer_tolerance": True}, "answer_tolerance"),
        ({"answer_tolerance": float("nan")}, "answer_tolerance"),
        ({"answer_tolerance": 2}, "answer_tolerance"),
        (["math"], "answer_kind"),
    ],
)
def test_bad_settings_name_their_key(settings, key):
    with pytest.raises(ConfigError, match=key):
        AnswerSpec.from_settings(settings)


# --------------------------------------------------------------------------------------------------------------------
# label: today's rule, unchanged


@pytest.mark.parametrize(
    ("answer", "reference", "verdict"),
    [
        ("7", "7", Verdict(True)),
        (" 7 ", "7", Verdict(True)),
        ("1,000", "1000", Verdict(True)),
        ("-2", "-2", Verdict(True)),
        ("7", "8", Verdict(False)),
        ("seven", "7", Verdict(False, "cannot parse the answer as an integer")),
        ("7.0", "7", Verdict(False, "cannot parse the answer as an integer")),
        ("7", "x", Verdict(False, "cannot parse the reference answer as an integer")),
        (None, "7", Verdict(False, "no answer")),
        ("  ", "7", Verdict(False, "no answer")),
        ("7", None, Verdict(False, "no reference answer")),
    ],
)
def test_label_kind(answer, reference, verdict):
    assert grade(answer, reference, LABEL) == verdict


def test_numbers_are_read_as_their_text():
    assert grade(7, 7, LABEL) == Verdict(True)
    assert grade("7", 8, LABEL) == Verdict(False)
    assert grade(0.5, "1/2", NUMBER) == Verdict(True)
    assert grade(True, "1", LABEL) == Verdict(False, "the answer is not text")


def test_label_kind_is_the_domain_rule():
    for prediction in range(-3, 4):
        for truth in range(-3, 4):
            assert grade(str(prediction), str(truth), LABEL).correct == rollout_is_correct(prediction, truth)


# --------------------------------------------------------------------------------------------------------------------
# number


NUMBER_EQUAL = [
    ("1,000", "1000"),
    ("1\\,000", "1000"),
    ("1{,}000", "1000"),
    ("3/4", "0.75"),
    ("\\frac{3}{4}", "0.75"),
    ("\\dfrac34", ".75"),
    ("-\\frac{1}{2}", "-0.5"),
    ("\\frac{-1}{2}", "-0.5"),
    ("50%", "50"),
    ("50\\%", "50"),
    ("5 \\text{ cm}", "5"),
    ("5 cm", "5"),
    ("30^\\circ", "30"),
    ("$1,234.50", "1234.5"),
    ("x = 3", "3"),
    ("1e3", "1000"),
    ("42.", "42"),
    ("\\boxed{7}", "7"),
    ("$7$", "7"),
    ("\\(7\\)", "7"),
    ("\\$5", "5"),
    ("30\u00b0", "30"),
    ("1.0000001", "1"),
    ("0", "1e-9"),
]
NUMBER_DIFFERENT = [("1.01", "1"), ("1,000", "1"), ("-3", "3"), ("0.5", "50%")]
NUMBER_UNPARSABLE = ["(1, 2)", "1,2", "1,00", "inf", "nan", "1e400", "\\sqrt{2}", "1 000", "five"]


@pytest.mark.parametrize(("answer", "reference"), NUMBER_EQUAL)
def test_number_kind_equal(answer, reference):
    assert grade(answer, reference, NUMBER) == Verdict(True)
    assert equivalent(reference, answer, NUMBER)


@pytest.mark.parametrize(("answer", "reference"), NUMBER_DIFFERENT)
def test_number_kind_different(answer, reference):
    assert grade(answer, reference, NUMBER) == Verdict(False)


@pytest.mark.parametrize("answer", NUMBER_UNPARSABLE)
def test_number_kind_names_what_it_cannot_parse(answer):
    assert grade(answer, "1", NUMBER) == Verdict(False, "cannot parse the answer as a number")
    assert grade("1", answer, NUMBER) == Verdict(False, "cannot parse the reference answer as a number")


def test_number_tolerance_is_relative_and_absolute_near_zero():
    loose = AnswerSpec("number", tolerance=0.01)
    assert grade("1005", "1000", loose).correct
    assert not grade("1011", "1000", loose).correct
    assert grade("0.009", "0", loose).correct
    assert not grade("1005", "1000", NUMBER).correct
    exact = AnswerSpec("number", tolerance=0)
    assert grade("0.75", "3/4", exact).correct
    assert not grade("1.0000001", "1", exact).correct


# --------------------------------------------------------------------------------------------------------------------
# text


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("Paris.", "paris", True),
        ("  New   York ", "new york", True),
        ('"Yes"', "yes", True),
        ("\\text{Evelyn}", "Evelyn", True),
        ("$\\textbf{Evelyn}$", "evelyn", True),
        ("\uff21\uff22\uff23", "abc", True),  # full-width letters
        ("Straße", "STRASSE", True),
        ("Paris", "London", False),
        ("-5", "5", False),
    ],
)
def test_text_kind(answer, reference, correct):
    assert grade(answer, reference, TEXT) == Verdict(correct)


def test_text_kind_blank_after_normalisation_is_no_answer():
    assert grade("...", "x", TEXT) == Verdict(False, "no answer")
    assert grade("x", '""', TEXT) == Verdict(False, "no reference answer")


# --------------------------------------------------------------------------------------------------------------------
# math


MATH_EQUAL = [
    ("\\frac{5}{14}", "5/14"),
    ("\\dfrac{3}{4}", "0.75"),
    ("0.5", "\\frac12"),
    ("1,000", "1000"),
    ("1\\,000", "1000"),
    ("(1, 2)", "(1,2)"),
    ("[0, 1)", "[0,1)"),
    ("(3, \\frac{\\pi}{2})", "(3, \\pi/2)"),
    ("2^{n-1}", "\\frac{2^n}{2}"),
    ("\\boxed{\\frac{1}{2}}", "0.5"),
    ("$\\frac{1}{2}$", "1/2"),
    ("50\\%", "50"),
    ("5 \\text{ cm}", "5"),
    ("30^\\circ", "30"),
    ("x = 3", "3"),
    ("\\{1, 2\\}", "\\{2, 1\\}"),
    ("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2"),
    ("\\left(1, 2\\right)", "(1,2)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\text{(B)}", "B"),
    ("2^{100}", "1267650600228229401496703205376"),
]
MATH_DIFFERENT = [
    ("5/14", "\\frac{5}{13}"),
    ("[0, 1)", "[0, 1]"),
    ("(1, 2)", "(2, 1)"),
    ("1,000", "1"),
    ("10", "1,0"),
    ("(3, \\frac{\\pi}{2})", "(3, \\frac{\\pi}{3})"),
    ("2^{n-1}", "2^{n+1}"),
    ("-\\infty", "\\infty"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("B", "C"),
    ("3.14", "\\pi"),
    ("0.33", "\\frac{1}{3}"),
]


@pytest.mark.parametrize(("answer", "reference"), MATH_EQUAL)
def test_math_kind_equal(answer, reference):
    assert grade(answer, reference, MATH) == Verdict(True)


@pytest.mark.parametrize(("answer", "reference"), MATH_DIFFERENT)
def test_math_kind_different(answer, reference):
    assert grade(answer, reference, MATH) == Verdict(False)


def test_math_identical_strings_and_plain_numbers_skip_math_verify():
    grading.clear_cache()
    before = grading.math_verify_calls()
    assert grade("\\dfrac{1}{2}", "\\frac{1}{2}", MATH).correct
    assert grade("1,000", "1000", MATH).correct
    assert not grade("7", "8", MATH).correct
    assert grading.math_verify_calls() == before


def test_math_verdicts_are_cached():
    grading.clear_cache()
    before = grading.math_verify_calls()
    for _ in range(5):
        assert grade("x + x", "2x", MATH).correct
    assert grading.math_verify_calls() == before + 1


def test_math_unparsable_reference_is_a_reason():
    assert grade("1", "\\frac{", MATH) == Verdict(False, "math-verify cannot parse the reference answer")


def test_equivalent_is_symmetric_for_math():
    assert equivalent("x = 3", "3", MATH)
    assert equivalent("3", "x = 3", MATH)
    assert not equivalent("(1, 2)", "(2, 1)", MATH)


# --------------------------------------------------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        ("So the answer is $\\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
        ("First \\boxed{1}, then \\boxed{2}.", "2"),
        ("The answer is \\boxed 5.", "5"),
        ("\\boxed{ 7 }", "7"),
        ("\\fbox{7}", "7"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\left[0, 1\\right)}", "\\left[0, 1\\right)"),
        ("\\boxed{3} and then a truncated \\boxed{4", "3"),
        ("\\boxed{3} and an empty \\boxed{}", "3"),
        ("no box here", None),
        ("\\boxedx{5}", None),
        ("", None),
    ],
)
def test_extract_last_boxed_for_math(response, answer):
    assert extract_answer(response, MATH) == answer


def test_extract_by_pattern():
    text = "Answer: 1\nmore thinking\nAnswer: 2\n"
    assert extract_answer(text, LABEL, r"Answer:\s*(\S+)") == "2"
    assert extract_answer(text, LABEL, r"Answer:\s*\S+") == "Answer: 2"
    assert extract_answer(text, LABEL, r"(Final )?Answer:\s*(?P<answer>\S+)") == "2"
    assert extract_answer(text, LABEL, r"(x)|Answer:\s*(\d)") == "2"


def test_extract_without_a_match():
    assert extract_answer("The answer is 4.", LABEL, r"Answer:\s*(\S+)") is None
    assert extract_answer("The answer is \\boxed{4}.", LABEL) is None
    assert extract_answer("The answer is \\boxed{4}.", MATH, r"Answer:\s*(\S+)") == "4"


def test_extract_with_a_bad_pattern():
    with pytest.raises(ConfigError, match="not a regular expression"):
        extract_answer("x", LABEL, "(unclosed")


# --------------------------------------------------------------------------------------------------------------------
# grouping


def test_answer_classes_per_kind():
    math = ["\\frac12", "0.5", "1/2", None, "  ", "2", "x", "\\boxed{2}", "$x$"]
    assert answer_classes(math, MATH) == [0, 0, 0, None, None, 1, 2, 1, 2]
    assert answer_classes(["1", "1,0", "10", "x", "x ", None], LABEL) == [0, 1, 1, 2, 2, None]
    assert answer_classes(["0.5", "1/2", "0.50000001", "3", "three"], NUMBER) == [0, 0, 0, 1, 2]
    assert answer_classes(["Paris", "paris.", "London"], TEXT) == [0, 0, 1]
    assert answer_classes([], MATH) == []


def test_answer_classes_groups_identical_strings_without_math_verify():
    grading.clear_cache()
    before = grading.math_verify_calls()
    assert answer_classes(["x + 1"] * 50 + ["x+1"] * 50, MATH) == [0] * 100
    assert grading.math_verify_calls() == before


def test_answer_classes_compares_representatives_by_math_verify():
    grading.clear_cache()
    before = grading.math_verify_calls()
    assert answer_classes(["x + 1", "1 + x", "x + 2", "2 + x"], MATH) == [0, 0, 1, 1]
    # 1 + x against x + 1; x + 2 against x + 1; 2 + x against x + 1, then x + 2.
    assert grading.math_verify_calls() == before + 4


def test_answer_classes_bounds_math_verify_calls(monkeypatch):
    monkeypatch.setattr(grading, "MAX_CLASS_COMPARISONS", 3)
    grading.clear_cache()
    before = grading.math_verify_calls()
    answers = [f"y + {i}" for i in range(8)] + ["1 + y"]
    classes = answer_classes(answers, MATH)
    # Unbounded, 28 comparisons would tell the eight classes apart, and a 29th would put "1 + y" with "y + 1".
    assert grading.math_verify_calls() == before + 3
    assert classes == list(range(9))


# --------------------------------------------------------------------------------------------------------------------
# hostile input: a clear verdict, never an exception, never an unbounded wait


TEN_MB = "1" * 10_000_000


@pytest.mark.parametrize("spec", [LABEL, NUMBER, MATH, TEXT], ids=lambda spec: spec.kind)
@pytest.mark.parametrize(
    ("answer", "reference", "reason"),
    [
        (TEN_MB, "1", f"answer longer than {ANSWER_MAX_CHARS} characters"),
        ("1", TEN_MB, f"reference answer longer than {ANSWER_MAX_CHARS} characters"),
        ("{" * 5000, "1", f"answer longer than {ANSWER_MAX_CHARS} characters"),
        ("1\ud800", "1", "the answer contains a NUL character or a lone surrogate"),
        ("1\x002", "12", "the answer contains a NUL character or a lone surrogate"),
        ("1", "\udfff", "the reference answer contains a NUL character or a lone surrogate"),
        (b"3", "3", "the answer is not text"),
        ("3", ["3"], "the reference answer is not text"),
    ],
)
def test_hostile_input_is_refused_before_parsing(spec, answer, reference, reason):
    assert grade(answer, reference, spec) == Verdict(False, reason)
    assert not equivalent(answer, reference, spec)


def test_deep_nesting_is_refused_before_parsing():
    grading.clear_cache()
    before = grading.math_verify_calls()
    nested = "(" * 300 + "1" + ")" * 300
    assert grade(nested, "1", MATH) == Verdict(False, "answer nested more than 50 levels deep")
    assert grade("1", "{" * 60 + "}" * 60, MATH) == Verdict(False, "reference answer nested more than 50 levels deep")
    assert grading.math_verify_calls() == before


def test_a_huge_exponent_times_out_and_the_worker_restarts(short_budget, monkeypatch):
    assert grade("x + 1", "1 + x", MATH) == Verdict(True)  # the worker is up
    starts = grading.worker_starts()
    assert grade(HUGE_EXPONENT, "1", MATH) == Verdict(False, "math-verify timed out after 0.5 s")
    calls = grading.math_verify_calls()
    # The same hostile pair again is answered from the cache, without another wait.
    assert grade(HUGE_EXPONENT, "1", MATH) == Verdict(False, "math-verify timed out after 0.5 s")
    assert grading.math_verify_calls() == calls
    # The killed worker is replaced, and grades as before (with room for a loaded machine).
    monkeypatch.setenv(GRADE_TIME_BUDGET_ENV, "30")
    assert grade("2x", "x + x", MATH) == Verdict(True)
    assert not grade("2x", "x + 2", MATH).correct
    assert grading.worker_starts() == starts + 1


def test_answer_classes_stops_asking_math_verify_after_timeouts(short_budget, monkeypatch):
    hostile = [f"{base}^{{{base}^{{{base}^{{{base}^{{100}}}}}}}}" for base in (2, 3, 5)]
    before = grading.math_verify_calls()
    classes = answer_classes([*hostile, "z + 1", "1 + z"], MATH)
    # 3 against 2 and 5 against 2 time out; after MAX_CLASS_TIMEOUTS, answers compare as strings only.
    assert grading.math_verify_calls() == before + grading.MAX_CLASS_TIMEOUTS
    assert classes == [0, 1, 2, 3, 4]
    monkeypatch.setenv(GRADE_TIME_BUDGET_ENV, "30")
    assert grade("z + 1", "1 + z", MATH) == Verdict(True)


def test_the_worker_stops_and_starts_again():
    assert grade("x * x", "x^2", MATH) == Verdict(True)
    grading.shutdown_worker()
    starts = grading.worker_starts()
    grading.clear_cache()
    assert grade("x * x", "x^2", MATH) == Verdict(True)
    assert grading.worker_starts() == starts + 1


def test_time_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv(GRADE_TIME_BUDGET_ENV, raising=False)
    assert grading.grade_time_budget() == grading.GRADE_TIME_BUDGET_S
    monkeypatch.setenv(GRADE_TIME_BUDGET_ENV, "0.25")
    assert grading.grade_time_budget() == 0.25
    for bad in ("soon", "-1", "0", "nan"):
        monkeypatch.setenv(GRADE_TIME_BUDGET_ENV, bad)
        assert grading.grade_time_budget() == grading.GRADE_TIME_BUDGET_S


def test_math_unparsable_answer_is_a_reason():
    assert grade("\\frac{", "\\frac{1}{2}", MATH) == Verdict(False, "math-verify cannot parse the answer")
    assert grade("I do not know", "\\frac{1}{2}", MATH) == Verdict(False)  # read as a product of symbols


def test_concurrent_threads_share_the_worker():
    grading.clear_cache()
    pairs = [(f"(x + {i})^2", f"x^2 + {2 * i}x + {i * i}") for i in range(1, 13)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda pair: grade(*pair, MATH), pairs))
    assert verdicts == [Verdict(True)] * len(pairs)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_starts_its_own_worker():
    assert grade("x * x", "x^2", MATH) == Verdict(True)  # the parent's worker is up
    grading.clear_cache()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through its exit status)
        ok = grade("x + x", "2x", MATH) == Verdict(True) and grading.worker_starts() >= 1
        grading.shutdown_worker()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    starts = grading.worker_starts()
    assert grade("y + y", "2y", MATH) == Verdict(True)  # the parent's worker was left alone
    assert grading.worker_starts() == starts


def test_extraction_of_a_huge_response_with_many_unclosed_boxes():
    response = "\\boxed{42} " + "\\boxed{" * 200_000
    assert extract_answer(response, MATH) is None  # only the last MAX_BOXES_TRIED boxes are tried
    assert extract_answer("\\boxed{42} " + "\\boxed{" * 3 + " x" * 1_000_000, MATH) == "42"


def test_a_worker_that_cannot_start_is_a_reason_and_is_retried_later(monkeypatch):
    grading.shutdown_worker()
    grading.clear_cache()
    monkeypatch.setattr(grading, "_WORKER_CODE", "raise SystemExit(3)")
    starts = grading.worker_starts()
    unavailable = Verdict(False, "math-verify is unavailable: it exited with code 3")
    assert grade("x + 1", "1 + x", MATH) == unavailable
    assert grade("x + 2", "2 + x", MATH) == unavailable  # answered at once, without another start
    assert grading.worker_starts() == starts + 1
    assert grade("7", "7", MATH) == Verdict(True)  # the fast paths need no worker
    monkeypatch.undo()
    grading.shutdown_worker()  # forgets the failure: the next answer tries again
    assert grade("x + 1", "1 + x", MATH) == Verdict(True)
    assert grading.worker_starts() == starts + 2
