"""Request and response shapes of the forest-growth endpoints and of ``POST /rollout/batch``."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from forests.growth.queue import CLAIM_LIMIT_MAX, ClaimedExpansion
from prmsite.core.adaptive import ESTIMATES
from prmsite.core.growth import POLICIES, POLICY_HELP
from rollouts.serializers import StrictCharField, StrictIntegerField

ID_MAX = 2**63 - 1
NOT_A_BOOLEAN = "Must be true or false."
NOT_A_NUMBER = "Must be a number."


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true`` or ``false`` (not ``"yes"`` or ``1``)."""

    default_error_messages = {"not_a_boolean": NOT_A_BOOLEAN}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


class StrictFloatField(serializers.FloatField):
    """A JSON number (not a bool or a numeric string)."""

    default_error_messages = {"not_a_number": NOT_A_NUMBER}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("not_a_number")
        return super().to_internal_value(data)


class ForestConfigSerializer(serializers.Serializer):
    """``GET /forest/<forest_name>/config``: what a worker needs to grow the forest."""

    forest_name = serializers.CharField()
    rollout_config = serializers.DictField(
        help_text="template, reasoning_delimiter_pattern, prediction_pattern, rollout_config_version, config_name, "
        "dataset_name (as seeded)."
    )
    trees = serializers.IntegerField()
    growth = serializers.DictField(allow_null=True, help_text="The growth plan's options, or null before the first.")


class GrowthPlanSerializer(serializers.Serializer):
    """Body of ``PUT /forest/<forest_name>/growth``: the options a worker was started with (omitted ones keep their
    stored value, or their default for a new plan)."""

    policy = serializers.ChoiceField(
        choices=POLICIES,
        required=False,
        help_text="; ".join(f"{name}: {text}" for name, text in POLICY_HELP.items()) + ". Default mc.",
    )
    num_repeats = StrictIntegerField(required=False, min_value=0, max_value=100_000)
    completions_per_step = StrictIntegerField(required=False, min_value=0, max_value=100_000)
    max_branch_depth = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=100_000)
    skip_uniform = StrictBooleanField(required=False)
    max_children_per_node = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10**9)
    max_rollouts_per_tree = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10**12)
    max_forest_tokens = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=ID_MAX)
    estimate = serializers.ChoiceField(
        choices=ESTIMATES,
        required=False,
        help_text="adaptive: hard (a step is good once a completion from it is correct) or soft (its value, to "
        "precision). Default hard.",
    )
    precision = StrictFloatField(
        required=False,
        min_value=1e-6,
        max_value=1.0,
        help_text="adaptive, soft: a step is decided once its 95% Wilson interval is narrower than this (default 0.2).",
    )
    max_completions_per_step = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=100_000,
        help_text="adaptive: most rollouts through a step (default 8).",
    )
    round_size = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=1000,
        help_text="adaptive: completions asked of a step at a time (default 2).",
    )
    replace = StrictBooleanField(
        required=False, default=False, help_text="Replace a stored plan with other options (else 409)."
    )


class ExpansionClaimSerializer(serializers.Serializer):
    """Body of ``POST /forest/<forest_name>/expansions/claim``."""

    limit = StrictIntegerField(
        required=False, default=16, min_value=1, max_value=CLAIM_LIMIT_MAX, help_text="Most expansions to lease."
    )
    max_rollouts = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=10**6,
        help_text="Stop adding expansions once they ask for this many rollouts (at least one is handed out).",
    )


class ClaimedExpansionSerializer(serializers.Serializer):
    """One leased expansion: generate ``count`` rollouts whose first steps are ``prefix``, then post each with
    ``forest_name``, ``root_id`` and ``expansion_id``."""

    id = serializers.IntegerField(help_text="Send it back as expansion_id.")
    root_id = serializers.IntegerField()
    node_id = serializers.IntegerField(help_text="The node the rollouts continue from (the root for depth 0).")
    depth = serializers.IntegerField(help_text="Steps in prefix.")
    stage = serializers.CharField(help_text="repeats, mc, omega or adaptive.")
    count = serializers.IntegerField(help_text="Rollouts wanted.")
    prompt = serializers.CharField(help_text="The root's prompt (the user message).")
    prefix = serializers.ListField(
        child=serializers.CharField(), help_text="Steps from the root down to the node: the start of the answer."
    )
    ground_truth = serializers.IntegerField(allow_null=True)
    lease_expires_at = serializers.DateTimeField()


class ExpansionClaimResultSerializer(serializers.Serializer):
    expansions = ClaimedExpansionSerializer(many=True)
    done = serializers.BooleanField(help_text="Nothing is queued or leased and every root is planned.")
    reason = serializers.CharField(help_text="Why nothing more is handed out, when a cap stopped it.")
    lease_s = serializers.IntegerField(help_text="Length of a lease (GROWTH_LEASE_S).")


_LEASE_EXPIRES_AT = ClaimedExpansionSerializer().fields["lease_expires_at"]


def claimed_expansion_data(expansion: ClaimedExpansion) -> dict[str, Any]:
    """``ClaimedExpansionSerializer(vars(expansion)).data``, the same values, without building the serializer's
    fields for each expansion (DRF's field-by-field representation cost a claim of 50 more CPU than the answer's
    other work outside the claim itself; ``bench/bench_cost.py``)."""
    return {
        "id": int(expansion.id),
        "root_id": int(expansion.root_id),
        "node_id": int(expansion.node_id),
        "depth": int(expansion.depth),
        "stage": str(expansion.stage),
        "count": int(expansion.count),
        "prompt": str(expansion.prompt),
        "prefix": [None if step is None else str(step) for step in expansion.prefix],
        "ground_truth": None if expansion.ground_truth is None else int(expansion.ground_truth),
        "lease_expires_at": _LEASE_EXPIRES_AT.to_representation(expansion.lease_expires_at),
    }


class ExpansionReleaseSerializer(serializers.Serializer):
    """Body of ``POST /forest/<forest_name>/expansions/release``."""

    ids = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=ID_MAX), max_length=CLAIM_LIMIT_MAX * 10
    )
    failed = StrictBooleanField(
        required=False, default=False, help_text="The worker could not answer (counts as an attempt)."
    )
    error = StrictCharField(required=False, default="", allow_blank=True, max_length=2000)


class GrowthPlanResultSerializer(serializers.Serializer):
    """Answer of ``PUT /forest/<forest_name>/growth``."""

    options = serializers.DictField(help_text="Every option of the plan, the stored ones with the given ones.")
    version = serializers.IntegerField(help_text="The plan's version; it grows when options are replaced.")
    changed = serializers.BooleanField(help_text="Whether this request made or changed the plan.")


class GrowthSummarySerializer(serializers.Serializer):
    """Answer of ``GET /forest/<forest_name>/growth``: the plan and the forest's progress under it."""

    options = serializers.DictField(allow_null=True, help_text="The plan's options; null before the first plan.")
    version = serializers.IntegerField(allow_null=True, help_text="The plan's version; null before the first plan.")
    planned_roots = serializers.IntegerField(help_text="Trees whose expansions have been queued.")
    roots = serializers.IntegerField()
    rollouts = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    tokens = serializers.IntegerField()
    pending_expansions = serializers.IntegerField()
    pending_rollouts = serializers.IntegerField(help_text="Rollouts the pending expansions ask for.")
    leased_expansions = serializers.IntegerField()
    given_up_expansions = serializers.IntegerField()
    rollouts_by_stage = serializers.DictField(child=serializers.IntegerField())
    searches = serializers.DictField(child=serializers.IntegerField(), help_text="Omega searches by status.")
