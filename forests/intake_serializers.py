"""Bodies of the intake's endpoints: ``POST /rollout`` and ``POST /rollout/batch``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from forests.intake import FOREST_FIELDS, NEEDS_FOREST
from rollouts.serializers import (
    ID_MAX,
    INT32_MAX,
    INT32_MIN,
    RESERVED_FIELD,
    RESERVED_ROLLOUT_FIELDS,
    StrictCharField,
    StrictIntegerField,
)

NOT_AN_OBJECT = "Every rollout must be a JSON object."
# The longest answer text a rollout may post (graders look at the first ANSWER_MAX_CHARS of it at most).
ANSWER_FIELD_MAX = 10_000
REQUIRED = "This field is required."
# Without an answer, a rollout states its class label: the specification's contract.
LABEL_FIELDS = ("prediction", "ground_truth")


class RolloutCreateSerializer(serializers.Serializer):
    """Body of ``POST /rollout``. Fields beyond the documented ones are kept and returned by ``GET /rollout``."""

    model = StrictCharField(max_length=300, help_text="Model identifier the rollout was generated with.")
    example = StrictCharField(help_text="The example prompt from the dataset.")
    reasoning = serializers.ListField(
        child=StrictCharField(allow_blank=True), min_length=1, help_text="Step-by-step reasoning: a list of strings."
    )
    prediction = StrictIntegerField(
        required=False,
        allow_null=True,
        min_value=INT32_MIN,
        max_value=INT32_MAX,
        help_text="Predicted class label (null: none). May be left out when answer is given.",
    )
    ground_truth = StrictIntegerField(
        required=False,
        min_value=INT32_MIN,
        max_value=INT32_MAX,
        help_text="Ground-truth class label. May be left out when answer is given (a forest's tree knows it).",
    )
    answer = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=ANSWER_FIELD_MAX,
        help_text="The model's final answer as text (\\frac{5}{14}, 72, (3, 4), …), graded against the tree's "
        "reference answer by the forest's answer kind (docs/answers.md). With it, prediction and ground_truth may "
        "be left out.",
    )
    worker = StrictCharField(max_length=200, help_text="Worker identifier, kept as given.")
    forest_name = StrictCharField(
        required=False, max_length=200, help_text="Also insert the rollout into this forest's trie."
    )
    root_id = StrictIntegerField(
        required=False, min_value=1, max_value=ID_MAX, help_text="Root node of the tree (with forest_name)."
    )
    idempotency_key = StrictCharField(
        required=False,
        min_length=1,
        max_length=200,
        help_text="A key the worker makes up for this rollout (e.g. a UUID): posting the same rollout again with it "
        "stores nothing and answers the first id, so a retry after a lost answer is safe.",
    )
    expansion_id = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=ID_MAX,
        help_text="The leased expansion this rollout answers (with forest_name); see "
        "POST /forest/<forest_name>/expansions/claim.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The parser has already refused text no database can store (NUL, lone surrogates) and deep nesting.
        extras = {k: v for k, v in self.initial_data.items() if k not in self.fields}
        errors = {name: [RESERVED_FIELD.format(name=name)] for name in extras if name in RESERVED_ROLLOUT_FIELDS}
        if "forest_name" not in attrs:
            errors.update({name: [NEEDS_FOREST.format(name=name)] for name in FOREST_FIELDS if name in attrs})
        if "answer" not in attrs:
            errors.update({name: [REQUIRED] for name in LABEL_FIELDS if name not in attrs})
        if errors:
            raise serializers.ValidationError(errors)
        attrs["attributes"] = extras
        return attrs


class RolloutCreateSchema(OpenApiSerializerExtension):
    """The schema of ``RolloutCreateSerializer``, with the rules its ``validate`` enforces across fields: ``root_id``
    and ``expansion_id`` come with ``forest_name``; ``prediction`` and ``ground_truth`` are required unless an
    ``answer`` is given."""

    target_class = "forests.intake_serializers.RolloutCreateSerializer"

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        # (forest_name, or none of the forest fields) and (the label fields, or an answer), as one anyOf.
        without_forest_fields = {"not": {"anyOf": [{"required": [name]} for name in FOREST_FIELDS]}}
        schema["anyOf"] = [
            {"required": ["forest_name", *LABEL_FIELDS]},
            {"required": ["forest_name", "answer"]},
            {"required": list(LABEL_FIELDS), **without_forest_fields},
            {"required": ["answer"], **without_forest_fields},
        ]
        return schema


@extend_schema_field({"type": "object", "additionalProperties": True})
class RolloutBatchItemField(serializers.JSONField):
    """One rollout of a batch: any JSON object; its fields are checked one rollout at a time, as POST /rollout checks
    them, and a rollout refused there is reported in the answer instead of refusing the batch."""


class RolloutBatchSerializer(serializers.Serializer):
    """Body of ``POST /rollout/batch``: rollouts in the body format of ``POST /rollout``."""

    rollouts = serializers.ListField(
        child=RolloutBatchItemField(),
        min_length=1,
        max_length=settings.ROLLOUT_BATCH_MAX,
        help_text="POST /rollout bodies, each checked on its own (see the answer's results).",
    )

    def validate_rollouts(self, value: list[Any]) -> list[Any]:
        if len(value) > settings.ROLLOUT_BATCH_MAX:  # the setting may have changed since the field was made
            raise serializers.ValidationError(f"At most {settings.ROLLOUT_BATCH_MAX} rollouts per batch.")
        if not all(isinstance(item, dict) for item in value):
            raise serializers.ValidationError(NOT_AN_OBJECT)
        return value


class RolloutBatchOutcomeSerializer(serializers.Serializer):
    """One rollout's outcome in ``POST /rollout/batch``: ``id`` when stored, else the error shape and ``status``."""

    id = serializers.IntegerField(required=False, help_text="Stored (or already stored under its idempotency_key).")
    detail = serializers.CharField(required=False)
    code = serializers.CharField(required=False)
    status = serializers.IntegerField(required=False, help_text="The status POST /rollout would have answered.")
    errors = serializers.DictField(required=False)


class RolloutBatchResultSerializer(serializers.Serializer):
    results = RolloutBatchOutcomeSerializer(many=True, help_text="One per rollout, in order.")
