"""Request and response shapes of the rollout and label endpoints (spec/active-learning-webserver.md).

Input is typed strictly: a string where a string is documented, an integer where an integer is (``"3"``, ``3.0`` and
``true`` are refused), and text is kept exactly as given (no whitespace trimming: steps join back losslessly).
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from prmsite.api import JSON_QUERY
from rollouts.labels import reward_is_finite
from rollouts.models import ProcessRewardLabel, Rollout
from rollouts.queue import CLAIM_LIMIT_DEFAULT, CLAIM_LIMIT_MAX

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
ID_MAX = 2**63 - 1
# Ids per GET /process_reward_label?keys=… and GET /rollouts?ids=… (the URL must stay under the server's limit, 64 KiB).
KEYS_MAX = 1000
IDS_MAX = 1000

NOT_A_STRING = "Must be a string."
NOT_AN_INTEGER = "Must be an integer."
NOT_A_NUMBER = "Must be a finite number."
RESERVED_FIELD = "{name!r} is set by the server and cannot be posted."
ID_LIST_MALFORMED = "{name} must be a JSON list of ids, for example {name}=[1,2,3]."
ID_LIST_TOO_LONG = "At most {max} {name} per request; ask in batches."
LABEL_NOT_AN_OBJECT = "Every label must be a JSON object."
LABEL_BATCH_TOO_LONG = "At most {max} labels per batch."

# Names an extra posted field may not take: they are columns or fields the server sets.
RESERVED_ROLLOUT_FIELDS = frozenset(
    {
        "id",
        "attributes",
        "created_at",
        "forest",
        "node",
        "forest_id",
        "node_id",
        "idempotency_key",
        "correct",
        "verdict_reason",
    }
)


class StrictCharField(serializers.CharField):
    """A string, only a string, kept exactly as given (no trimming)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        if not kwargs.get("allow_blank", False):
            kwargs.setdefault("min_length", 1)  # "" is refused as blank: the schema says so (minLength)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)

    default_error_messages = {"not_a_string": NOT_A_STRING}


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a bool, a float or a numeric string)."""

    default_error_messages = {"not_an_integer": NOT_AN_INTEGER}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("not_an_integer")
        return super().to_internal_value(data)


@extend_schema_field({"type": "number", "description": "A float from a PRM, or 0/1/2 from an AI labeller."})
class RewardField(serializers.Field):
    """One per-step value: a float from a PRM, 0/1/2 (not preferred/preferred/neutral) from an AI labeller."""

    default_error_messages = {"not_a_number": NOT_A_NUMBER}

    def to_internal_value(self, data: Any) -> float | int:
        if not reward_is_finite(data):
            self.fail("not_a_number")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class RolloutSerializer(serializers.Serializer):
    """A rollout as ``GET /rollout`` returns it: every posted field (extra ones too) plus ``id``."""

    id = serializers.IntegerField(help_text="Rollout database id.")
    model = serializers.CharField()
    example = serializers.CharField()
    reasoning = serializers.ListField(child=serializers.CharField())
    prediction = serializers.IntegerField(allow_null=True)
    ground_truth = serializers.IntegerField(
        allow_null=True, help_text="Null only for a rollout posted with an answer and no class label."
    )
    answer = serializers.CharField(allow_null=True, help_text="The model's final answer as text (label: prediction).")
    correct = serializers.BooleanField(help_text="The grader's verdict, decided once when the rollout was stored.")
    verdict_reason = serializers.CharField(
        allow_blank=True, help_text="Why the grader said not correct without deciding (empty: it decided)."
    )
    worker = serializers.CharField()
    forest_name = serializers.CharField(required=False, help_text="Only for a rollout posted with forest_name.")
    root_id = serializers.IntegerField(required=False, help_text="Only for a rollout posted with forest_name.")

    def to_representation(self, instance: Rollout) -> dict[str, Any]:
        data: dict[str, Any] = dict(instance.attributes or {})
        data.update(
            id=instance.pk,
            model=instance.model,
            example=instance.example,
            reasoning=instance.reasoning,
            prediction=instance.prediction,
            ground_truth=instance.ground_truth,
            answer=instance.answer,
            correct=instance.correct,
            verdict_reason=instance.verdict_reason,
            worker=instance.worker,
        )
        if instance.forest_id is not None:
            data["forest_name"] = instance.forest.name
        if instance.node_id is not None:
            data["root_id"] = instance.node.tree_id
        return data


class RolloutClaimQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /rollout``."""

    prm_version = serializers.CharField(
        min_length=1,
        max_length=200,
        trim_whitespace=False,
        help_text="PRM version (or labelling-scheme version) to label for.",
    )
    limit = serializers.IntegerField(
        default=CLAIM_LIMIT_DEFAULT,
        min_value=1,
        max_value=CLAIM_LIMIT_MAX,
        help_text=f"How many rollouts to hand out at most (default {CLAIM_LIMIT_DEFAULT}, max {CLAIM_LIMIT_MAX}).",
    )
    wait = serializers.FloatField(
        default=0.0,
        min_value=0.0,
        max_value=settings.PRM_CHECKOUT_WAIT_MAX_S,
        help_text="Seconds to wait for a rollout when none is available (long-poll); then `[]`. "
        "Default 0; at most PRM_CHECKOUT_WAIT_MAX_S (60).",
    )
    active_learning = serializers.BooleanField(
        default=False,
        help_text="Order by disagreement between the reference PRM and the ground truth (disagreements first).",
    )
    reference_prm_version = serializers.CharField(
        required=False,
        min_length=1,
        max_length=200,
        trim_whitespace=False,
        help_text="PRM version whose rewards active learning compares with the ground truth "
        "(default: the most recently uploaded adapter's prm_version other than prm_version).",
    )

    def validate_wait(self, value: float) -> float:
        if not math.isfinite(value):
            raise serializers.ValidationError(NOT_A_NUMBER)
        if value > settings.PRM_CHECKOUT_WAIT_MAX_S:
            raise serializers.ValidationError(f"Ensure this value is at most {settings.PRM_CHECKOUT_WAIT_MAX_S}.")
        return value


class ProcessRewardLabelCreateSerializer(serializers.Serializer):
    """Body of ``POST /process_reward_label``."""

    rollout_id = StrictIntegerField(min_value=1, max_value=ID_MAX, help_text="Id of the labelled rollout.")
    prm_output = serializers.ListField(
        child=RewardField(),
        help_text="One value per reasoning step: floats from a PRM; 0 (not preferred), 1 (preferred) or "
        "2 (neutral) from an AI labeller.",
    )
    prm_version = StrictCharField(max_length=200, help_text="PRM version, or labelling-scheme version.")
    worker = StrictCharField(max_length=200, help_text="Worker identifier, kept as given.")
    explanations = serializers.ListField(
        child=StrictCharField(allow_blank=True),
        required=False,
        allow_null=True,
        help_text="Optional explanations (strings), for example one per step.",
    )


@extend_schema_field({"type": "object", "additionalProperties": True})
class ProcessRewardLabelBatchItemField(serializers.JSONField):
    """One label of a batch: any JSON object; its fields are checked one label at a time, as POST
    /process_reward_label checks them, and a label refused there is reported in the answer instead of refusing the
    batch."""


class ProcessRewardLabelBatchSerializer(serializers.Serializer):
    """Body of ``POST /process_reward_label/batch``: labels in the body format of ``POST /process_reward_label``."""

    labels = serializers.ListField(
        child=ProcessRewardLabelBatchItemField(),
        min_length=1,
        max_length=settings.PROCESS_REWARD_LABEL_BATCH_MAX,
        help_text="POST /process_reward_label bodies, each checked and stored on its own (see the answer's results); "
        "at most PROCESS_REWARD_LABEL_BATCH_MAX (500).",
    )

    def validate_labels(self, value: list[Any]) -> list[Any]:
        if len(value) > settings.PROCESS_REWARD_LABEL_BATCH_MAX:  # the setting may have changed since import
            raise serializers.ValidationError(LABEL_BATCH_TOO_LONG.format(max=settings.PROCESS_REWARD_LABEL_BATCH_MAX))
        if not all(isinstance(item, dict) for item in value):
            raise serializers.ValidationError(LABEL_NOT_AN_OBJECT)
        return value


class ProcessRewardLabelBatchOutcomeSerializer(serializers.Serializer):
    """One label's outcome in ``POST /process_reward_label/batch``: ``id`` when stored (or stored before, the same
    label), else the error shape and ``status``: what ``POST /process_reward_label`` would have answered."""

    id = serializers.IntegerField(
        required=False,
        help_text="Stored: the label's id (new, or the same label stored before). A refusal with code `conflict` or "
        "`already_labelled` names the stored label's id too, beside `status`, as POST /process_reward_label does.",
    )
    detail = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    status = serializers.IntegerField(
        required=False, help_text="The status POST /process_reward_label would have answered."
    )
    errors = serializers.DictField(required=False)
    expires_at = serializers.CharField(required=False, help_text="With code `leased`: when the other lease ends.")
    rollout_id = serializers.IntegerField(required=False, help_text="With a 404: the unknown rollout id.")


class ProcessRewardLabelBatchResultSerializer(serializers.Serializer):
    results = ProcessRewardLabelBatchOutcomeSerializer(many=True, help_text="One per label, in order.")


class ProcessRewardLabelSerializer(serializers.ModelSerializer):
    """A label in the format it was posted in, plus ``id``."""

    rollout_id = serializers.IntegerField()
    prm_output = serializers.ListField(child=RewardField())
    explanations = serializers.ListField(child=serializers.CharField(), allow_null=True)

    class Meta:
        model = ProcessRewardLabel
        fields = ["id", "rollout_id", "prm_output", "prm_version", "worker", "explanations"]


class ProcessRewardLabelIdsQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /process_reward_labels``."""

    prm_version = serializers.CharField(
        min_length=1, max_length=200, trim_whitespace=False, help_text="Labels of this version."
    )


def id_list_parse(value: str, *, name: str, limit: int) -> list[int]:
    """A query parameter holding a JSON list of ids (``[1,2,3]``), checked: positive 64-bit integers, at most
    ``limit`` of them."""
    try:
        ids = json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise serializers.ValidationError(ID_LIST_MALFORMED.format(name=name)) from exc
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= ID_MAX for i in ids
    ):
        raise serializers.ValidationError(ID_LIST_MALFORMED.format(name=name))
    if len(ids) > limit:
        raise serializers.ValidationError(ID_LIST_TOO_LONG.format(max=limit, name=name))
    return ids


def id_list_schema(limit: int) -> dict[str, Any]:
    """The OpenAPI schema of a query parameter that ``id_list_parse`` accepts: JSON text of a list of ids."""
    return {
        "type": "array",
        "items": {"type": "integer", "minimum": 1, "maximum": ID_MAX},
        "maxItems": limit,
        JSON_QUERY: True,
    }


@extend_schema_field(id_list_schema(KEYS_MAX))
class LabelKeysField(serializers.CharField):
    """``keys``: a JSON list of label ids."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> list[int]:  # type: ignore[override]
        return id_list_parse(super().to_internal_value(data), name="keys", limit=KEYS_MAX)


@extend_schema_field(id_list_schema(IDS_MAX))
class RolloutIdsField(serializers.CharField):
    """``ids``: a JSON list of rollout ids."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)

    def to_internal_value(self, data: Any) -> list[int]:  # type: ignore[override]
        return id_list_parse(super().to_internal_value(data), name="ids", limit=IDS_MAX)


class ProcessRewardLabelKeysQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /process_reward_label``."""

    keys = LabelKeysField(help_text=f"JSON list of label ids, e.g. `[1,2,3]` (URL-encoded), at most {KEYS_MAX}.")


class RolloutIdsQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /rollouts``."""

    ids = RolloutIdsField(help_text=f"JSON list of rollout ids, e.g. `[1,2,3]` (URL-encoded), at most {IDS_MAX}.")


class RolloutReleaseSerializer(serializers.Serializer):
    """Body of ``POST /rollout/release``."""

    prm_version = StrictCharField(max_length=200, help_text="The version the rollouts were claimed for.")
    rollout_ids = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=ID_MAX),
        max_length=CLAIM_LIMIT_MAX,
        help_text="Ids of rollouts GET /rollout handed to the caller.",
    )
