"""The export kinds' names, and the step marks the tagged kinds write. Imports nothing, so any module may import it."""

from __future__ import annotations

PAIRS = "pairs"
STEPWISE = "stepwise"
MATH_SHEPHERD = "math_shepherd"
OPENRLHF = "openrlhf"
PROCESSBENCH = "processbench"
TREE = "tree"
KINDS = (PAIRS, STEPWISE, MATH_SHEPHERD, OPENRLHF, PROCESSBENCH, TREE)  # each has its module in ``kinds/``

STEP_TAG = "ки"  # Math-Shepherd's step tag: the position where the step's score is predicted
GOOD_STEP, BAD_STEP = "+", "-"
DEFAULT_PLACEHOLDER = STEP_TAG  # OpenRLHF's --placeholder_token for Math-Shepherd-style data
