"""The rollout and process-reward-label endpoints of spec/active-learning-webserver.md, at the server root."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from forests.growth_services import rollout_receive
from prmsite.api import ERROR_RESPONSES, BoundedJSONParser, IsWorkerOrStaff
from rollouts import selectors, services
from rollouts.models import ProcessRewardLabel, Rollout
from rollouts.serializers import (
    ProcessRewardLabelCreateSerializer,
    ProcessRewardLabelIdsQuerySerializer,
    ProcessRewardLabelKeysQuerySerializer,
    ProcessRewardLabelSerializer,
    RolloutClaimQuerySerializer,
    RolloutCreateSerializer,
    RolloutSerializer,
)

ID_LIST = {"type": "array", "items": {"type": "integer"}}
ID_RESPONSE = OpenApiResponse(OpenApiTypes.INT, description="Database id, as a bare JSON integer.")


class ApiView(GenericAPIView):
    permission_classes = [IsWorkerOrStaff]
    parser_classes = [BoundedJSONParser]


class RolloutView(ApiView):
    """Rollouts.

    `POST /rollout` stores a rollout and answers its id. `GET /rollout?prm_version=V` hands out rollouts not yet
    labelled for V and not checked out for V, and checks them out for V for `PRM_CHECKOUT_TIMEOUT_S` seconds
    (a GET has that side effect, by the specification).
    """

    serializer_class = RolloutCreateSerializer
    # No HEAD: Django would answer it with GET, which checks rollouts out, and the caller would never see them.
    http_method_names = ["get", "post", "options"]
    queryset = Rollout.objects.all()  # the browsable API's filter form asks for one; requests never use it

    @extend_schema(
        operation_id="rollout_create",
        request=RolloutCreateSerializer,
        responses={200: ID_RESPONSE, 404: OpenApiResponse(description="Unknown forest or root."), **ERROR_RESPONSES},
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
        "that forest's trie; if the forest refuses it, nothing is stored.",
    )
    def post(self, request: Request) -> Response:
        serializer = RolloutCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        rollout = rollout_receive(**serializer.validated_data)  # rollout_create plus forest-growth bookkeeping
        return Response(rollout.pk)

    @extend_schema(
        operation_id="rollout_claim",
        parameters=[RolloutClaimQuerySerializer],
        responses={200: RolloutSerializer(many=True), **ERROR_RESPONSES},
        description="Hand out up to `limit` rollouts not labelled for `prm_version` and not checked out for it; "
        "each is checked out for that version until `PRM_CHECKOUT_TIMEOUT_S` passes or a label is posted. "
        "`wait` long-polls when none is available, then answers `[]`. With `active_learning=True`, rollouts "
        "where the reference PRM's final-step reward (>= 0.5: judged correct) disagrees with the ground truth "
        "(`prediction == ground_truth`) come first, the strongest disagreement first; then rollouts the reference "
        "PRM has not scored; then agreements.",
    )
    def get(self, request: Request) -> Response:
        query = RolloutClaimQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        rollouts = services.checkout_claim_wait(
            wait_s=params["wait"],
            prm_version=params["prm_version"],
            claimed_by=request.user.get_username(),
            limit=params["limit"],
            active_learning=params["active_learning"],
            reference_prm_version=params.get("reference_prm_version"),
        )
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
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="Unknown rollout id."),
            409: OpenApiResponse(
                OpenApiTypes.OBJECT, description="This worker labelled this rollout for this version differently."
            ),
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
        "`prm_version`. `prm_output` has exactly one value per reasoning step. Posting the same label again (same "
        "rollout, prm_version, worker and content) answers the existing id and stores nothing.",
    )
    def post(self, request: Request) -> Response:
        serializer = ProcessRewardLabelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        label, _created = services.label_create(**serializer.validated_data)
        return Response(label.pk)

    @extend_schema(
        operation_id="process_reward_label_list",
        parameters=[ProcessRewardLabelKeysQuerySerializer],
        responses={
            200: ProcessRewardLabelSerializer(many=True),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="Some keys name no label (listed in `missing`)."),
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
