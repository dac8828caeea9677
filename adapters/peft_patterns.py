"""The regular expressions of a peft config, checked and matched in bounded work. Pure: no Django, no peft.

peft reads a string ``target_modules`` (and ``exclude_modules``), the entries of ``modules_to_save`` and
``layers_pattern`` and the keys of ``rank_pattern``/``alpha_pattern`` as Python regular expressions, and matches them
with ``re``, a backtracking engine: ``(a+)+b`` against ``"a" * 40 + "!"`` takes about 2**40 steps, holding the GIL
all along. An upload chooses both the pattern and the tensor names the server checks it against, so the server never
hands an uploaded pattern to ``re``:

- ``pattern_compile`` parses the pattern with Python's own parser (so it means exactly what it means to peft) and
  accepts only the regular subset that real configs use: literals, ``.``, character classes, groups, alternation, the
  anchors ``^ $ \\A \\Z \\b \\B``, and quantifiers on one character (``?`` may also follow a group). Refused:
  backreferences, lookarounds, conditionals, atomic groups, possessive quantifiers, flags, and a repeated group
  (``(a+)+``, ``(ab|c)*``), the shape that makes ``re`` exponential and would hang peft wherever the adapter is
  loaded. From the same parse it writes the pattern in RE2's syntax, so both engines read one parse.
- ``PeftPattern.fullmatch_all`` matches with RE2 (google-re2), an automaton engine whose time is linear in the text,
  whatever the pattern, and whose memory is bounded (``RE2_MAX_MEM``). On the texts it takes (printable ASCII, as
  module names are) and the subset above, RE2 answers what ``re.fullmatch`` answers: RE2's ``\\w``, ``\\d``, ``\\s``
  and ``\\b`` are ASCII, and ``$`` differs from Python's only before a final newline. Every character matched counts
  as a step (``steps``) against a budget: past it, ``PatternTooCostly``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from re import _constants as sre  # Python's own regex parser and its opcodes (public as sre_parse until 3.11)
from re import _parser as sre_parse

import re2

# Longest pattern accepted: real ones are a few hundred characters (unsloth's generated pattern is about 400).
PATTERN_MAX_CHARS = 4096
# Most NFA states a pattern may compile to (a counted repeat such as \d{1,3} counts each copy).
PATTERN_MAX_STATES = 4096
# Deepest nesting of groups and alternations.
PATTERN_MAX_DEPTH = 32
# Memory RE2 may use for one compiled pattern (its program and its DFA cache), in bytes.
RE2_MAX_MEM = 8 << 20

TOO_LONG = "it is {length} characters long, more than the {limit} accepted"
NOT_A_REGEX = "Python cannot compile it ({error})"
NOT_A_MODULE_NAME = "{name!r} is not a module name: one or more printable ASCII characters"
TOO_NESTED = f"groups are nested more than {PATTERN_MAX_DEPTH} deep"
TOO_MANY_STATES = f"it expands to more than {PATTERN_MAX_STATES} states (counted repeats count each copy)"
REPEATED_GROUP = (
    "a quantifier other than ? follows a group: repeated groups such as (a+)+ or (ab|c)* make Python's regex engine "
    "take exponential time; quantify single characters only"
)
UNSUPPORTED = "it uses {what}, which an adapter config has no need of"
FLAGS = "it sets flags ({flags}); write the pattern without (?...) flags"
# What each refused construct is, in the words of the refusal.
_UNSUPPORTED_OPS = {
    sre.GROUPREF: "a backreference",
    sre.GROUPREF_EXISTS: "a conditional group",
    sre.ASSERT: "a lookahead or lookbehind",
    sre.ASSERT_NOT: "a negative lookahead or lookbehind",
    sre.ATOMIC_GROUP: "an atomic group",
    sre.POSSESSIVE_REPEAT: "a possessive quantifier",
}
_ALLOWED_FLAGS = sre.SRE_FLAG_UNICODE | sre.SRE_FLAG_VERBOSE  # the default of a str pattern; verbose only parses
_SINGLE_CHARACTER = frozenset({sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN})
# Python's anchors in RE2's syntax. The texts matched are printable ASCII (no newline), so Python's ``$`` (end, or
# before a final newline) is RE2's ``$`` (end), and ``\\b`` sees the same ASCII word characters in both.
_ANCHORS = {
    sre.AT_BEGINNING: "^",
    sre.AT_BEGINNING_STRING: r"\A",
    sre.AT_END: "$",
    sre.AT_END_STRING: r"\z",
    sre.AT_BOUNDARY: r"\b",
    sre.AT_NON_BOUNDARY: r"\B",
}
# A character class's categories: on printable ASCII, Python's Unicode classes and RE2's ASCII ones agree.
_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}


class PatternRefused(ValueError):
    """The pattern is not a regular expression this module accepts; the message says why, in a phrase."""


class PatternTooCostly(RuntimeError):
    """Matching went past its step budget."""


_MODULE_NAME = re.compile(r"[\x20-\x7e]+")


@dataclass
class PeftPattern:
    """A checked and compiled pattern (see the module docstring). ``steps`` counts the work of every match so far:
    one per character matched, since RE2's time is linear in the text."""

    pattern: str
    compiled: re2._Regexp = field(repr=False)
    steps: int = 0

    def fullmatch_all(self, texts: Iterable[str], *, max_steps: int) -> dict[str, bool]:
        """Whether ``re.fullmatch(pattern, text)`` would match, for each distinct text (printable ASCII, not
        empty, else ``ValueError``); ``PatternTooCostly`` once ``steps`` would pass ``max_steps``, before that text
        is matched."""
        answers: dict[str, bool] = {}
        for text in set(texts):
            if not _MODULE_NAME.fullmatch(text):
                raise ValueError(NOT_A_MODULE_NAME.format(name=text[:120]))
            cost = len(text) + 1
            if self.steps + cost > max_steps:
                self.steps = max_steps + 1
                raise PatternTooCostly(f"more than {max_steps} steps")
            self.steps += cost
            answers[text] = self.compiled.fullmatch(text) is not None
        return answers

    def fullmatch(self, text: str, *, max_steps: int) -> bool:
        """``re.fullmatch(pattern, text) is not None``, in ``len(text) + 1`` steps."""
        return self.fullmatch_all([text], max_steps=max_steps)[text]


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.max_mem = RE2_MAX_MEM
    options.log_errors = False  # a refused pattern is our answer to give, not a line on the server's stderr
    return options


def pattern_compile(pattern: str) -> PeftPattern:
    """``pattern`` checked and compiled for ``PeftPattern.fullmatch_all``; ``PatternRefused`` says why a pattern is
    refused: too long, not a Python regular expression, or outside the subset the module docstring describes."""
    if len(pattern) > PATTERN_MAX_CHARS:
        raise PatternRefused(TOO_LONG.format(length=len(pattern), limit=PATTERN_MAX_CHARS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on "[[": the pattern still means what it means to re
            parsed = sre_parse.parse(pattern)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise PatternRefused(NOT_A_REGEX.format(error=exc)) from exc
    if parsed.state.flags & ~_ALLOWED_FLAGS:
        raise PatternRefused(FLAGS.format(flags=re.RegexFlag(parsed.state.flags & ~_ALLOWED_FLAGS)))
    source = _Translator().sequence(list(parsed), depth=0)
    try:
        compiled = re2.compile(source, _re2_options())
    except re2.error as exc:
        raise PatternRefused(NOT_A_REGEX.format(error=exc)) from exc
    return PeftPattern(pattern=pattern, compiled=compiled)


class _Translator:
    """Walks a parsed pattern, refuses what lies outside the subset, and writes the same pattern in RE2's syntax (so
    that both engines read one parse, not one source each: Python's ``\\Z`` is RE2's ``\\z``, for one). Counts the
    states an automaton of it would have (a counted repeat counts each copy), so that its size is bounded before RE2
    sees it."""

    def __init__(self) -> None:
        self.states = 0

    def add(self, count: int = 1) -> None:
        self.states += count
        if self.states > PATTERN_MAX_STATES:
            raise PatternRefused(TOO_MANY_STATES)

    def sequence(self, items: list, *, depth: int) -> str:
        if depth > PATTERN_MAX_DEPTH:
            raise PatternRefused(TOO_NESTED)
        return "".join(self.item(op, argument, depth=depth) for op, argument in items)

    def item(self, op, argument, *, depth: int) -> str:
        if op in _SINGLE_CHARACTER:
            self.add()
            return _character(op, argument)
        if op == sre.SUBPATTERN:
            _group, add_flags, del_flags, body = argument
            if add_flags or del_flags:
                raise PatternRefused(FLAGS.format(flags=re.RegexFlag(add_flags | del_flags)))
            return f"(?:{self.sequence(list(body), depth=depth + 1)})"
        if op == sre.BRANCH:
            _none, alternatives = argument
            self.add()
            return "(?:" + "|".join(self.sequence(list(alt), depth=depth + 1) for alt in alternatives) + ")"
        if op == sre.AT:
            if argument not in _ANCHORS:
                raise PatternRefused(UNSUPPORTED.format(what=f"the anchor {argument}"))
            self.add()
            return _ANCHORS[argument]
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # greedy or lazy: the same answer to "does it match at all"
            return self.repeat(*argument, depth=depth)
        raise PatternRefused(UNSUPPORTED.format(what=_UNSUPPORTED_OPS.get(op, str(op).lower())))

    def repeat(self, low: int, high: int, body, *, depth: int) -> str:
        items = list(body)
        while len(items) == 1 and items[0][0] == sre.SUBPATTERN and not any(items[0][1][1:3]):
            items = list(items[0][1][3])  # (?:x)+ is x+
        single = len(items) == 1 and items[0][0] in _SINGLE_CHARACTER
        if high > 1 and not single:
            raise PatternRefused(REPEATED_GROUP)
        unbounded = high == sre.MAXREPEAT
        self.add(max(low, 1) if unbounded else high)  # the copies of the repeated piece
        inner = self.sequence(items, depth=depth + 1)
        return f"(?:{inner}){{{low},{'' if unbounded else high}}}"


def _escaped(code: int) -> str:
    return chr(code) if chr(code).isascii() and (chr(code).isalnum() or chr(code) == "_") else f"\\x{{{code:X}}}"


def _character(op, argument) -> str:
    """One single-character item in RE2's syntax."""
    if op == sre.LITERAL:
        return _escaped(argument)
    if op == sre.NOT_LITERAL:
        return f"[^{_escaped(argument)}]"
    if op == sre.ANY:
        return "."  # neither engine's dot takes a newline without DOTALL, and flags are refused
    parts = []
    for item_op, item_argument in argument:
        if item_op == sre.NEGATE:
            parts.insert(0, "^")
        elif item_op == sre.LITERAL:
            parts.append(_escaped(item_argument))
        elif item_op == sre.RANGE:
            low, high = item_argument
            parts.append(f"{_escaped(low)}-{_escaped(high)}")
        elif item_op == sre.CATEGORY and item_argument in _CATEGORIES:
            parts.append(_CATEGORIES[item_argument])
        else:
            raise PatternRefused(UNSUPPORTED.format(what=f"{item_op} in a character class".lower()))
    return "[" + "".join(parts) + "]"
