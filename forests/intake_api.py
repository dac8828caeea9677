"""The intake's HTTP entry points: ``POST /rollout`` and ``POST /rollout/batch``, both through
``forests.intake.receive_rollout``; their refusals take the shape of the project's one exception handler
(``prmsite.api.exception_handler``). ``GET /rollout``, on the same path as ``POST /rollout``, is the lease queue's
(``rollouts.views.RolloutClaimView``, which ``RolloutView`` extends).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from forests.intake import receive_rollout, receive_rollouts
from forests.intake_serializers import RolloutBatchResultSerializer, RolloutBatchSerializer, RolloutCreateSerializer
from prmsite.api import ERROR_RESPONSES, ApiAutoSchema, error_response, exception_handler
from prmsite.core.errors import ApplicationError
from prmsite.parsers import BoundedJSONParser, text_problem
from prmsite.permissions import IsWorkerOrStaff
from rollouts.models import Rollout
from rollouts.views import ID_RESPONSE, RolloutClaimView

BATCH_ITEM_INVALID = "Invalid rollout."


class RolloutBatchParser(BoundedJSONParser):
    """The bounded JSON parser of ``POST /rollout/batch``: the body's envelope is checked as any body is, each rollout
    by the view, so that one rollout holding text no database stores (a NUL, a lone surrogate) is refused alone."""

    def unstorable(self, parsed: Any) -> str | None:
        if isinstance(parsed, dict) and isinstance(parsed.get("rollouts"), list):
            return text_problem({key: value for key, value in parsed.items() if key != "rollouts"})
        return text_problem(parsed)


class RolloutView(RolloutClaimView):
    """Rollouts.

    `POST /rollout` stores a rollout and answers its id. `GET /rollout?prm_version=V` hands out rollouts not yet
    labelled for V and not checked out for V, and checks them out for V for `PRM_CHECKOUT_TIMEOUT_S` seconds
    (a GET has that side effect, by the specification).
    """

    serializer_class = RolloutCreateSerializer
    # No HEAD: Django would answer it with GET, which checks rollouts out, and the caller would never see them.
    http_method_names = ["get", "post", "options"]

    @extend_schema(
        operation_id="rollout_create",
        request=RolloutCreateSerializer,
        responses={
            200: ID_RESPONSE,
            404: error_response("Unknown forest or root."),
            409: error_response("idempotency_key reused with other content."),
            413: error_response("Too many steps or too much text."),
            422: error_response(
                "The rollout contradicts its forest: its example names no tree (or several, or not root_id's), its "
                "ground_truth is not the tree's, or expansion_id is another forest's or off its path."
            ),
            **ERROR_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "rollout",
                request_only=True,
                value={
                    "model": "llama-3-8b-instruct",
                    "example": "Is the sky green?",
                    "reasoning": ["Step 1: the sky is blue. ", "Verdict: False (code: 0)"],
                    "prediction": 0,
                    "ground_truth": 0,
                    "worker": "rollout-worker-17",
                },
            )
        ],
        description="Store a rollout; answer its id as a bare JSON integer. Fields beyond the documented ones are "
        "kept and returned by GET. With `forest_name` (and optionally `root_id`) the rollout is also inserted into "
        "that forest's trie; if the forest refuses it, nothing is stored. With `idempotency_key`, the same rollout "
        "posted again answers the first id (409 if the key comes with other content). At most "
        "`PRM_ROLLOUT_MAX_STEPS` steps and `PRM_ROLLOUT_MAX_CHARS` characters of reasoning (413 beyond).",
    )
    def post(self, request: Request) -> Response:
        serializer = RolloutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rollout = receive_rollout(**serializer.validated_data, answered_by=request.user.get_username())
        return Response(rollout.pk)


class RolloutBatchView(GenericAPIView):
    """Store many rollouts in one request (rollout workers post what they generated in batches)."""

    schema = ApiAutoSchema()
    permission_classes = [IsWorkerOrStaff]
    serializer_class = RolloutBatchSerializer
    parser_classes = [RolloutBatchParser]

    @extend_schema(
        operation_id="rollout_create_batch",
        request=RolloutBatchSerializer,
        responses={
            200: OpenApiResponse(
                RolloutBatchResultSerializer,
                description='`{"results": [...]}`, one per rollout in order: `{"id": 12}` when stored (or already '
                'stored under its idempotency_key), else `{"detail", "code", "status", "errors"?}`.',
            ),
            **ERROR_RESPONSES,
        },
        description="Each rollout is validated and stored exactly as `POST /rollout` would (forest insertion, "
        "`expansion_id`, `idempotency_key`), in its own transaction: one refused rollout (text no database stores, "
        "such as a NUL, included) does not keep the others out. At most ROLLOUT_BATCH_MAX rollouts per request.",
    )
    def post(self, request: Request) -> Response:
        body = RolloutBatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcomes: list[dict[str, Any] | None] = []
        valid: list[dict[str, Any]] = []
        # One serializer checks every rollout: making one per rollout deep-copied its fields each time, a third of
        # the batch's CPU. ``run_validation`` is what ``is_valid`` runs; ``validate`` reads ``initial_data``.
        fields = RolloutCreateSerializer()
        for index, item in enumerate(body.validated_data["rollouts"]):
            # Depth 2: the rollout sits at body.rollouts[index], so nesting is bounded as in any other body.
            if problem := text_problem(item, where=f"rollouts[{index}]", depth=2):
                outcomes.append({"detail": problem, "code": "invalid", "status": 400})
                continue
            fields.initial_data = item
            try:
                validated = fields.run_validation(item)
            except ValidationError as exc:
                outcomes.append({"detail": BATCH_ITEM_INVALID, "code": "invalid", "status": 400, "errors": exc.detail})
                continue
            outcomes.append(None)
            valid.append(validated)
        received = iter(receive_rollouts(valid, answered_by=request.user.get_username()))
        results = [outcome if outcome is not None else _outcome_of(next(received), request) for outcome in outcomes]
        return Response({"results": results})


def _outcome_of(received: Rollout | ApplicationError, request: Request) -> dict[str, Any]:
    """One rollout's entry in the batch's answer: its id, or the body and status the project's exception handler
    gives the error (what ``POST /rollout`` would have answered)."""
    if isinstance(received, Rollout):
        return {"id": received.pk}
    response = exception_handler(received, {"request": request})
    return {**response.data, "status": response.status_code}
