"""The correctness rule of prmsite: whether a rollout's final answer states its tree's reference answer. Pure: no
Django. Written once; every part of prmsite reads the verdict it gives (stored when the rollout is stored).

Four answer kinds (``AnswerSpec.kind``):

- ``label``: today's integer class labels. Both sides parse as integers (``int(text.strip().replace(",", ""))``) and
  are equal: ``prmsite.core.domain.rollout_is_correct``.
- ``number``: both sides parse as finite numbers (thousands separators, a trailing ``%`` or unit, fractions such as
  ``3/4`` or ``\\frac{3}{4}`` accepted) and are within the tolerance (``math.isclose`` with
  ``rel_tol = abs_tol = tolerance``).
- ``text``: equal after normalisation (Unicode NFKC, ``\\text{}`` unwrapped, casefold, whitespace collapsed,
  surrounding punctuation and quotes stripped).
- ``math``: Hugging Face's math-verify (``parse`` then ``verify``, the reference as gold), after two fast paths:
  identical normalised strings, and two plain numbers (compared as the ``number`` kind does).

math-verify parses untrusted text with sympy, which can hang or exhaust memory (``2^{2^{2^{100}}}``, deep nesting),
and its own timeout relies on ``signal.alarm`` (main thread only). So it runs in one separate worker process (a fresh
interpreter started lazily, reused, one request at a time, memory-limited), and a request that takes longer than the
time budget (``GRADE_TIME_BUDGET_S``, or the environment variable ``PRMSITE_GRADE_TIME_BUDGET_S``) kills the worker; the
next request starts a fresh one. An answer or reference longer than ``ANSWER_MAX_CHARS`` is refused before parsing.

A grader that cannot decide answers "not correct" with a reason (``Verdict.reason``); it never raises.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from prmsite.core.domain import rollout_is_correct
from prmsite.core.errors import ConfigError

ANSWER_KINDS = ("label", "number", "math", "text")
DEFAULT_ANSWER_KIND = "label"
DEFAULT_ANSWER_TOLERANCE = 1e-6
# An answer or reference longer than this is not graded (Verdict(False, reason)): nothing that long is a final answer,
# and math-verify's cost grows with the input.
ANSWER_MAX_CHARS = 1_000
# The wall-clock seconds one math-verify request (parse both sides, verify) may take before its worker is killed.
GRADE_TIME_BUDGET_S = 2.0
GRADE_TIME_BUDGET_ENV = "PRMSITE_GRADE_TIME_BUDGET_S"
# Starting the worker imports sympy: allowed this long, apart from the budget of the request that starts it.
WORKER_START_TIMEOUT_S = 120.0
# After a worker failed to start, math answers get that failure as their reason for this long before a new try.
WORKER_RETRY_S = 30.0
# The worker's address-space limit (RLIMIT_AS), so that a hostile expression fails with MemoryError in the worker
# instead of exhausting the machine.
WORKER_MEMORY_LIMIT_BYTES = 4 * 1024**3
# A backstop for a worker whose parent died mid-request (nobody left to kill it, and a big-integer power in C holds the
# GIL so no thread of its own can): each request may use this many CPU seconds, plus twice the budget, before the
# kernel ends the worker (RLIMIT_CPU).
WORKER_CPU_MARGIN_S = 30
# A math answer nested deeper than this (brackets, braces, parentheses) is refused before parsing: no final answer is,
# and latex2sympy's recursive parsing of such input only burns the time budget.
MAX_NESTING = 50
# At most this many math-verify requests per answer_classes call; beyond it, answers that differ as strings stay apart.
MAX_CLASS_COMPARISONS = 256
# After this many timed-out requests in one answer_classes call, it compares by string only.
MAX_CLASS_TIMEOUTS = 2
# Verdicts of math-kind gradings kept (least recently used dropped first): a forest's many identical answers cost one
# math-verify request.
GRADE_CACHE_SIZE = 4_096

NO_ANSWER = "no answer"
NO_REFERENCE = "no reference answer"
NOT_TEXT = "contains a NUL character or a lone surrogate"
TIMED_OUT = "math-verify timed out after {budget} s"
WORKER_DIED = "math-verify's worker process died"
UNAVAILABLE = "math-verify is unavailable: {why}"


@dataclass(frozen=True)
class AnswerSpec:
    """How a forest's answers are graded: the kind, and the tolerance of numeric comparisons (relative, and absolute
    for values near 0)."""

    kind: str = DEFAULT_ANSWER_KIND
    tolerance: float = DEFAULT_ANSWER_TOLERANCE

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise ConfigError(f"answer_kind must be one of {', '.join(ANSWER_KINDS)}; got {self.kind!r}")
        tolerance = self.tolerance
        if (
            isinstance(tolerance, bool)
            or not isinstance(tolerance, int | float)
            or not math.isfinite(tolerance)
            or not 0 <= tolerance < 1
        ):
            raise ConfigError(f"answer_tolerance must be a number in [0, 1); got {tolerance!r}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> AnswerSpec:
        """From a forest's rollout_config / a template JSON: keys "answer_kind" (default "label") and
        "answer_tolerance" (optional). ConfigError naming the key for a bad value."""
        settings = settings or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"answer settings (answer_kind, answer_tolerance) must be an object; got {settings!r}")
        kind = settings.get("answer_kind")
        tolerance = settings.get("answer_tolerance")
        return cls(
            kind=DEFAULT_ANSWER_KIND if kind is None else kind,
            tolerance=DEFAULT_ANSWER_TOLERANCE if tolerance is None else tolerance,
        )

    def as_settings(self) -> dict[str, Any]:
        return {"answer_kind": self.kind, "answer_tolerance": self.tolerance}


@dataclass(frozen=True)
class Verdict:
    """The grader's answer. ``reason`` is "" when the grader decided; otherwise why it says "not correct" although
    it could not decide (no answer, too long, unparsable, timed out, ...)."""

    correct: bool
    reason: str = ""


# --------------------------------------------------------------------------------------------------------------------
# Input checks shared by every kind


def _as_text(value: object) -> object:
    """Numbers (a stored integer ground truth, a prediction) as their text; anything else unchanged."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _refusal(answer: object, reference: object) -> Verdict | None:
    """The verdict for input no kind grades (missing, too long, not text), or None when both sides may be graded."""
    for text, name, missing in ((reference, "reference answer", NO_REFERENCE), (answer, "answer", NO_ANSWER)):
        if text is None:
            return Verdict(False, missing)
        if not isinstance(text, str):
            return Verdict(False, f"the {name} is not text")
        if len(text) > ANSWER_MAX_CHARS:
            return Verdict(False, f"{name} longer than {ANSWER_MAX_CHARS} characters")
        if _not_text(text):
            return Verdict(False, f"the {name} {NOT_TEXT}")
        if not text.strip():
            return Verdict(False, missing)
    return None


_NOT_TEXT_RE = re.compile("[\x00\ud800-\udfff]")


def _not_text(text: str) -> bool:
    return _NOT_TEXT_RE.search(text) is not None


# --------------------------------------------------------------------------------------------------------------------
# Extraction


_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BOX_TOKEN_RE = re.compile(r"[^\s$]+")
# The last boxes tried, from the end, before giving up: each unclosed one costs a scan to the end of the response.
MAX_BOXES_TRIED = 16


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the balanced ``{…}`` group opening at ``text[start]`` (escaped braces ``\\{`` do not count) and
    the index after it; None when the group is not closed."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


def _box_content(text: str, at: int, command: str) -> str | None:
    """The argument of the box command at ``text[at:]``: a braced group (``\\boxed{…}``) or a token (``\\boxed 5``)."""
    i = at + len(command)
    if i < len(text) and (text[i].isalpha()):
        return None  # a longer command name (\boxedx), not a box
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        group = _braced(text, i)
        return None if group is None else group[0]
    token = _BOX_TOKEN_RE.match(text, i)
    return token.group(0).rstrip(".,;") if token else None


def last_boxed(text: str) -> str | None:
    """The stripped content of the last non-empty ``\\boxed{…}`` / ``\\fbox{…}`` (balanced braces; ``\\boxed 5``
    too) in ``text``, among its last ``MAX_BOXES_TRIED`` boxes; None when there is none."""
    end = len(text)
    for _ in range(MAX_BOXES_TRIED):
        at, command = max((text.rfind(c, 0, end), c) for c in _BOX_COMMANDS)
        if at < 0:
            return None
        content = _box_content(text, at, command)
        if content is not None and content.strip():
            return content.strip()
        end = at
    return None


def extract_answer(response: str, spec: AnswerSpec, pattern: str | None = None) -> str | None:
    """The final answer a response states: the last match of ``pattern`` (its group named ``answer``, else its first
    group that matched, else the whole match), stripped; for kind math with no pattern, or when the pattern does not
    match, the content of the last ``\\boxed{…}`` (balanced braces; also ``\\fbox{…}``); None when nothing is found.
    ConfigError for a pattern that is not a regular expression."""
    if pattern:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ConfigError(f"the answer pattern {pattern!r} is not a regular expression: {error}") from error
        last = None
        for last in compiled.finditer(response):  # noqa: B007 (only the last match is wanted)
            pass
        if last is not None:
            found = _match_text(last, compiled)
            if found is not None and found.strip():
                return found.strip()
    if spec.kind == "math":
        return last_boxed(response)
    return None


def _match_text(match: re.Match[str], compiled: re.Pattern[str]) -> str | None:
    if "answer" in compiled.groupindex:
        return match.group("answer")
    for group in match.groups():
        if group is not None:
            return group
    return None if compiled.groups else match.group(0)


# --------------------------------------------------------------------------------------------------------------------
# Normalisation and the cheap kinds


_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_COMMANDS_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")


def _unwrap(text: str) -> str:
    """``text`` stripped of surrounding math delimiters and of a ``\\boxed{}`` wrapping the whole of it."""
    text = text.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _DELIMITERS:
            if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
                text = text[len(left) : -len(right)].strip()
                changed = True
        for command in _BOX_COMMANDS:
            if text.startswith(command):
                group = _braced(text, len(command)) if text[len(command) : len(command) + 1] == "{" else None
                if group is not None and group[1] == len(text):
                    text = group[0].strip()
                    changed = True
    return text


def normalise_math(text: str) -> str:
    """The canonical string of a math answer, for the fast path and for grouping: delimiters and a whole-answer
    ``\\boxed{}`` removed, ``\\dfrac``/``\\tfrac`` read as ``\\frac``, ``\\left``/``\\right`` and thin spaces dropped,
    spaces kept only between two letters."""
    text = _unwrap(text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", text)
    text = re.sub(r"\\[,;:! ]|~", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"(?<![A-Za-z]) | (?![A-Za-z])", "", text)


_TEXT_STRIP = " \t\n\r\f\v.,;:!?\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"


def normalise_text(text: str) -> str:
    """The text kind's canonical string: NFKC, delimiters and ``\\text{}`` unwrapped, casefolded, whitespace
    collapsed, surrounding punctuation and quotes stripped."""
    text = _unwrap(unicodedata.normalize("NFKC", text))
    previous = None
    while previous != text:
        previous, text = text, _TEXT_COMMANDS_RE.sub(r"\1", text)
    text = re.sub(r"\s+", " ", text.casefold())
    return text.strip(_TEXT_STRIP)


def _label_value(text: str) -> int | None:
    try:
        return int(text.strip().replace(",", ""))
    except ValueError:
        return None


_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
_FRACTION_RE = re.compile(
    rf"(?P<sign>[+-]?)\s*(?:\\frac\s*\{{\s*(?P<fsign>[+-]?)(?P<fnum>{_NUMBER})\s*\}}\s*\{{\s*(?P<fden>{_NUMBER})\s*\}}"
    rf"|\\frac\s*(?P<snum>\d)\s*(?P<sden>\d)"
    rf"|(?P<num>{_NUMBER})(?:\s*/\s*(?P<den>{_NUMBER}))?)"
)
_UNIT = (
    r"(?:\\?%|°|\^\s*\{?\s*\\circ\s*\}?|\\(?:text|mbox|mathrm|textrm)\s*\{[^{}]*\}|\\(?:circ|degree)|[A-Za-z]+\.?)"
    r"(?:\^\s*\{?\d\}?)?"
)
_SUFFIX_RE = re.compile(rf"(?:\s*{_UNIT})*\s*\.?\s*")
_PREFIX_RE = re.compile(r"(?:[A-Za-z]\w*\s*=\s*)?(?:\\\$|\$|\\text\{\s*\\?\$\s*\})?\s*")


def parse_number(text: str) -> float | None:
    """The finite number ``text`` states, or None. Accepts thousands separators (``1,000``, ``1\\,000``), decimals,
    exponents, fractions (``3/4``, ``\\frac{3}{4}``, ``\\dfrac34``), a leading ``$`` or ``x =``, and a trailing ``%``,
    degree sign or unit (``5 \\text{ cm}``), all ignored. ``(1, 2)``, ``1,2`` and ``inf`` are not numbers."""
    text = _unwrap(text)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = re.sub(r"(?<=\d)(?:\\[,!]|\\ |\{,\})(?=\d)", "", text)  # 1\,000 and 1{,}000
    text = text.replace("{,}", ",")
    prefix = _PREFIX_RE.match(text)
    position = prefix.end() if prefix else 0
    match = _FRACTION_RE.match(text, position)
    if match is None or _SUFFIX_RE.fullmatch(text, match.end()) is None:
        return None
    numerator = match.group("fnum") or match.group("snum") or match.group("num")
    denominator = match.group("fden") or match.group("sden") or match.group("den")
    try:
        value = float(numerator.replace(",", ""))
        if denominator is not None:
            value /= float(denominator.replace(",", ""))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    if (match.group("sign") == "-") != (match.group("fsign") == "-"):
        value = -value
    return value if math.isfinite(value) else None


def _has_percent(text: str) -> bool:
    return "%" in text


def _numbers_close(a: float, b: float, tolerance: float) -> bool:
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)


def _grade_label(answer: str, reference: str) -> Verdict:
    truth = _label_value(reference)
    if truth is None:
        return Verdict(False, "cannot parse the reference answer as an integer")
    prediction = _label_value(answer)
    if prediction is None:
        return Verdict(False, "cannot parse the answer as an integer")
    return Verdict(rollout_is_correct(prediction, truth))


def _grade_number(answer: str, reference: str, tolerance: float) -> Verdict:
    truth = parse_number(reference)
    if truth is None:
        return Verdict(False, "cannot parse the reference answer as a number")
    value = parse_number(answer)
    if value is None:
        return Verdict(False, "cannot parse the answer as a number")
    return Verdict(_numbers_close(value, truth, tolerance))


def _grade_text(answer: str, reference: str) -> Verdict:
    truth = normalise_text(reference)
    if not truth:
        return Verdict(False, NO_REFERENCE)
    given = normalise_text(answer)
    if not given:
        return Verdict(False, NO_ANSWER)
    return Verdict(given == truth)


def _nesting_depth(text: str) -> int:
    """The deepest nesting of unescaped brackets, braces and parentheses in ``text``."""
    depth = deepest = 0
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth = max(depth - 1, 0)
    return deepest


def _math_fast(answer: str, reference: str, tolerance: float) -> Verdict | None:
    """The math kind's verdict without math-verify when it is certain: identical normalised strings, or two plain
    numbers (no percent sign, which math-verify reads leniently); a refusal for input nested too deeply; None
    otherwise."""
    a, r = normalise_math(answer), normalise_math(reference)
    if not r:
        return Verdict(False, NO_REFERENCE)
    if not a:
        return Verdict(False, NO_ANSWER)
    if a == r:
        return Verdict(True)
    for text, name in ((r, "reference answer"), (a, "answer")):
        if _nesting_depth(text) > MAX_NESTING:
            return Verdict(False, f"{name} nested more than {MAX_NESTING} levels deep")
    if not _has_percent(a) and not _has_percent(r):
        value, truth = parse_number(a), parse_number(r)
        if value is not None and truth is not None:
            return Verdict(_numbers_close(value, truth, tolerance))
    return None


# --------------------------------------------------------------------------------------------------------------------
# The math-verify worker


def _worker_latex(text: str) -> str:
    """An answer as math-verify's LaTeX extraction reads it best: delimiters and a whole ``\\boxed{}`` removed, stray
    dollar signs dropped, wrapped in ``$…$``."""
    inner = _unwrap(text)
    inner = re.sub(r"(?<!\\)\$", "", inner)
    return f"${inner}$"


def _worker_main(fd: int) -> None:  # pragma: no cover (runs in the worker process)
    """The worker process: limit its memory, import math-verify, answer requests on the socket ``fd`` until told to
    stop (None) or the parent goes away.

    A request is ``(answer, reference, symmetric, budget_s)``; the reply ``(correct, reason)``. math-verify's own
    signal-based timeouts are off (the parent enforces the budget by killing this process)."""
    try:
        import resource  # noqa: PLC0415 (POSIX only; the limit applies to this worker alone)

        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = WORKER_MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, WORKER_MEMORY_LIMIT_BYTES)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass
    import logging  # noqa: PLC0415 (the worker process configures its own logging)

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    from math_verify import (  # noqa: PLC0415 (heavy: sympy and antlr are imported only in the worker process)
        ExprExtractionConfig,
        LatexExtractionConfig,
        parse,
        verify,
    )
    from sympy import Basic, MatrixBase  # noqa: PLC0415 (imported by math-verify already, in the worker only)

    extraction = [LatexExtractionConfig(), ExprExtractionConfig()]

    def parsed(text: str) -> list[Any]:
        return parse(_worker_latex(text), extraction_config=extraction, parsing_timeout=None)

    parent = os.getppid()

    def orphaned() -> None:
        # The parent closing its end ends the loop below; a request still computing when the parent dies would not
        # notice, so this thread ends the process once the parent is gone.
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphaned, name="orphan-watch", daemon=True).start()

    def cpu_limit(budget: float) -> None:
        try:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            limit = math.ceil(usage.ru_utime + usage.ru_stime + 2 * budget + WORKER_CPU_MARGIN_S)
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(
                resource.RLIMIT_CPU, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
            )
        except (NameError, ValueError, OSError):
            pass

    connection = Connection(fd)
    connection.send(("ready", ""))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        answer, reference, symmetric, budget = request
        cpu_limit(budget)
        try:
            gold = parsed(reference)
            if not gold:
                reply = (False, "math-verify cannot parse the reference answer")
            else:
                prediction = parsed(answer)
                if not prediction:
                    reply = (False, "math-verify cannot parse the answer")
                else:
                    correct = verify(gold, prediction, timeout_seconds=None)
                    if not correct and symmetric:
                        correct = verify(prediction, gold, timeout_seconds=None)
                    reply = (bool(correct), "")
                    # Unparsed text comes back as a string, which verify compares only with another string.
                    if not correct and not any(isinstance(g, Basic | MatrixBase) for g in gold):
                        reply = (False, "math-verify cannot parse the reference answer")
                    elif not correct and not any(isinstance(p, Basic | MatrixBase) for p in prediction):
                        reply = (False, "math-verify cannot parse the answer")
        except MemoryError:
            reply = (False, "math-verify ran out of memory")
        except RecursionError:
            reply = (False, "math-verify gave up: the expression is nested too deeply")
        except Exception as error:  # any failure of the library is a verdict, never a crash)
            reply = (False, f"math-verify failed: {type(error).__name__}")
        connection.send(reply)


# The worker is a fresh interpreter (fork + exec, never a bare fork of a possibly threaded server) that imports only
# this module: unlike multiprocessing's spawn, it does not re-import the parent's __main__ (an unguarded script would
# start workers recursively), and it may be started from a daemonic multiprocessing worker.
_WORKER_CODE = "import sys; from prmsite.core.grading import _worker_main; _worker_main(int(sys.argv[1]))"


class _Worker:
    """One math-verify worker process and the parent's end of its socket."""

    def __init__(self) -> None:
        parent_socket, child_socket = socket.socketpair()
        try:
            environment = dict(os.environ)
            environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter running our own module)
                [sys.executable, "-c", _WORKER_CODE, str(child_socket.fileno())],
                pass_fds=(child_socket.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # nothing the libraries print may mix into a command's own output
                env=environment,
                start_new_session=True,  # a Ctrl-C meant for the server does not reach the worker mid-request
            )
        except BaseException:
            parent_socket.close()
            raise
        finally:
            child_socket.close()
        self.connection = Connection(parent_socket.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float) -> str | None:
        """None once the worker has imported math-verify; otherwise why it did not."""
        try:
            if not self.connection.poll(timeout):
                return f"it did not start within {timeout:g} s"
            self.connection.recv()
        except (EOFError, OSError):
            try:
                code = self.process.wait(5.0)
            except subprocess.TimeoutExpired:
                return "it closed its connection"
            return f"it exited with code {code}"
        return None

    def stop(self, *, kill: bool) -> None:
        if not kill:
            try:
                self.connection.send(None)
                self.process.wait(1.0)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5.0)
        self.connection.close()


_worker: _Worker | None = None
_worker_lock = threading.Lock()
_worker_starts = 0
_math_verify_calls = 0
_atexit_registered = False
_start_failure: tuple[float, str] | None = None  # when the last start failed, and the verdict's reason


def _forget_worker_after_fork() -> None:
    """In a forked child: the worker belongs to the parent (sharing its socket would mix the two processes'
    requests), and the lock may have been held by a thread that does not exist here. Start afresh."""
    global _worker, _worker_lock, _cache_lock
    if _worker is not None:
        _worker.connection.close()  # this process's copy of the descriptor only; the parent keeps its worker
    _worker = None
    _worker_lock = threading.Lock()
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)


def grade_time_budget() -> float:
    """The seconds one math-verify request may take: ``PRMSITE_GRADE_TIME_BUDGET_S`` when set to a positive number,
    else ``GRADE_TIME_BUDGET_S``."""
    raw = os.environ.get(GRADE_TIME_BUDGET_ENV)
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return GRADE_TIME_BUDGET_S
        if math.isfinite(value) and value > 0:
            return value
    return GRADE_TIME_BUDGET_S


def math_verify_calls() -> int:
    """How many requests reached the math-verify worker in this process (cache hits and fast paths do not count)."""
    return _math_verify_calls


def worker_starts() -> int:
    """How many times this process started a math-verify worker (a timeout kills it; the next request starts one)."""
    return _worker_starts


def shutdown_worker() -> None:
    """Stop the math-verify worker if one runs (registered with atexit; the next request starts a new one, even
    right after a failed start)."""
    global _worker, _start_failure
    with _worker_lock:
        _start_failure = None
        if _worker is not None:
            _worker.stop(kill=False)
            _worker = None


def _running_worker() -> tuple[_Worker | None, str]:
    """The live worker (started when there is none), or None and why it could not start. Under ``_worker_lock``.
    After a failed start, the same failure is answered for ``WORKER_RETRY_S`` without trying again."""
    global _worker, _worker_starts, _atexit_registered, _start_failure
    if _worker is not None and _worker.alive():
        return _worker, ""
    if _worker is not None:
        _worker.stop(kill=True)
        _worker = None
    if _start_failure is not None and time.monotonic() - _start_failure[0] < WORKER_RETRY_S:
        return None, _start_failure[1]
    _worker_starts += 1
    if not _atexit_registered:
        atexit.register(shutdown_worker)
        _atexit_registered = True
    try:
        worker = _Worker()
    except (OSError, ValueError, subprocess.SubprocessError) as error:
        failure = " ".join(str(error).split())
    else:
        failure = worker.wait_ready(WORKER_START_TIMEOUT_S)
        if failure is None:
            _worker, _start_failure = worker, None
            return worker, ""
        worker.stop(kill=True)
    _start_failure = (time.monotonic(), UNAVAILABLE.format(why=failure))
    return None, _start_failure[1]


def _math_verify(answer: str, reference: str, *, symmetric: bool) -> Verdict:
    """math-verify's verdict on one pair, in the worker, within the time budget."""
    global _worker, _math_verify_calls
    budget = grade_time_budget()
    with _worker_lock:
        worker, failure = _running_worker()
        if worker is None:
            return Verdict(False, failure)
        _math_verify_calls += 1
        try:
            worker.connection.send((answer, reference, symmetric, budget))
            if worker.connection.poll(budget):
                correct, reason = worker.connection.recv()
                return Verdict(bool(correct), str(reason))
        except (EOFError, OSError):
            worker.stop(kill=True)
            _worker = None
            return Verdict(False, WORKER_DIED)
        worker.stop(kill=True)
        _worker = None
        return Verdict(False, TIMED_OUT.format(budget=float(budget)))


_cache: OrderedDict[tuple[str, str, bool], Verdict] = OrderedDict()
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget the cached math-verify verdicts."""
    with _cache_lock:
        _cache.clear()


def _math_verify_cached(answer: str, reference: str, *, symmetric: bool) -> Verdict:
    key = (answer, reference, symmetric)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    verdict = _math_verify(answer, reference, symmetric=symmetric)
    if verdict.reason == WORKER_DIED or verdict.reason.startswith(UNAVAILABLE.format(why="")):
        return verdict  # a failure of the machinery, not of this input: the next request tries again
    with _cache_lock:
        _cache[key] = verdict
        _cache.move_to_end(key)
        while len(_cache) > GRADE_CACHE_SIZE:
            _cache.popitem(last=False)
    return verdict


def _grade_math(answer: str, reference: str, tolerance: float, *, symmetric: bool = False) -> Verdict:
    fast = _math_fast(answer, reference, tolerance)
    if fast is not None:
        return fast
    return _math_verify_cached(answer.strip(), reference.strip(), symmetric=symmetric)


# --------------------------------------------------------------------------------------------------------------------
# The public rule


def _grade(answer: object, reference: object, spec: AnswerSpec, *, symmetric: bool) -> Verdict:
    given, truth = _as_text(answer), _as_text(reference)
    refused = _refusal(given, truth)
    if refused is not None:
        return refused
    assert isinstance(given, str) and isinstance(truth, str)  # checked by _refusal
    if spec.kind == "label":
        return _grade_label(given, truth)
    if spec.kind == "number":
        return _grade_number(given, truth, spec.tolerance)
    if spec.kind == "text":
        return _grade_text(given, truth)
    return _grade_math(given, truth, spec.tolerance, symmetric=symmetric)


def grade(answer: str | None, reference: str | None, spec: AnswerSpec) -> Verdict:
    """THE correctness rule of prmsite: whether ``answer`` states ``reference`` under ``spec``'s kind (a number
    given for either, such as a stored integer ground truth, is read as its text). Never raises: a grader that cannot
    decide says not correct, with the reason."""
    try:
        return _grade(answer, reference, spec, symmetric=False)
    except Exception as error:  # the rule never raises: an unforeseen failure is a stored reason)
        return Verdict(False, f"the grader failed: {type(error).__name__}")


def equivalent(a: str, b: str, spec: AnswerSpec) -> bool:
    """Same answer under the kind's rule (math: math-verify either way round); False when undecidable."""
    try:
        return _grade(a, b, spec, symmetric=True).correct
    except Exception:  # undecidable is "not equivalent", never an error
        return False


def _class_key(answer: str, spec: AnswerSpec) -> object:
    """The string-level key of ``answer``: equal keys are equivalent answers without any comparison."""
    if spec.kind == "label":
        value = _label_value(answer)
        return ("int", value) if value is not None else ("str", answer.strip())
    if spec.kind == "text":
        return normalise_text(answer)
    if spec.kind == "math":
        return normalise_math(answer)
    return answer.strip()


def answer_classes(answers: Sequence[str | None], spec: AnswerSpec) -> list[int | None]:
    """Group answers by equivalence: equal class ids (0, 1, 2, … in first-seen order) for equivalent answers, None for
    a missing (or blank) answer. Identical normalised strings share a class without math-verify; then each new string
    class is compared with the class representatives, at most ``MAX_CLASS_COMPARISONS`` math-verify requests per
    call (beyond it, and for answers math-verify could not decide, string classes stay apart)."""
    result: list[int | None] = []
    by_key: dict[object, int] = {}
    representatives: list[str | None] = []  # class id -> its first answer (None: not gradable, compared with nothing)
    comparisons = timeouts = 0
    for answer in answers:
        if answer is None or not isinstance(answer, str) or not answer.strip():
            result.append(None)
            continue
        gradable = len(answer) <= ANSWER_MAX_CHARS and not _not_text(answer)
        key = _class_key(answer, spec) if gradable else ("ungradable", answer)
        if key in by_key:
            result.append(by_key[key])
            continue
        found = None
        if gradable and spec.kind != "text":  # text keys are already the whole rule
            for class_id, representative in enumerate(representatives):
                if representative is None:
                    continue
                if spec.kind == "math":
                    fast = _math_fast(answer, representative, spec.tolerance)
                    if fast is None:
                        if comparisons >= MAX_CLASS_COMPARISONS or timeouts >= MAX_CLASS_TIMEOUTS:
                            continue
                        comparisons += 1
                        fast = _math_verify_cached(answer.strip(), representative.strip(), symmetric=True)
                        if fast.reason.startswith(TIMED_OUT.split("{", 1)[0]) or fast.reason == WORKER_DIED:
                            timeouts += 1
                            break  # this answer is too costly to compare: it keeps a class of its own
                    if fast.correct:
                        found = class_id
                        break
                elif equivalent(answer, representative, spec):
                    found = class_id
                    break
        if found is None:
            found = len(representatives)
            representatives.append(answer if gradable else None)
        by_key[key] = found
        result.append(found)
    return result
