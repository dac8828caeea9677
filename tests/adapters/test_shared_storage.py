"""Adapters in a storage that replicas share: an S3-compatible object store (moto in server mode, on a free
127.0.0.1 port) through django-storages, ``PRM_ADAPTER_STORAGE=s3``.

Two production servers with media folders of their own and one bucket: what one stores, the other serves, and
other bytes for the same prm_version are a 409 whichever replica gets them. In process: the upload checks answer as
with local files, a download streams from the store, and a store that fails mid-upload (a connection cut in the
middle of the PUT, a full store, the row's write failing after the object is stored) leaves no row and no object.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from adapters import services
from adapters.models import PRMAdapter
from adapters.storage import STORAGE_UNAVAILABLE
from tests.adapters.conftest import zip_folder
from tests.factories import make_worker_token
from tests.servers import PROJECT_ROOT, S3Server, free_port

UPLOAD = "/prm_adapter?base_model=tiny&worker=trainer&prm_version="


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3) -> str:
    name = f"adapters-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage(settings, s3, bucket) -> str:
    """This process's adapter storage is ``bucket`` on the moto server."""
    settings.STORAGES = s3.storages(bucket)
    return bucket


def _keys(s3: S3Server, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- two replicas, one bucket -----------------------------------------------------------------------------------------


def test_an_adapter_uploaded_through_one_replica_downloads_through_the_other(
    server_factory, django_user_model, s3, bucket, tmp_path, adapter_zip, other_adapter_folder
):
    token = make_worker_token(django_user_model.objects.create_user(username="replica-worker"))
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/zip"}
    media_a, media_b = tmp_path / "media-a", tmp_path / "media-b"
    replica_a = server_factory(**s3.env(bucket), DJANGO_MEDIA_ROOT=str(media_a)).start()
    replica_b = server_factory(**s3.env(bucket), DJANGO_MEDIA_ROOT=str(media_b)).start()

    stored = requests.post(f"{replica_a.url}{UPLOAD}prm-shared", data=adapter_zip, headers=headers, timeout=120)
    assert stored.status_code == 200, stored.text
    (key,) = _keys(s3, bucket)
    assert stored.json() == key  # the storage's name of the object: no path on any one machine
    assert _files(media_a) == [] and _files(media_b) == []

    got = requests.get(f"{replica_b.url}/prm_adapter?prm_version=prm-shared", headers=headers, timeout=120)
    assert got.status_code == 200, got.text
    assert got.content == adapter_zip
    assert got.headers["ETag"] == f'"{hashlib.sha256(adapter_zip).hexdigest()}"'
    assert got.headers["Content-Length"] == str(len(adapter_zip))

    again = requests.post(f"{replica_b.url}{UPLOAD}prm-shared", data=adapter_zip, headers=headers, timeout=120)
    assert again.status_code == 200 and again.json() == key
    other = zip_folder(other_adapter_folder)
    refused = requests.post(f"{replica_b.url}{UPLOAD}prm-shared", data=other, headers=headers, timeout=120)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "conflict"
    assert _keys(s3, bucket) == [key]
    assert PRMAdapter.objects.count() == 1
    for replica in (replica_a, replica_b):
        assert "Internal Server Error" not in replica.log.read_text()


# --- in process ---------------------------------------------------------------------------------------------------


def test_an_upload_stores_one_object_and_the_download_streams_it_back(
    api, s3, s3_storage, adapter_zip, media_root, monkeypatch
):
    stored = api.post(f"{UPLOAD}prm-s3", data=adapter_zip, content_type="application/zip")
    assert stored.status_code == 200, stored.content
    assert _keys(s3, s3_storage) == [stored.json()]
    assert _files(Path(media_root)) == []
    adapter = PRMAdapter.objects.get()
    assert adapter.size == len(adapter_zip) and adapter.sha256 == hashlib.sha256(adapter_zip).hexdigest()

    def whole_download(self):
        raise AssertionError("the adapter was downloaded whole before it was sent")

    monkeypatch.setattr("storages.backends.s3.S3File._get_file", whole_download)
    got = api.get("/prm_adapter?prm_version=prm-s3")
    assert got.status_code == 200
    assert got.streaming  # sent as it is read from the store, never read whole first
    assert b"".join(got.streaming_content) == adapter_zip
    assert got["Content-Length"] == str(len(adapter_zip))


def test_other_bytes_for_a_stored_version_are_a_409_and_store_nothing(
    api, s3, s3_storage, adapter_zip, other_adapter_folder
):
    assert api.post(f"{UPLOAD}prm-s3", data=adapter_zip, content_type="application/zip").status_code == 200
    keys = _keys(s3, s3_storage)
    refused = api.post(f"{UPLOAD}prm-s3", data=zip_folder(other_adapter_folder), content_type="application/zip")
    assert refused.status_code == 409
    assert refused.json()["code"] == "conflict"
    assert _keys(s3, s3_storage) == keys


def test_an_upload_failing_its_checks_stores_no_object(api, s3, s3_storage, settings, adapter_zip):
    not_a_zip = api.post(f"{UPLOAD}prm-bad", data=b"PK not a zip", content_type="application/zip")
    assert not_a_zip.status_code == 400, not_a_zip.content
    settings.PRM_ADAPTER_MAX_BYTES = len(adapter_zip) - 1
    too_large = api.post(f"{UPLOAD}prm-big", data=adapter_zip, content_type="application/zip")
    assert too_large.status_code == 413
    assert _keys(s3, s3_storage) == [] and PRMAdapter.objects.count() == 0


class _CuttingProxy:
    """A TCP proxy to the S3 server that cuts every connection ``cut_after`` bytes into the body of a PUT (headers
    included): the store fails in the middle of the upload, as a network or an object store going down would."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe_upstream, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._pipe_request, args=(client, upstream), daemon=True).start()

    def _pipe_upstream(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass

    def _pipe_request(self, client: socket.socket, upstream: socket.socket) -> None:
        sent_of_put = None
        try:
            while data := client.recv(65536):
                if sent_of_put is None and b"PUT /" in data:
                    sent_of_put = -data.index(b"PUT /")
                if sent_of_put is not None and sent_of_put + len(data) > self.cut_after:
                    upstream.sendall(data[: max(0, self.cut_after - sent_of_put)])
                    self.cuts += 1
                    break
                upstream.sendall(data)
                if sent_of_put is not None:
                    sent_of_put += len(data)
        except OSError:
            pass
        for end in (client, upstream):
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_a_store_failing_mid_upload_is_a_503_and_leaves_no_row_and_no_object(api, s3, bucket, settings, adapter_zip):
    assert len(adapter_zip) > 3000  # the cut falls inside the body, past the PUT's headers
    proxy = _CuttingProxy(s3.port, cut_after=2500)
    settings.STORAGES = s3.storages(bucket, endpoint_url=proxy.url)
    try:
        response = api.post(f"{UPLOAD}prm-cut", data=adapter_zip, content_type="application/zip")
    finally:
        proxy.close()
    assert proxy.cuts >= 1
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["code"] == "storage_unavailable" and set(body) == {"detail", "code"}
    assert body["detail"].startswith(STORAGE_UNAVAILABLE.split("(")[0])
    assert PRMAdapter.objects.count() == 0
    assert _keys(s3, bucket) == []
    assert s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    settings.STORAGES = s3.storages(bucket)  # the store is back: the same upload goes through
    assert api.post(f"{UPLOAD}prm-cut", data=adapter_zip, content_type="application/zip").status_code == 200
    assert len(_keys(s3, bucket)) == 1


def test_a_store_out_of_reach_is_a_503_for_uploads_and_downloads(api, s3, bucket, settings, adapter_zip):
    settings.STORAGES = s3.storages(bucket)
    assert api.post(f"{UPLOAD}prm-there", data=adapter_zip, content_type="application/zip").status_code == 200
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.STORAGES = s3.storages(bucket, endpoint_url=nowhere)
    upload = api.post(f"{UPLOAD}prm-gone", data=adapter_zip, content_type="application/zip")
    assert upload.status_code == 503 and upload.json()["code"] == "storage_unavailable"
    download = api.get("/prm_adapter?prm_version=prm-there")
    assert download.status_code == 503 and download.json()["code"] == "storage_unavailable"
    assert list(PRMAdapter.objects.values_list("prm_version", flat=True)) == ["prm-there"]


def test_a_full_object_store_is_a_507_with_nothing_kept(api, s3, s3_storage, monkeypatch, adapter_zip):
    def full(self, name, content):
        raise ClientError(
            {
                "Error": {
                    "Code": "XMinioStorageFull",
                    "Message": "Storage backend has reached its minimum free drive threshold.",
                },
                "ResponseMetadata": {"HTTPStatusCode": 507},
            },
            "PutObject",
        )

    monkeypatch.setattr("storages.backends.s3.S3Storage._save", full)
    response = api.post(f"{UPLOAD}prm-full", data=adapter_zip, content_type="application/zip")
    assert response.status_code == 507, response.content
    assert response.json()["code"] == "insufficient_storage"
    assert PRMAdapter.objects.count() == 0 and _keys(s3, s3_storage) == []


def test_a_row_that_cannot_be_written_takes_its_stored_object_with_it(db, s3, s3_storage, monkeypatch, adapter_zip):
    def broken(self, *args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(PRMAdapter, "save", broken)
    with pytest.raises(RuntimeError):
        services.adapter_upload(
            prm_version="prm-row",
            base_model="tiny",
            worker="trainer",
            body=io.BytesIO(adapter_zip),
            content_length=len(adapter_zip),
        )
    assert _keys(s3, s3_storage) == []


# --- the settings -----------------------------------------------------------------------------------------------------


def _settings_storage(**env: str) -> subprocess.CompletedProcess:
    code = (
        "import django, os, json; os.environ['DJANGO_SETTINGS_MODULE'] = 'prmsite.settings'; django.setup(); "
        "from django.conf import settings; print(json.dumps(settings.STORAGES['default']))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PRM_ADAPTER_STORAGE"))}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env={**environ, **env}, capture_output=True, text=True
    )


def test_the_settings_build_the_storage_the_tests_use(s3):
    default = _settings_storage()
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    chosen = _settings_storage(**s3.env("the-bucket"))
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout) == {
        **s3.storages("the-bucket")["default"],
        "OPTIONS": {
            **s3.storages("the-bucket")["default"]["OPTIONS"],
            "location": "",
            "addressing_style": None,
            "querystring_auth": True,
        },
    }
    for env, says in (
        ({"PRM_ADAPTER_STORAGE": "s3"}, "AWS_STORAGE_BUCKET_NAME"),
        ({"PRM_ADAPTER_STORAGE": "ftp"}, "neither 'file' nor 's3'"),
    ):
        refused = _settings_storage(**env)
        assert refused.returncode != 0 and says in refused.stderr
