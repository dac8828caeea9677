"""The rollout and process-reward-label endpoints of spec/active-learning-webserver.md, at the server root."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from prmsite.api import ERROR_RESPONSES, ApiAutoSchema, error_response, exception_handler, json_encode
from prmsite.core.errors import ApplicationError
from prmsite.parsers import BoundedJSONParser, text_problem
from prmsite.permissions import is_token_request
from rollouts import selectors
from rollouts.labels import label_create, label_create_each
from rollouts.models import ProcessRewardLabel, Rollout
from rollouts.queue import checkout_claim_wait, checkout_release
from rollouts.serializers import (
    ProcessRewardLabelBatchResultSerializer,
    ProcessRewardLabelBatchSerializer,
    ProcessRewardLabelCreateSerializer,
    ProcessRewardLabelIdsQuerySerializer,
    ProcessRewardLabelKeysQuerySerializer,
    ProcessRewardLabelSerializer,
    RolloutClaimQuerySerializer,
    RolloutIdsQuerySerializer,
    RolloutReleaseSerializer,
    RolloutSerializer,
)

ID_LIST = {"type": "array", "items": {"type": "integer"}}
ID_RESPONSE = OpenApiResponse(OpenApiTypes.INT, description="Database id, as a bare JSON integer.")
CONFLICT_RESPONSE = error_response("Refused by the labelling rules (`code` says why).")
# Marks an answer of GET /rollout that leased nothing (a browser session previews the queue).
PREVIEW_HEADER = "X-Prmsite-Claim"


def rollout_encode(rollout: Rollout) -> bytes:
    """One rollout as GET /rollout answers it, as JSON bytes."""
    return json_encode(RolloutSerializer(rollout).data)


class ApiView(GenericAPIView):
    """Base of the API's views: the project's defaults (worker token or staff session; bounded JSON) apply."""

    schema = ApiAutoSchema()  # JSON-valued query parameters (keys=[1,2]) described as JSON


class RolloutClaimView(ApiView):
    """Rollouts out: `GET /rollout?prm_version=V` hands out rollouts not yet labelled for V and not checked out for V,
    and checks them out for V for `PRM_CHECKOUT_TIMEOUT_S` seconds (a GET has that side effect, by the
    specification). `POST /rollout` on the same path is the intake's (``forests.intake_api.RolloutView``).
    """

    # No HEAD: Django would answer it with GET, which checks rollouts out, and the caller would never see them.
    http_method_names = ["get", "options"]
    queryset = Rollout.objects.all()  # the browsable API's filter form asks for one; requests never use it

    @extend_schema(
        operation_id="rollout_claim",
        parameters=[RolloutClaimQuerySerializer],
        responses={200: RolloutSerializer(many=True), **ERROR_RESPONSES},
        description="Hand out up to `limit` rollouts not labelled for `prm_version` and not checked out for it; "
        "each is checked out for that version until `PRM_CHECKOUT_TIMEOUT_S` passes or a label is posted. "
        "`wait` long-polls when none is available, then answers `[]`. With `active_learning=True`, rollouts "
        "where the reference PRM's final-step reward (>= 0.5: judged correct) disagrees with the ground truth "
        "(`prediction == ground_truth`) come first, the strongest disagreement first; then rollouts the reference "
        "PRM has not scored; then agreements. The answer holds at most `PRM_CLAIM_MAX_BYTES` of JSON (at least one "
        "rollout). A browser session (the browsable API) previews the queue instead: it leases nothing and the answer "
        f"carries `{PREVIEW_HEADER}: preview`; only token callers claim.",
    )
    def get(self, request: Request) -> HttpResponse:
        query = RolloutClaimQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        claim = {
            "prm_version": params["prm_version"],
            "limit": params["limit"],
            "active_learning": params["active_learning"],
            "reference_prm_version": params.get("reference_prm_version"),
        }
        if not is_token_request(request):
            # A person browsing (or a link opened in a logged-in browser) must not check rollouts out.
            rollouts = selectors.rollout_claim_preview(now=timezone.now(), **claim)
            return Response(RolloutSerializer(rollouts, many=True).data, headers={PREVIEW_HEADER: "preview"})
        result = checkout_claim_wait(
            wait_s=params["wait"],
            claimed_by=request.user.get_username(),
            encode=rollout_encode,
            max_bytes=settings.PRM_CLAIM_MAX_BYTES,
            **claim,
        )
        # Rendered inside the claim's transaction: leases are never written for an answer that cannot be sent.
        return HttpResponse(result.body, content_type="application/json")


class RolloutReleaseView(ApiView):
    """Give leases back (`POST /rollout/release`): a worker that stops hands its unfinished rollouts to others at once
    instead of leaving them leased until `PRM_CHECKOUT_TIMEOUT_S` passes."""

    serializer_class = RolloutReleaseSerializer

    @extend_schema(
        operation_id="rollout_release",
        request=RolloutReleaseSerializer,
        responses={
            200: OpenApiResponse(OpenApiTypes.INT, description="How many leases were ended."),
            **ERROR_RESPONSES,
        },
        description="End the caller's leases of these rollouts for `prm_version`; leases held by others are left "
        "alone. Answers how many were ended, as a bare JSON integer.",
    )
    def post(self, request: Request) -> Response:
        body = RolloutReleaseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        released = checkout_release(**body.validated_data, claimed_by=request.user.get_username())
        return Response(released)


class RolloutListView(ApiView):
    """Rollouts by id (`GET /rollouts?ids=[1,2]`), without checking them out: for the training loop, which reads the
    rollouts its labels belong to."""

    queryset = Rollout.objects.all()  # for the browsable API only

    @extend_schema(
        operation_id="rollout_list",
        parameters=[RolloutIdsQuerySerializer],
        responses={
            200: RolloutSerializer(many=True),
            404: error_response("Some ids name no rollout (listed in `missing`)."),
            **ERROR_RESPONSES,
        },
        description="The rollouts with these ids, in the order of `ids`, in the format GET /rollout answers. Reading "
        "leases nothing.",
    )
    def get(self, request: Request) -> Response:
        query = RolloutIdsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rollouts = selectors.rollouts_get_many(ids=query.validated_data["ids"])
        return Response(RolloutSerializer(rollouts, many=True).data)


class ProcessRewardLabelView(ApiView):
    """Process reward labels.

    `POST /process_reward_label` stores a label (one value per reasoning step) and ends the rollout's checkout for
    that prm_version. `GET /process_reward_label?keys=[1,2]` returns labels by id.
    """

    serializer_class = ProcessRewardLabelCreateSerializer
    queryset = ProcessRewardLabel.objects.all()  # for the browsable API only

    @extend_schema(
        operation_id="process_reward_label_create",
        request=ProcessRewardLabelCreateSerializer,
        responses={
            200: ID_RESPONSE,
            404: error_response("Unknown rollout id."),
            409: CONFLICT_RESPONSE,
            422: error_response("prm_output does not have one value per reasoning step of the rollout."),
            **ERROR_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "PRM",
                request_only=True,
                value={"rollout_id": 1, "prm_output": [0.91, 0.12], "prm_version": "prm-v3", "worker": "prm-gpu-0"},
            ),
            OpenApiExample(
                "AI labeller",
                request_only=True,
                value={
                    "rollout_id": 1,
                    "prm_output": [1, 0],
                    "prm_version": "labeller-v1",
                    "worker": "labeller-2",
                    "explanations": ["Correct fact.", "Wrong conclusion."],
                },
            ),
        ],
        description="Store a label; answer its id as a bare JSON integer and delete the rollout's checkout for "
        "`prm_version`. `prm_output` has exactly one value per reasoning step. The first label of a rollout for a "
        "version wins: posting the same label again (same account, rollout, prm_version, worker and content) answers "
        "the existing id and stores nothing; other content from that worker (`code` conflict), a label after another "
        "worker's (`already_labelled`, with its `id`) and a label of a rollout checked out by another caller "
        "(`leased`, with `expires_at`) are refused with 409. `worker` names a worker of the calling account (the "
        "token's user, stored as the label's `labelled_by`), never another account or a person.",
    )
    def post(self, request: Request) -> Response:
        serializer = ProcessRewardLabelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label, _created = label_create(**serializer.validated_data, labelled_by=request.user.get_username())
        return Response(label.pk)

    @extend_schema(
        operation_id="process_reward_label_list",
        parameters=[ProcessRewardLabelKeysQuerySerializer],
        responses={
            200: ProcessRewardLabelSerializer(many=True),
            404: error_response("Some keys name no label (listed in `missing`)."),
            **ERROR_RESPONSES,
        },
        description="The labels with these ids, in the order of `keys`, in the POST format plus `id`.",
    )
    def get(self, request: Request) -> Response:
        query = ProcessRewardLabelKeysQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        labels = selectors.labels_get_many(ids=query.validated_data["keys"])
        return Response(ProcessRewardLabelSerializer(labels, many=True).data)


class ProcessRewardLabelIdsView(ApiView):
    """Ids of the process reward labels of one prm_version (`GET /process_reward_labels?prm_version=V`)."""

    queryset = ProcessRewardLabel.objects.all()  # for the browsable API only

    @extend_schema(
        operation_id="process_reward_label_ids",
        parameters=[ProcessRewardLabelIdsQuerySerializer],
        responses={200: OpenApiResponse(ID_LIST, description="List of label ids."), **ERROR_RESPONSES},
        description="Ids of every label given under `prm_version`, oldest first.",
    )
    def get(self, request: Request) -> Response:
        query = ProcessRewardLabelIdsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.label_ids_for_version(prm_version=query.validated_data["prm_version"]))


class ProcessRewardLabelBatchParser(BoundedJSONParser):
    """The bounded JSON parser of ``POST /process_reward_label/batch``: the body's envelope is checked as any body is,
    each label by the view, so that one label holding text no database stores (a NUL, a lone surrogate) is refused
    alone."""

    def unstorable(self, parsed: Any) -> str | None:
        if isinstance(parsed, dict) and isinstance(parsed.get("labels"), list):
            return text_problem({key: value for key, value in parsed.items() if key != "labels"})
        return text_problem(parsed)


class ProcessRewardLabelBatchView(ApiView):
    """Store many process reward labels in one request (PRM inference controllers and AI labellers post what they
    scored in batches)."""

    serializer_class = ProcessRewardLabelBatchSerializer
    parser_classes = [ProcessRewardLabelBatchParser]

    @extend_schema(
        operation_id="process_reward_label_create_batch",
        request=ProcessRewardLabelBatchSerializer,
        responses={
            200: OpenApiResponse(
                ProcessRewardLabelBatchResultSerializer,
                description='`{"results": [...]}`, one per label in order: `{"id": 12}` when stored (or stored before: '
                'the same label again), else `{"detail", "code", "status", "errors"?}` as POST /process_reward_label '
                "would have answered (a 409 names the stored label's `id` too; a refusal always has `status`).",
            ),
            **ERROR_RESPONSES,
        },
        examples=[
            OpenApiExample(
                "PRM",
                request_only=True,
                value={
                    "labels": [
                        {"rollout_id": 1, "prm_output": [0.91, 0.12], "prm_version": "prm-v3", "worker": "prm-gpu-0"},
                        {"rollout_id": 2, "prm_output": [0.4], "prm_version": "prm-v3", "worker": "prm-gpu-0"},
                    ]
                },
            ),
            OpenApiExample(
                "answer",
                response_only=True,
                value={
                    "results": [
                        {"id": 41},
                        {
                            "detail": "Rollout 2 is already labelled for prm_version 'prm-v3' (label 7 by "
                            "'prm-gpu-1'); the first label wins.",
                            "code": "already_labelled",
                            "id": 7,
                            "status": 409,
                        },
                    ]
                },
            ),
        ],
        description="Each label is checked and stored exactly as `POST /process_reward_label` would store it (one "
        "value per step, the first label of a rollout for a version wins, the same label again answers the stored "
        "id, a label ends the caller's checkout, a rollout leased to another caller is refused), in its own "
        "transaction and in order: one refused label (text no database stores, such as a NUL, included) does not "
        "keep the others out, and a label sees those before it in the batch. At most PROCESS_REWARD_LABEL_BATCH_MAX "
        'labels per request (500 by default); a body that is not `{"labels": [objects]}` is refused whole (400).',
    )
    def post(self, request: Request) -> Response:
        body = ProcessRewardLabelBatchSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        outcomes: list[dict[str, Any] | None] = []
        valid: list[dict[str, Any]] = []
        for index, item in enumerate(body.validated_data["labels"]):
            # Depth 2: the label sits at body.labels[index], so nesting is bounded as in any other body.
            if problem := text_problem(item, where=f"labels[{index}]", depth=2):
                outcomes.append(_refusal(ParseError(problem), request))
                continue
            fields = ProcessRewardLabelCreateSerializer(data=item)
            if not fields.is_valid():
                outcomes.append(_refusal(ValidationError(fields.errors), request))
                continue
            outcomes.append(None)
            valid.append(fields.validated_data)
        stored = iter(label_create_each(valid, labelled_by=request.user.get_username()))
        results = [outcome if outcome is not None else _label_outcome(next(stored), request) for outcome in outcomes]
        return Response({"results": results})


def _label_outcome(stored: tuple[ProcessRewardLabel, bool] | ApplicationError, request: Request) -> dict[str, Any]:
    """One label's entry in the batch's answer: its id, or what ``POST /process_reward_label`` would have answered."""
    if isinstance(stored, ApplicationError):
        return _refusal(stored, request)
    label, _created = stored
    return {"id": label.pk}


def _refusal(exc: Exception, request: Request) -> dict[str, Any]:
    """The body and status the project's exception handler gives ``exc``, as one entry of a batch's answer."""
    response = exception_handler(exc, {"request": request})
    return {**response.data, "status": response.status_code}
