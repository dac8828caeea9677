"""A label's stored step values read back in words, and the check of step codes staff type in. Pure: no Django.

Labels store the webserver specification's codes, 0 (wrong, a rating of -1), 1 (right, +1) and 2 (neutral, 0; also
every step a person left unrated, ``attributes["rated_steps"]`` says which): a raw ``[0, 1, 2]`` is easily misread as
ratings. The admin shows each value as a word with its rating; a PRM's rewards (floats) are shown as numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from rollouts.labelling.rules import (
    CODE_RATINGS,
    RATING_NEUTRAL,
    RATING_RIGHT,
    RATING_WRONG,
    UNRATED_CODE,
)

RATING_WORDS: dict[int, str] = {
    RATING_WRONG: "wrong (-1)",
    RATING_NEUTRAL: "neutral (0)",
    RATING_RIGHT: "right (+1)",
}
# Code 2 of a label that does not say how many steps were rated (an API or AI judge's label).
NEUTRAL_OR_UNRATED = "neutral or unrated (0)"
UNRATED = "unrated"
REWARD = "reward {value:g}"
NOT_A_LIST = "not a list of step values"

CODES_NOT_A_LIST = "The step codes must be a list, one code per step."
CODES_LENGTH = "{codes} step codes for a rollout of {steps} steps: give one code per step."
CODE_INVALID = "Step {step}: {value!r} is not a step code (0 wrong, 1 right, 2 neutral or unrated)."
RATED_STEPS_RANGE = "Rated steps must be between 0 and the rollout's {steps} steps."
UNRATED_NOT_NEUTRAL = "Step {step} is after the rated steps: store it as 2 (unrated), or count it in the rated steps."
NOTES_INVALID = "The notes must be empty or a list of {steps} texts, one per step."


def is_code(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in CODE_RATINGS


def rated_steps_of(attributes: object, steps: int) -> int | None:
    """``attributes["rated_steps"]`` when it is a step count of this label, else ``None`` (not recorded)."""
    rated = attributes.get("rated_steps") if isinstance(attributes, dict) else None
    if isinstance(rated, int) and not isinstance(rated, bool) and 0 <= rated <= steps:
        return rated
    return None


def step_words(prm_output: object, rated_steps: int | None = None) -> list[str]:
    """One phrase per stored step value: a code as its word and rating, a reward as its number."""
    if not isinstance(prm_output, list):
        return [NOT_A_LIST]
    if not all(is_code(value) for value in prm_output):
        return [
            REWARD.format(value=value)
            if isinstance(value, int | float) and not isinstance(value, bool)
            else repr(value)
            for value in prm_output
        ]
    words = []
    for index, code in enumerate(prm_output):
        if rated_steps is not None and index >= rated_steps:
            words.append(UNRATED)
        elif code == UNRATED_CODE and rated_steps is None:
            words.append(NEUTRAL_OR_UNRATED)
        else:
            words.append(RATING_WORDS[CODE_RATINGS[code]])
    return words


def step_words_summary(prm_output: object, rated_steps: int | None = None, *, limit: int = 8) -> str:
    """The first ``limit`` phrases, and how many steps follow."""
    words = step_words(prm_output, rated_steps)
    shown = ", ".join(words[:limit])
    return f"{shown}, … ({len(words)} steps)" if len(words) > limit else shown


def step_codes_problem(prm_output: object, rated_steps: object, steps: int, explanations: object = None) -> str | None:
    """Why these codes cannot stand for a rollout of ``steps`` steps (``None``: they can): one code per step, steps
    ``0 … rated_steps-1`` rated, the later ones stored as the unrated code 2, notes absent or one per step."""
    if not isinstance(prm_output, list):
        return CODES_NOT_A_LIST
    if len(prm_output) != steps:
        return CODES_LENGTH.format(codes=len(prm_output), steps=steps)
    for index, value in enumerate(prm_output):
        if not is_code(value):
            return CODE_INVALID.format(step=index + 1, value=value)
    if not isinstance(rated_steps, int) or isinstance(rated_steps, bool) or not 0 <= rated_steps <= steps:
        return RATED_STEPS_RANGE.format(steps=steps)
    for index in range(rated_steps, steps):
        if prm_output[index] != UNRATED_CODE:
            return UNRATED_NOT_NEUTRAL.format(step=index + 1)
    if explanations is not None and (
        not isinstance(explanations, list)
        or len(explanations) != steps
        or not all(isinstance(note, str) for note in explanations)
    ):
        return NOTES_INVALID.format(steps=steps)
    return None


def steps_of(reasoning: Sequence[object] | object) -> int:
    """How many steps a rollout's stored reasoning holds (0 when it is not a list)."""
    return len(reasoning) if isinstance(reasoning, list) else 0
