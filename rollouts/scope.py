"""What a labelling scheme labels: its scope, as one filter on rollouts.

A scheme names forests, models and an outcome; a rollout is in scope when it matches every one of them that is set
(none set: every rollout, as before scopes existed). The scheme's gold items are never in its scope: they are checks,
handed out by the gold mix, and their labels are not data. The queue (one lease for people, AI judges and PRMs,
active learning included), the scheme pages' counts and the exports all read this one rule.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from prmsite.queries import correct_rollout_q
from rollouts.models import (
    OUTCOME_CORRECT,
    OUTCOME_NO_ANSWER,
    OUTCOME_WRONG,
    GoldItem,
    LabellingScheme,
    Rollout,
)


def outcome_q(outcome: str) -> Q:
    """Rollouts with this outcome: correct (the stored verdict), wrong (an answer that is not correct), no answer
    (none was given or parsed); any other value (the empty "any outcome") asks nothing."""
    if outcome == OUTCOME_CORRECT:
        return correct_rollout_q()
    if outcome == OUTCOME_WRONG:
        return ~correct_rollout_q() & Q(answer__isnull=False)
    if outcome == OUTCOME_NO_ANSWER:
        return Q(answer__isnull=True)
    return Q()


def scheme_scope_q(scheme: LabellingScheme) -> Q:
    """The scheme's scope as a filter on ``Rollout``: its forests, models and outcome, without its gold items."""
    condition = Q()
    forest_ids = list(scheme.forests.values_list("pk", flat=True)) if scheme.pk else []
    if forest_ids:
        condition &= Q(forest_id__in=forest_ids)
    if scheme.scope_models:
        condition &= Q(model__in=list(scheme.scope_models))
    condition &= outcome_q(scheme.scope_outcome)
    if scheme.pk:
        condition &= ~Q(Exists(GoldItem.objects.filter(scheme_id=scheme.pk, rollout_id=OuterRef("pk"))))
    return condition


def scheme_has_scope(scheme: LabellingScheme) -> bool:
    """Whether the scheme asks anything of its rollouts beyond "not one of its gold items"."""
    return bool(scheme.scope_models or scheme.scope_outcome or (scheme.pk and scheme.forests.exists()))


def scheme_rollouts(scheme: LabellingScheme) -> QuerySet[Rollout]:
    """The rollouts in the scheme's scope."""
    return Rollout.objects.filter(scheme_scope_q(scheme))
