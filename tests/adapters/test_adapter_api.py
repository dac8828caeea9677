"""POST /prm_adapter, GET /prm_adapter, GET /prm_adapters: real peft adapters in, the same bytes out."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.test import override_settings

from adapters import selectors, views
from adapters.models import PRMAdapter
from prmsite.asgi import django_application
from tests.adapters.conftest import zip_folder

pytestmark = pytest.mark.django_db

UPLOAD = "/prm_adapter?prm_version={v}&base_model=tiny-llama&worker=trainer-0"


def upload(api, data: bytes, version="prm-v1", content_type="application/octet-stream"):
    return api.generic("POST", UPLOAD.format(v=version), data, content_type=content_type)


def stored_files(media_root: Path) -> list[Path]:
    return [p for p in media_root.rglob("*") if p.is_file()] if media_root.exists() else []


def test_upload_answers_the_stored_path_and_download_gives_the_same_bytes(api, adapter_zip, media_root):
    response = upload(api, adapter_zip)
    assert response.status_code == 200
    path = response.json()
    assert isinstance(path, str)
    assert Path(path).read_bytes() == adapter_zip
    assert Path(path).is_relative_to(media_root)
    adapter = PRMAdapter.objects.get()
    assert (adapter.prm_version, adapter.base_model, adapter.worker) == ("prm-v1", "tiny-llama", "trainer-0")
    assert adapter.size == len(adapter_zip)
    assert adapter.sha256 == hashlib.sha256(adapter_zip).hexdigest()

    download = api.get("/prm_adapter", {"prm_version": "prm-v1"})
    assert download.status_code == 200
    assert download["Content-Type"] == "application/octet-stream"
    assert b"".join(download.streaming_content) == adapter_zip
    assert download["ETag"] == f'"{adapter.sha256}"'


def test_an_adapter_zipped_inside_its_folder_is_accepted(api, adapter_folder):
    assert (
        upload(api, zip_folder(adapter_folder, prefix="checkpoint-100/"), content_type="application/zip").status_code
        == 200
    )


def test_the_list_names_every_version_with_its_details(api, adapter_zip, other_adapter_folder):
    upload(api, adapter_zip, "prm-v1")
    upload(api, zip_folder(other_adapter_folder), "prm-v2")
    response = api.get("/prm_adapters")
    assert response.status_code == 200
    listed = response.json()
    assert [a["prm_version"] for a in listed] == ["prm-v1", "prm-v2"]
    assert set(listed[0]) == {"prm_version", "base_model", "worker", "sha256", "size", "created_at"}


def test_the_same_bytes_again_answer_the_same_path(api, adapter_zip, media_root):
    first = upload(api, adapter_zip).json()
    again = upload(api, adapter_zip)
    assert again.status_code == 200
    assert again.json() == first
    assert PRMAdapter.objects.count() == 1
    assert len(stored_files(media_root)) == 1


def test_other_bytes_for_a_taken_version_are_a_409(api, adapter_zip, other_adapter_folder, media_root):
    upload(api, adapter_zip)
    response = upload(api, zip_folder(other_adapter_folder))
    assert response.status_code == 409
    assert "prm-v1" in response.json()["detail"]
    assert PRMAdapter.objects.get().sha256 == hashlib.sha256(adapter_zip).hexdigest()
    assert len(stored_files(media_root)) == 1


def test_download_of_an_unknown_version_is_a_json_404(api):
    response = api.get("/prm_adapter", {"prm_version": "nope"})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "nope" in response.json()["detail"]


def test_json_clients_get_the_adapter_details(api, adapter_zip):
    upload(api, adapter_zip)
    response = api.get("/prm_adapter", {"prm_version": "prm-v1"}, HTTP_ACCEPT="application/json")
    assert response.json()["sha256"] == hashlib.sha256(adapter_zip).hexdigest()


@pytest.mark.parametrize(
    "query",
    [
        "/prm_adapter?base_model=b&worker=w",
        "/prm_adapter?prm_version=v&worker=w",
        "/prm_adapter?prm_version=v&base_model=b",
        "/prm_adapter?prm_version=&base_model=b&worker=w",
    ],
)
def test_upload_parameters_are_required(api, adapter_zip, query):
    response = api.generic("POST", query, adapter_zip, content_type="application/octet-stream")
    assert response.status_code == 400
    assert not PRMAdapter.objects.exists()


def test_download_needs_prm_version(api):
    response = api.get("/prm_adapter")
    assert response.status_code == 400
    assert response.json()["errors"]["prm_version"] == ["This field is required."]


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def adapter_members(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: {**m, "../evil.txt": b"x"}, "Unsafe member name"),
        (lambda m: {**m, "/etc/evil": b"x"}, "Unsafe member name"),
        (lambda m: {**m, "a\\..\\b": b"x"}, "Unsafe member name"),
        (lambda m: {**m, "adapter_model.bin": b"x"}, "pickle-based"),
        (lambda m: {**m, "optimizer.pt": b"x"}, "pickle-based"),
        (lambda m: {k: v for k, v in m.items() if k != "adapter_config.json"}, "No adapter_config.json"),
        (lambda m: {k: v for k, v in m.items() if k != "adapter_model.safetensors"}, "No adapter_model.safetensors"),
        (lambda m: {**m, "adapter_config.json": b"{not json"}, "not a JSON object"),
        (lambda m: {**m, "adapter_config.json": b"[1]"}, "not a JSON object"),
        (lambda m: {**m, "adapter_config.json": json.dumps({"r": 2}).encode()}, "peft cannot load"),
        (lambda m: {**m, "adapter_config.json": json.dumps({"peft_type": "NOPE"}).encode()}, "peft cannot load"),
        (lambda m: {**m, "adapter_model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"}, "safetensors"),
        (lambda m: {**m, "adapter_model.safetensors": m["adapter_model.safetensors"][:-10]}, "safetensors"),
        (lambda m: {**m, "sub/adapter_config.json": m["adapter_config.json"]}, "Several adapter_config.json"),
    ],
)
def test_bad_adapters_are_refused_with_the_reason(api, adapter_folder, media_root, mutate, message):
    response = upload(api, zip_of(mutate(adapter_members(adapter_folder))))
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not PRMAdapter.objects.exists()
    assert stored_files(media_root) == []


@pytest.mark.parametrize("body", [b"not a zip at all", b"PK\x03\x04broken"])
def test_a_body_that_is_no_zip_is_refused(api, body):
    response = upload(api, body)
    assert response.status_code == 400
    assert "zip" in response.json()["detail"]


def test_a_zip_with_a_corrupted_member_is_refused(api, adapter_folder):
    data = bytearray(zip_of(adapter_members(adapter_folder)))
    offset = data.index(b"lora_A")  # inside the safetensors header, stored uncompressed
    data[offset] ^= 0xFF
    response = upload(api, bytes(data))
    assert response.status_code == 400
    assert "damaged" in response.json()["detail"]


def test_an_empty_body_is_refused(api):
    response = upload(api, b"")
    assert response.status_code == 400
    assert "empty" in response.json()["detail"]


def test_an_upload_over_the_size_limit_is_a_413(api, adapter_zip, media_root):
    with override_settings(PRM_ADAPTER_MAX_BYTES=len(adapter_zip) - 1):
        response = upload(api, adapter_zip)
    assert response.status_code == 413
    assert "PRM_ADAPTER_MAX_BYTES" in response.json()["detail"]
    assert not PRMAdapter.objects.exists()
    assert stored_files(media_root) == []


def test_an_upload_larger_than_djangos_body_limit_is_still_accepted(api, adapter_zip):
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        assert upload(api, adapter_zip).status_code == 200


def test_a_zip_that_unpacks_far_beyond_the_limit_is_refused(api, adapter_folder):
    members = adapter_members(adapter_folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("README.md", b"\0" * 4_000_000)
    data = buffer.getvalue()
    with override_settings(PRM_ADAPTER_MAX_BYTES=len(data) + 10):
        response = upload(api, data)
    assert response.status_code == 400
    assert "unpacks to" in response.json()["detail"]


def test_a_stored_file_lost_from_storage_is_a_json_404_not_a_crash(api, adapter_zip):
    Path(upload(api, adapter_zip).json()).unlink()
    response = api.get("/prm_adapter", {"prm_version": "prm-v1"})
    assert response.status_code == 404
    assert "missing from storage" in response.json()["detail"]
    restored = upload(api, adapter_zip)
    assert restored.status_code == 200
    assert Path(restored.json()).read_bytes() == adapter_zip
    assert b"".join(api.get("/prm_adapter", {"prm_version": "prm-v1"}).streaming_content) == adapter_zip


@pytest.mark.django_db(transaction=True)
def test_through_the_asgi_server_a_download_is_sent_as_it_is_read_never_read_whole_first(
    api, adapter_zip, monkeypatch, worker_token
):
    # Django reads a synchronous file iterator whole into memory before an ASGI server sends its first byte: a
    # 512 MiB adapter would be held whole by each download. The first body message must go out after one read.
    assert upload(api, adapter_zip).status_code == 200
    reads: list[int] = []
    real_open = selectors.adapter_file_open

    class Counted:
        def __init__(self, stream):
            self.stream = stream

        def read(self, amount=-1):
            chunk = self.stream.read(amount)
            reads.append(len(chunk))
            return chunk

        def close(self):
            self.stream.close()

    def counted_open(*, adapter):
        return Counted(real_open(adapter=adapter))

    monkeypatch.setattr(selectors, "adapter_file_open", counted_open)
    body, reads_before_first_body = [], []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/prm_adapter",
        "query_string": b"prm_version=prm-v1",
        "headers": [(b"authorization", f"Token {worker_token}".encode()), (b"host", b"testserver")],
    }

    requests_sent = []

    async def receive():
        if requests_sent:  # the body was sent: the client stays connected until the answer ends
            await asyncio.sleep(3600)
        requests_sent.append(1)
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.body" and message.get("body"):
            if not body:
                reads_before_first_body.append(len(reads))
            body.append(message["body"])

    block = 256
    monkeypatch.setattr(views, "DOWNLOAD_READ_BYTES", block)
    asyncio.run(django_application(scope, receive, send))
    assert b"".join(body) == adapter_zip
    assert len(adapter_zip) > 4 * block and reads_before_first_body == [1] and max(reads) == block
