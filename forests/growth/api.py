"""The forest-growth endpoints (additive to spec/active-learning-webserver.md).

A rollout worker in forest mode reads the forest's generation settings, states the growth plan it runs, leases
expansions (a node of a tree plus the steps from its root), and posts what it generated with ``expansion_id``
(``POST /rollout`` or ``POST /rollout/batch``: ``forests.intake_api``). Every endpoint needs a worker token (or a staff
session) and answers errors as ``{"detail", "code", …}``.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from forests.growth.plan import growth_plan_set
from forests.growth.queue import expansion_claim, expansion_release
from forests.growth.selectors import forest_growth_summary, growth_plan_get
from forests.growth.serializers import (
    ExpansionClaimResultSerializer,
    ExpansionClaimSerializer,
    ExpansionReleaseSerializer,
    ForestConfigSerializer,
    GrowthPlanResultSerializer,
    GrowthPlanSerializer,
    GrowthSummarySerializer,
    claimed_expansion_data,
)
from forests.models import Forest, Node
from forests.selectors import forest_get
from prmsite.api import ERROR_RESPONSES, ApiAutoSchema, error_response
from prmsite.parsers import BoundedJSONParser
from prmsite.permissions import IsWorkerOrStaff

NOT_FOUND = {404: error_response("No forest of that name, or no growth plan yet.")}


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
        plan = growth_plan_get(forest=forest)
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
        return Response(forest_growth_summary(forest=forest, now=timezone.now()).as_dict())

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
        plan, changed = growth_plan_set(
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
        result = expansion_claim(
            forest_name=forest_name,
            claimed_by=request.user.get_username(),
            now=timezone.now(),
            limit=body.validated_data["limit"],
            max_rollouts=body.validated_data.get("max_rollouts"),
        )
        return Response(
            {
                "expansions": [claimed_expansion_data(e) for e in result.expansions],
                "done": bool(result.done),
                "reason": str(result.reason),
                "lease_s": int(settings.GROWTH_LEASE_S),
            }
        )


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
        released = expansion_release(
            forest_name=forest_name,
            ids=body.validated_data["ids"],
            released_by=request.user.get_username(),
            now=timezone.now(),
            failed=body.validated_data["failed"],
            error=body.validated_data["error"],
        )
        return Response({"released": released})
