"""Domain rules of ``prmsite.core.domain`` as database expressions, so SQL and Python agree by construction."""

from __future__ import annotations

from django.db.models import F, Q


def correct_rollout_q(*, prediction: str = "prediction", ground_truth: str = "ground_truth") -> Q:
    """``rollout_is_correct`` as a filter: the prediction is not null and equals the ground truth.

    ``prediction`` and ``ground_truth`` name the fields (lookups such as ``"tree__ground_truth"`` work).
    """
    return Q(**{f"{prediction}__isnull": False}) & Q(**{prediction: F(ground_truth)})
