"""The PRM adapter endpoints of spec/active-learning-webserver.md, at the server root."""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from adapters import selectors, services
from adapters.models import PRMAdapter
from adapters.serializers import (
    PRMAdapterSerializer,
    PRMAdapterUploadQuerySerializer,
    PRMAdapterVersionQuerySerializer,
)
from adapters.storage import ObjectStream
from prmsite.api import ERROR_RESPONSES, ApiAutoSchema, error_response

# Bytes an adapter download reads at a time under ASGI: each read is a hop to a thread and back, so few and large
# (4 KiB reads, FileResponse's own, cost 5x the CPU of the whole download); one chunk is all a download holds.
DOWNLOAD_READ_BYTES = 1024 * 1024


class AdapterBytesRenderer(BaseRenderer):
    """Marks ``application/octet-stream`` as what ``GET /prm_adapter`` answers by default (``Accept: */*``).

    The view answers a file itself for this media type; any other response (an error, the POST's path) is JSON.
    """

    media_type = "application/octet-stream"
    format = "zip"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class RawBodyParser(BaseParser):
    """Lets any body through unread: ``POST /prm_adapter`` streams the raw zip from the request itself.

    DRF parses a body as soon as something reads ``request.data`` or ``request.POST``, and its session authentication
    does, to look for a form's CSRF token: with no parser at all, every upload of a staff session was a 415, whatever
    its content type. This parser reads nothing and answers no data, so the body stays whole for the view, and a
    session's CSRF token comes from the ``X-CSRFToken`` header, as for any other raw body.
    """

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class RawBodyBrowsableAPIRenderer(BrowsableAPIRenderer):
    """The browsable API without POST forms: an adapter upload is a raw zip body, which no HTML form can send."""

    def get_rendered_html_form(self, data, view, method, request):
        return None

    def get_raw_data_form(self, data, view, method, request):
        return None


class PRMAdapterListView(GenericAPIView):
    """Every PRM adapter uploaded so far, oldest first (`GET /prm_adapters`)."""

    schema = ApiAutoSchema()
    serializer_class = PRMAdapterSerializer
    queryset = PRMAdapter.objects.all()  # for the browsable API only
    pagination_class = None

    @extend_schema(operation_id="prm_adapter_list", responses={200: PRMAdapterSerializer(many=True), **ERROR_RESPONSES})
    def get(self, request: Request) -> Response:
        return Response(PRMAdapterSerializer(selectors.adapter_list(), many=True).data)


class PRMAdapterView(GenericAPIView):
    """One PRM adapter: the zip of peft's `save_pretrained` folder.

    `GET /prm_adapter?prm_version=V` answers the uploaded bytes (`application/octet-stream`; with `Accept:
    application/json` or in the browsable API, the adapter's details instead). `POST /prm_adapter?prm_version=V&
    base_model=B&worker=W` with the zip as the raw body (`Content-Type: application/zip`) stores it and answers its
    path on the server. A worker sends its token; a staff session sends its CSRF token in the `X-CSRFToken` header
    (no HTML form can send a raw body, so this page has none).
    """

    schema = ApiAutoSchema()
    serializer_class = PRMAdapterSerializer  # what OPTIONS and the browsable API describe; the body is a raw zip
    renderer_classes = [AdapterBytesRenderer, JSONRenderer, RawBodyBrowsableAPIRenderer]
    parser_classes = [RawBodyParser]  # the body is read raw by POST, never parsed

    def finalize_response(self, request, response, *args, **kwargs):
        # Data (an error, the POST's path) is JSON. That includes a 406: content negotiation failed, so DRF would
        # pick the first renderer, this one, which cannot render data.
        renderer = getattr(request, "accepted_renderer", None)
        if isinstance(response, Response) and (renderer is None or isinstance(renderer, AdapterBytesRenderer)):
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="prm_adapter_download",
        parameters=[PRMAdapterVersionQuerySerializer],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="The uploaded zip."),
            (200, "application/json"): PRMAdapterSerializer,
            404: error_response("No adapter for this prm_version, or an unknown `format`."),
            503: error_response("The adapter storage (an object store) cannot be reached; retry."),
            **ERROR_RESPONSES,
        },
        description="Exactly the uploaded bytes. `ETag` is their sha256.",
    )
    def get(self, request: Request):
        query = PRMAdapterVersionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        adapter = selectors.adapter_get(prm_version=query.validated_data["prm_version"])
        if not isinstance(request.accepted_renderer, AdapterBytesRenderer):
            return Response(PRMAdapterSerializer(adapter).data)
        stream = selectors.adapter_file_open(adapter=adapter)
        response = FileResponse(
            stream,
            content_type=AdapterBytesRenderer.media_type,
            as_attachment=True,
            filename=adapter.file.name.rsplit("/", 1)[-1],
        )
        if "Content-Length" not in response and isinstance(stream, ObjectStream):
            response["Content-Length"] = str(stream.size)  # streamed from an object store: its size, from its HEAD
        response["ETag"] = f'"{adapter.sha256}"'
        if isinstance(request._request, ASGIRequest):
            # Served by the ASGI server, a file read by a synchronous iterator would be read whole into memory before
            # its first byte is sent (Django consumes sync iterators with list()): read it DOWNLOAD_READ_BYTES at a
            # time instead, each read in a thread, so a download holds one chunk, whatever the adapter's size.
            response.streaming_content = _chunks_read_async(stream, DOWNLOAD_READ_BYTES)
        return response

    @extend_schema(
        operation_id="prm_adapter_upload",
        parameters=[PRMAdapterUploadQuerySerializer],
        request={"application/octet-stream": OpenApiTypes.BINARY, "application/zip": OpenApiTypes.BINARY},
        responses={
            200: OpenApiResponse(OpenApiTypes.STR, description="Path of the stored zip on the server (JSON string)."),
            404: error_response("An unknown `format`."),
            409: error_response("prm_version already has other bytes."),
            413: error_response("Larger than PRM_ADAPTER_MAX_BYTES."),
            503: error_response("The adapter storage (an object store) cannot be reached; nothing was stored."),
            507: error_response("The adapter storage is full; nothing was stored."),
            **ERROR_RESPONSES,
        },
        description="Store an adapter: the raw body is a zip of the folder peft's `save_pretrained` writes "
        "(`adapter_config.json` + `adapter_model.safetensors`, maybe `README.md` and `prm_config.json`, nothing "
        "else). Refused: a body that is no zip or has data before or after the zip (a self-extracting archive), "
        "any other member (pickle-based files such as `.bin`, `.pt` included), member names that are absolute or "
        "contain `..`, a config peft cannot load or whose regular expressions (a string `target_modules`, …) use "
        "more than literals, classes, groups, alternation, anchors and quantifiers of one character, tensors "
        "safetensors cannot read, more than `PRM_ADAPTER_MAX_BYTES`. The same bytes again for a prm_version answer "
        "the same path; other bytes are a 409. A staff session sends its CSRF token in the `X-CSRFToken` header.",
    )
    def post(self, request: Request) -> Response:
        query = PRMAdapterUploadQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        raw = request._request  # the Django request: read the body as a stream, past DRF's parsers
        try:
            content_length = int(raw.META.get("CONTENT_LENGTH") or 0) or None
        except ValueError:
            content_length = None
        adapter, _created = services.adapter_upload(**query.validated_data, body=raw, content_length=content_length)
        return Response(selectors.adapter_file_path(adapter=adapter))


async def _chunks_read_async(stream, block_size: int) -> AsyncIterator[bytes]:
    """``stream``'s bytes, ``block_size`` at a time, each read off the event loop (the response closes the stream)."""
    read = sync_to_async(stream.read, thread_sensitive=False)
    while chunk := await read(block_size):
        yield chunk
