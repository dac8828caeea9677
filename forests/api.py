"""The forest-growth endpoints (additive to spec/active-learning-webserver.md) and ``POST /rollout/batch``.

A rollout worker in forest mode reads the forest's generation settings, states the growth plan it runs, leases
expansions (a node of a tree plus the steps from its root), and posts what it generated with ``expansion_id``.
Every endpoint needs a worker token (or a staff session) and answers errors as ``{"detail", "code", …}``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from forests import growth_selectors, growth_services
from forests.api_serializers import (
    ExpansionClaimResultSerializer,
    ExpansionClaimSerializer,
    ExpansionReleaseSerializer,
    ForestConfigSerializer,
    GrowthPlanResultSerializer,
    GrowthPlanSerializer,
    GrowthSummarySerializer,
    RolloutBatchResultSerializer,
    RolloutBatchSerializer,
)
from forests.models import Forest, Node
from forests.selectors import forest_get
from prmsite.api import (
    ERROR_RESPONSES,
    ApiAutoSchema,
    BoundedJSONParser,
    IsWorkerOrStaff,
    error_response,
    text_problem,
)
from prmsite.core.errors import ApplicationError
from rollouts.serializers import RolloutCreateSerializer

NOT_FOUND = {404: error_response("No forest of that name, or no growth plan yet.")}


class RolloutBatchParser(BoundedJSONParser):
    """The bounded JSON parser of ``POST /rollout/batch``: the body's envelope is checked as any body is, each rollout
    by the view, so that one rollout holding text no database stores (a NUL, a lone surrogate) is refused alone."""

    def unstorable(self, parsed: Any) -> str | None:
        if isinstance(parsed, dict) and isinstance(parsed.get("rollouts"), list):
            return text_problem({key: value for key, value in parsed.items() if key != "rollouts"})
        return text_problem(parsed)


class GrowthApiView(GenericAPIView):
    schema = ApiAutoSchema()
    permission_classes = [IsWorkerOrStaff]
    parser_classes = [BoundedJSONParser]


class ForestConfigView(GrowthApiView):
    """The generation settings of a forest, as seeded: what `rollout_worker --forest_name` runs with."""

    serializer_class = ForestConfigSerializer

    @extend_schema(
        operation_id="forest_config", responses={200: ForestConfigSerializer, **NOT_FOUND, **ERROR_RESPONSES}
    )
    def get(self, request: Request, forest_name: str) -> Response:
        forest = forest_get(name=forest_name)
        plan = growth_selectors.growth_plan_get(forest=forest)
        data = {
            "forest_name": forest.name,
            "rollout_config": forest.rollout_config,
            "trees": Node.objects.filter(forest=forest, depth=0).count(),
            "growth": plan.options if plan else None,
        }
        return Response(ForestConfigSerializer(data).data)


class GrowthView(GrowthApiView):
    """A forest's growth plan: `PUT` states the options a worker runs with, `GET` shows the plan and its progress."""

    serializer_class = GrowthPlanSerializer
    # What OPTIONS and the browsable API look the forest up with to describe the PUT form (DRF asks the view for the
    # object a PUT would change); the handlers themselves read the forest by name.
    queryset = Forest.objects.all()
    lookup_field = "name"
    lookup_url_kwarg = "forest_name"

    @extend_schema(
        operation_id="forest_growth",
        responses={
            200: GrowthSummarySerializer,
            **NOT_FOUND,
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request, forest_name: str) -> Response:
        forest = forest_get(name=forest_name)
        return Response(growth_selectors.forest_growth_summary(forest=forest, now=timezone.now()).as_dict())

    @extend_schema(
        operation_id="forest_growth_set",
        request=GrowthPlanSerializer,
        responses={
            200: GrowthPlanResultSerializer,
            409: error_response("Other options are stored (carries `stored`)."),
            **NOT_FOUND,
            **ERROR_RESPONSES,
        },
        examples=[OpenApiExample("mc", request_only=True, value={"policy": "mc", "num_repeats": 4})],
        description="Make sure the forest is grown with these options; omitted ones keep their stored value (or "
        "their default for a new plan). Different options than the stored ones are a 409 unless `replace` is true; "
        "replacing keeps the old options in the plan's history and plans every tree again.",
    )
    def put(self, request: Request, forest_name: str) -> Response:
        body = GrowthPlanSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        given = dict(body.validated_data)
        replace = given.pop("replace", False)
        plan, changed = growth_services.growth_plan_set(
            forest_name=forest_name, given=given, replace=replace, by=request.user.get_username(), now=timezone.now()
        )
        return Response({"options": plan.options, "version": plan.version, "changed": changed})


class ExpansionClaimView(GrowthApiView):
    """Lease expansions of a forest: each one is handed to nobody else until its lease ends or it is answered."""

    serializer_class = ExpansionClaimSerializer

    @extend_schema(
        operation_id="expansion_claim",
        request=ExpansionClaimSerializer,
        responses={200: ExpansionClaimResultSerializer, **NOT_FOUND, **ERROR_RESPONSES},
        description="Lease up to `limit` queued expansions (fewer once they ask for `max_rollouts` rollouts) for "
        "GROWTH_LEASE_S seconds. Generate `count` rollouts for each, whose first steps are `prefix`, and post each "
        "(POST /rollout or /rollout/batch) with `forest_name`, `root_id` and `expansion_id`; the last one ends the "
        "lease. `done` is true when nothing is queued or leased and every root is planned.",
    )
    def post(self, request: Request, forest_name: str) -> Response:
        body = ExpansionClaimSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = growth_services.expansion_claim(
            forest_name=forest_name,
            claimed_by=request.user.get_username(),
            now=timezone.now(),
            limit=body.validated_data["limit"],
            max_rollouts=body.validated_data.get("max_rollouts"),
        )
        data = {
            "expansions": [vars(e) for e in result.expansions],
            "done": result.done,
            "reason": result.reason,
            "lease_s": settings.GROWTH_LEASE_S,
        }
        return Response(ExpansionClaimResultSerializer(data).data)


class ExpansionReleaseView(GrowthApiView):
    """End the caller's leases on expansions it will not answer (a worker shutting down, or one that failed)."""

    serializer_class = ExpansionReleaseSerializer

    @extend_schema(
        operation_id="expansion_release",
        request=ExpansionReleaseSerializer,
        responses={
            200: inline_serializer("ExpansionReleaseResult", {"released": serializers.IntegerField()}),
            **NOT_FOUND,
            **ERROR_RESPONSES,
        },
        description="Make the caller's live leases on `ids` claimable again at once. With `failed`, the attempt "
        "counts (and `error` is kept): after GROWTH_MAX_ATTEMPTS the expansion is given up.",
    )
    def post(self, request: Request, forest_name: str) -> Response:
        body = ExpansionReleaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        released = growth_services.expansion_release(
            forest_name=forest_name,
            ids=body.validated_data["ids"],
            released_by=request.user.get_username(),
            now=timezone.now(),
            failed=body.validated_data["failed"],
            error=body.validated_data["error"],
        )
        return Response({"released": released})


def _error_of(exc: ApplicationError) -> dict[str, Any]:
    return {"detail": exc.message, "code": exc.code, "status": exc.status_code, **exc.extra}


class RolloutBatchView(GrowthApiView):
    """Store many rollouts in one request (rollout workers post what they generated in batches)."""

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
        results: list[dict[str, Any]] = []
        for index, item in enumerate(body.validated_data["rollouts"]):
            # Depth 2: the rollout sits at body.rollouts[index], so nesting is bounded as in any other body.
            if problem := text_problem(item, where=f"rollouts[{index}]", depth=2):
                results.append({"detail": problem, "code": "invalid", "status": 400})
                continue
            fields = RolloutCreateSerializer(data=item)
            if not fields.is_valid():
                results.append(
                    {"detail": "Invalid rollout.", "code": "invalid", "status": 400, "errors": fields.errors}
                )
                continue
            try:
                with transaction.atomic():
                    rollout = growth_services.rollout_receive(
                        **fields.validated_data, answered_by=request.user.get_username()
                    )
            except ApplicationError as exc:
                results.append(_error_of(exc))
                continue
            results.append({"id": rollout.pk})
        return Response({"results": results})
