"""What a labelling scheme labels: its scope, as one filter on rollouts.

A scheme names forests, models and an outcome; a rollout is in scope when it matches every one of them that is set
(none set: every rollout, as before scopes existed). The scheme's gold items are never in its scope: they are checks,
handed out by the gold mix, and their labels are not data. The queue (one lease for people, AI judges and PRMs,
active learning included), the scheme pages' counts and the exports all read this one rule.

The queue cursor of a scoped claim (``rollouts.queue``) passes rollouts that are labelled *or out of scope*, so it is
only valid for the scope it was moved under: ``scope_cursor_key`` names one cursor row per scheme and scope, and a
changed scope (other forests, models or outcome) starts a row of its own instead of trusting a stale one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from django.db.models import Q, QuerySet

from prmsite.queries import correct_rollout_q
from rollouts.models import (
    OUTCOME_CORRECT,
    OUTCOME_NO_ANSWER,
    OUTCOME_WRONG,
    GoldItem,
    LabellingScheme,
    Rollout,
)

EVERY_ROLLOUT = "every rollout"
# Separates a prm_version from its scope's digest in a queue cursor's key; no prm_version a person types holds it.
CURSOR_KEY_SEPARATOR = "\x1f"
# The prm_version's share of a cursor key (the key column holds 200 characters; the digest names the rest).
_CURSOR_KEY_PREFIX_CHARS = 150


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


def scope_q(*, scheme_id: int | None, forest_ids: Sequence[int], models: Sequence[str], outcome: str) -> Q:
    """A scope as a filter on ``Rollout``: these forests (none: any), models (none: any) and outcome, without the
    gold items of scheme ``scheme_id``."""
    condition = Q()
    if forest_ids:
        condition &= Q(forest_id__in=sorted(forest_ids))
    if models:
        condition &= Q(model__in=sorted(models))
    condition &= outcome_q(outcome)
    if scheme_id is not None:
        # NOT IN, not NOT EXISTS: evaluated once per query (PostgreSQL hashes it), whatever the plan of the rest.
        condition &= ~Q(pk__in=GoldItem.objects.filter(scheme_id=scheme_id).values("rollout_id"))
    return condition


def _forest_ids(scheme: LabellingScheme) -> list[int]:
    # ``all()`` reads a prefetch of the forests when there is one (the scheme list prefetches them).
    return [forest.pk for forest in scheme.forests.all()] if scheme.pk else []


def scheme_scope_q(scheme: LabellingScheme) -> Q:
    """The scheme's scope as a filter on ``Rollout``: its forests, models and outcome, without its gold items."""
    return scope_q(
        scheme_id=scheme.pk,
        forest_ids=_forest_ids(scheme),
        models=list(scheme.scope_models or []),
        outcome=scheme.scope_outcome,
    )


def scheme_has_scope(scheme: LabellingScheme) -> bool:
    """Whether the scheme asks anything of its rollouts beyond "not one of its gold items"."""
    return bool(scheme.scope_models or scheme.scope_outcome or (scheme.pk and scheme.forests.exists()))


def scheme_rollouts(scheme: LabellingScheme) -> QuerySet[Rollout]:
    """The rollouts in the scheme's scope."""
    return Rollout.objects.filter(scheme_scope_q(scheme))


def scheme_scope_words(scheme: LabellingScheme) -> str:
    """The scope as a labelling lead says it: "forests A, B; model M; outcome wrong", or "every rollout"."""
    parts = []
    forests = sorted(forest.name for forest in scheme.forests.all()) if scheme.pk else []
    if forests:
        parts.append(("forest " if len(forests) == 1 else "forests ") + ", ".join(forests))
    models = sorted(scheme.scope_models or [])
    if models:
        parts.append(("model " if len(models) == 1 else "models ") + ", ".join(models))
    if scheme.scope_outcome:
        parts.append("outcome " + scheme.scope_outcome.replace("_", " "))
    return "; ".join(parts) or EVERY_ROLLOUT


def scope_cursor_key(
    *, prm_version: str, scheme_id: int | None, forest_ids: Sequence[int], models: Sequence[str], outcome: str
) -> str:
    """The key of the queue cursor that claims under this scope move: the ``prm_version`` itself when it has no
    scheme, else the version's first characters, ``CURSOR_KEY_SEPARATOR`` and a digest of the version, the scheme
    and its scope (a scheme made again under the same version, or given another scope, starts a new cursor)."""
    if scheme_id is None:
        return prm_version
    scope = json.dumps([prm_version, scheme_id, sorted(forest_ids), sorted(models), outcome])
    digest = hashlib.sha256(scope.encode()).hexdigest()[:40]
    return f"{scope_cursor_key_prefix(prm_version)}{digest}"


def scope_cursor_key_prefix(prm_version: str) -> str:
    """What every scoped cursor key of ``prm_version`` starts with (a key of another version may share it: rewinding
    one too many cursor is safe)."""
    return prm_version[:_CURSOR_KEY_PREFIX_CHARS] + CURSOR_KEY_SEPARATOR
