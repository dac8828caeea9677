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
  (``(a+)+``, ``(q|v)*``), the shape that makes ``re`` exponential and would hang peft wherever the adapter is loaded.
- ``PeftPattern.fullmatch_all`` runs the pattern as a Thompson NFA (the set of states it can be in, advanced one
  character at a time), which answers what ``re.fullmatch`` answers in at most ``len(text) * states`` steps,
  whatever the pattern. Transitions already computed are reused, names sharing a prefix share its work, and every
  step is counted (``steps``) against a budget: past it, ``PatternTooCostly``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from re import _constants as sre  # Python's own regex parser and its opcodes (public as sre_parse until 3.11)
from re import _parser as sre_parse

# Longest pattern accepted: real ones are a few hundred characters (unsloth's generated pattern is about 400).
PATTERN_MAX_CHARS = 4096
# Most NFA states a pattern may compile to (a counted repeat such as \d{1,3} counts each copy).
PATTERN_MAX_STATES = 4096
# Deepest nesting of groups and alternations.
PATTERN_MAX_DEPTH = 32
# Transitions kept for reuse; past this the cache starts again (its size bounds memory, not correctness).
_TRANSITIONS_MAX = 65536

TOO_LONG = "it is {length} characters long, more than the {limit} accepted"
NOT_A_REGEX = "Python cannot compile it ({error})"
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
_ASSERTIONS = frozenset(
    {sre.AT_BEGINNING, sre.AT_BEGINNING_STRING, sre.AT_END, sre.AT_END_STRING, sre.AT_BOUNDARY, sre.AT_NON_BOUNDARY}
)
# A character class's categories, tested one character at a time with ``re`` itself (constant work), so that \d, \s
# and \w mean exactly what they mean to peft.
_CATEGORIES = {
    sre.CATEGORY_DIGIT: re.compile(r"\d"),
    sre.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    sre.CATEGORY_SPACE: re.compile(r"\s"),
    sre.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    sre.CATEGORY_WORD: re.compile(r"\w"),
    sre.CATEGORY_NOT_WORD: re.compile(r"\W"),
}
_WORD = _CATEGORIES[sre.CATEGORY_WORD]

_CHAR, _SPLIT, _ASSERT, _MATCH = range(4)


class PatternRefused(ValueError):
    """The pattern is not a regular expression this module accepts; the message says why, in a phrase."""


class PatternTooCostly(RuntimeError):
    """Matching went past its step budget."""


@dataclass
class _State:
    kind: int
    outs: tuple[int, ...] = ()
    test: Callable[[str], bool] | None = None  # _CHAR: does this character match
    assertion: object = None  # _ASSERT: which anchor


@dataclass
class PeftPattern:
    """A compiled pattern (see the module docstring). ``steps`` counts the work of every match so far."""

    pattern: str
    states: list[_State] = field(repr=False)
    start: int
    steps: int = 0
    _transitions: dict[tuple[frozenset[int], str | None, str, bool], frozenset[int]] = field(
        default_factory=dict, repr=False
    )
    _endings: dict[tuple[frozenset[int], str | None], bool] = field(default_factory=dict, repr=False)

    def fullmatch_all(self, texts: Iterable[str], *, max_steps: int) -> dict[str, bool]:
        """Whether ``re.fullmatch(pattern, text)`` would match, for each distinct text; ``PatternTooCostly`` once
        ``steps`` passes ``max_steps``. Each character costs one step when its transition is known, else the states
        it touches (at most all of them); texts are taken in order so that a shared prefix is walked once."""
        answers: dict[str, bool] = {}
        previous = ""
        # raw[k]: the states reached after k characters, before following the zero-width moves at position k.
        raw: list[frozenset[int]] = [frozenset({self.start})]
        transitions = self._transitions
        for text in sorted(set(texts)):
            common = 0
            for a, b in zip(previous, text, strict=False):
                if a != b:
                    break
                common += 1
            # raw[k] depends on text[:k] alone while k < len(text) (``$`` also matches before a final newline), so
            # the shared prefix's states, but for its last character, still hold.
            del raw[max(common - 1, 0) + 1 :]
            last = len(text) - 1
            for position in range(len(raw) - 1, len(text)):
                char = text[position]
                # What a transition depends on: the states, the characters either side of the position (for ^, \b
                # and \B) and whether this is a final newline (for $).
                key = (raw[position], text[position - 1] if position else None, char, position == last and char == "\n")
                following = transitions.get(key)
                if following is None:
                    following = self._transition(key, text, position, max_steps)
                else:
                    self.steps += 1
                    if self.steps > max_steps:
                        raise PatternTooCostly(f"more than {max_steps} steps")
                raw.append(following)
            answers[text] = self._accepts(raw[len(text)], text, max_steps)
            previous = text
        return answers

    def fullmatch(self, text: str, *, max_steps: int) -> bool:
        """``re.fullmatch(pattern, text) is not None``, in at most ``len(text) * states`` steps."""
        return self.fullmatch_all([text], max_steps=max_steps)[text]

    @staticmethod
    def _context(text: str, position: int) -> tuple[bool, ...]:
        """What the anchors see at ``position``: start, end, before a final newline, at a word boundary or not."""
        size = len(text)
        before = position > 0 and _WORD.match(text[position - 1]) is not None
        after = position < size and _WORD.match(text[position]) is not None
        return (
            position == 0,
            position == size,
            position == size - 1 and text[position] == "\n",
            size > 0 and before != after,  # like sre, an empty string has no boundary and no non-boundary
            size > 0 and before == after,
        )

    def _closure(self, raw: frozenset[int], context: tuple[bool, ...], max_steps: int) -> list[int]:
        """The states reachable from ``raw`` by zero-width moves at a position with this ``context``: the character
        states and the final one."""
        at_start, at_end, before_final_newline, boundary, non_boundary = context
        holds = {
            sre.AT_BEGINNING: at_start,
            sre.AT_BEGINNING_STRING: at_start,
            sre.AT_END: at_end or before_final_newline,
            sre.AT_END_STRING: at_end,
            sre.AT_BOUNDARY: boundary,
            sre.AT_NON_BOUNDARY: non_boundary,
        }
        seen = set(raw)
        stack = list(raw)
        reached = []
        while stack:
            index = stack.pop()
            self._count(1, max_steps)
            state = self.states[index]
            if state.kind == _SPLIT or (state.kind == _ASSERT and holds[state.assertion]):
                for out in state.outs:
                    if out not in seen:
                        seen.add(out)
                        stack.append(out)
            elif state.kind in (_CHAR, _MATCH):
                reached.append(index)
        return reached

    def _transition(self, key: tuple, text: str, position: int, max_steps: int) -> frozenset[int]:
        """The states after reading ``text[position]`` from ``key``'s states, computed and kept for reuse."""
        char = text[position]
        following = []
        for index in self._closure(key[0], self._context(text, position), max_steps):
            state = self.states[index]
            if state.kind == _CHAR:
                self._count(1, max_steps)
                if state.test(char):
                    following.append(state.outs[0])
        result = frozenset(following)
        if len(self._transitions) >= _TRANSITIONS_MAX:
            self._transitions.clear()
        self._transitions[key] = result
        return result

    def _accepts(self, raw: frozenset[int], text: str, max_steps: int) -> bool:
        """Whether the final state is reached at the end of ``text``; what the anchors see there depends on its last
        character alone, so the answer is kept for reuse too."""
        key = (raw, text[-1] if text else None)
        known = self._endings.get(key)
        if known is not None:
            self._count(1, max_steps)
            return known
        reached = self._closure(raw, self._context(text, len(text)), max_steps)
        accepted = any(self.states[index].kind == _MATCH for index in reached)
        if len(self._endings) >= _TRANSITIONS_MAX:
            self._endings.clear()
        self._endings[key] = accepted
        return accepted

    def _count(self, steps: int, max_steps: int) -> None:
        self.steps += steps
        if self.steps > max_steps:
            raise PatternTooCostly(f"more than {max_steps} steps")


def pattern_compile(pattern: str) -> PeftPattern:
    """``pattern`` compiled for ``PeftPattern.fullmatch_all``; ``PatternRefused`` says why a pattern is refused: too
    long, not a Python regular expression, or outside the subset the module docstring describes."""
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
    builder = _Builder(pattern)
    match = builder.add(_State(_MATCH))
    start = builder.sequence(list(parsed), match, depth=0)
    return PeftPattern(pattern=pattern, states=builder.states, start=start)


class _Builder:
    """Builds the NFA back to front: each piece is compiled knowing the state that follows it."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.states: list[_State] = []

    def add(self, state: _State) -> int:
        if len(self.states) >= PATTERN_MAX_STATES:
            raise PatternRefused(TOO_MANY_STATES)
        self.states.append(state)
        return len(self.states) - 1

    def sequence(self, items: list, following: int, *, depth: int) -> int:
        if depth > PATTERN_MAX_DEPTH:
            raise PatternRefused(TOO_NESTED)
        for op, argument in reversed(items):
            following = self.item(op, argument, following, depth=depth)
        return following

    def item(self, op, argument, following: int, *, depth: int) -> int:
        if op in _SINGLE_CHARACTER:
            return self.add(_State(_CHAR, (following,), test=_char_test(op, argument)))
        if op == sre.SUBPATTERN:
            _group, add_flags, del_flags, body = argument
            if add_flags or del_flags:
                raise PatternRefused(FLAGS.format(flags=re.RegexFlag(add_flags | del_flags)))
            return self.sequence(list(body), following, depth=depth + 1)
        if op == sre.BRANCH:
            _none, alternatives = argument
            starts = tuple(self.sequence(list(alt), following, depth=depth + 1) for alt in alternatives)
            return self.add(_State(_SPLIT, starts))
        if op == sre.AT:
            if argument not in _ASSERTIONS:
                raise PatternRefused(UNSUPPORTED.format(what=f"the anchor {argument}"))
            return self.add(_State(_ASSERT, (following,), assertion=argument))
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):  # greedy or lazy: the same answer to "does it match at all"
            return self.repeat(*argument, following, depth=depth)
        raise PatternRefused(UNSUPPORTED.format(what=_UNSUPPORTED_OPS.get(op, str(op).lower())))

    def repeat(self, low: int, high: int, body, following: int, *, depth: int) -> int:
        items = list(body)
        while len(items) == 1 and items[0][0] == sre.SUBPATTERN and not any(items[0][1][1:3]):
            items = list(items[0][1][3])  # (?:x)+ is x+
        single = len(items) == 1 and items[0][0] in _SINGLE_CHARACTER
        if high > 1 and not single:
            raise PatternRefused(REPEATED_GROUP)
        if high == sre.MAXREPEAT:
            loop = self.add(_State(_SPLIT))
            self.states[loop].outs = (self.sequence(items, loop, depth=depth + 1), following)
            tail = loop
        else:
            tail = following
            for _ in range(high - low):
                tail = self.add(_State(_SPLIT, (self.sequence(items, tail, depth=depth + 1), following)))
        for _ in range(low):
            tail = self.sequence(items, tail, depth=depth + 1)
        return tail


def _char_test(op, argument) -> Callable[[str], bool]:
    if op == sre.LITERAL:
        literal = chr(argument)
        return lambda char: char == literal
    if op == sre.NOT_LITERAL:
        literal = chr(argument)
        return lambda char: char != literal
    if op == sre.ANY:
        return lambda char: char != "\n"  # no DOTALL: flags are refused
    negate = False
    literals: set[str] = set()
    ranges: list[tuple[int, int]] = []
    categories: list[re.Pattern[str]] = []
    for item_op, item_argument in argument:
        if item_op == sre.NEGATE:
            negate = True
        elif item_op == sre.LITERAL:
            literals.add(chr(item_argument))
        elif item_op == sre.RANGE:
            ranges.append(item_argument)
        elif item_op == sre.CATEGORY and item_argument in _CATEGORIES:
            categories.append(_CATEGORIES[item_argument])
        else:
            raise PatternRefused(UNSUPPORTED.format(what=f"{str(item_op).lower()} in a character class"))

    def test(char: str) -> bool:
        code = ord(char)
        found = (
            char in literals
            or any(low <= code <= high for low, high in ranges)
            or any(category.match(char) for category in categories)
        )
        return found != negate

    return test
