"""``ExportOptions``: the one check of every export parameter, each refusal with its message."""

from __future__ import annotations

import math

import pytest

from forests.metrics.export.names import DEFAULT_PLACEHOLDER, KINDS, PAIRS, STEP_TAG
from forests.metrics.export.options import (
    KIND_UNKNOWN,
    MAX_PAIRS_INVALID,
    MIN_MARGIN_INVALID,
    PATHS_UNKNOWN,
    PLACEHOLDER_CONTROL,
    PLACEHOLDER_EMPTY,
    PLACEHOLDER_MAX_CHARS,
    PLACEHOLDER_TOO_LONG,
    THRESHOLD_INVALID,
    ExportOptions,
    placeholder_token_check,
)
from forests.metrics.preferences import PATH_MODES, PATHS_DISTINCT


def test_the_defaults_are_pairs_over_distinct_paths_with_the_step_tag():
    options = ExportOptions()
    assert (options.kind, options.paths, options.placeholder_token) == (PAIRS, PATHS_DISTINCT, DEFAULT_PLACEHOLDER)
    assert DEFAULT_PLACEHOLDER == STEP_TAG


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "dpo"}, KIND_UNKNOWN.format(kinds=", ".join(KINDS), kind="dpo")),
        ({"paths": "all"}, PATHS_UNKNOWN.format(modes=", ".join(PATH_MODES), paths="all")),
        ({"min_margin": -0.1}, MIN_MARGIN_INVALID.format(value=-0.1)),
        ({"min_margin": math.nan}, MIN_MARGIN_INVALID.format(value=math.nan)),
        ({"min_margin": True}, MIN_MARGIN_INVALID.format(value=True)),
        ({"max_pairs_per_node": 0}, MAX_PAIRS_INVALID.format(value=0)),
        ({"max_pairs_per_node": 1.5}, MAX_PAIRS_INVALID.format(value=1.5)),
        ({"threshold": math.inf}, THRESHOLD_INVALID.format(value=math.inf)),
        ({"placeholder_token": ""}, PLACEHOLDER_EMPTY),
        ({"placeholder_token": "x" * 33}, PLACEHOLDER_TOO_LONG.format(max=PLACEHOLDER_MAX_CHARS, length=33)),
        ({"placeholder_token": "a\nb"}, PLACEHOLDER_CONTROL),
    ],
)
def test_each_out_of_range_parameter_is_refused_with_its_message(fields, message):
    with pytest.raises(ValueError) as refused:
        ExportOptions(**fields)
    assert str(refused.value) == message


def test_a_short_printable_placeholder_is_kept():
    assert placeholder_token_check("<step> ") == "<step> "
    assert placeholder_token_check("x" * PLACEHOLDER_MAX_CHARS) == "x" * PLACEHOLDER_MAX_CHARS
