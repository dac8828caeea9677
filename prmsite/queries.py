"""Domain rules as database expressions, so SQL and Python agree by construction."""

from __future__ import annotations

from django.db.models import Q


def correct_rollout_q(*, correct: str = "correct") -> Q:
    """Correct rollouts (or leaves) as a filter: the grader's verdict, stored once when the rollout came in
    (``forests.intake.rollout_verdict``). ``correct`` names the field (lookups such as ``"node__correct"`` work)."""
    return Q(**{correct: True})
