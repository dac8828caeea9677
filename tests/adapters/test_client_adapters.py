"""The client's adapter calls over real HTTP."""

from __future__ import annotations

import pytest

from prmsite.core.client import PrmsiteAPIError, PrmsiteClient
from tests.adapters.conftest import zip_folder


@pytest.fixture
def live_client(live_api_server, worker_token):
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        yield client


def test_client_uploads_lists_and_downloads_adapters(live_client, adapter_zip, other_adapter_folder, tmp_path):
    path = live_client.upload_prm_adapter("prm-v1", base_model="tiny-llama", worker="trainer", data=adapter_zip)
    assert path.endswith(".zip")
    zip_file = tmp_path / "adapter.zip"
    zip_file.write_bytes(adapter_zip)
    assert live_client.upload_prm_adapter("prm-v1", base_model="tiny-llama", worker="trainer", data=zip_file) == path
    assert [a["prm_version"] for a in live_client.list_prm_adapters()] == ["prm-v1"]
    assert live_client.download_prm_adapter("prm-v1") == adapter_zip
    target = live_client.download_prm_adapter("prm-v1", tmp_path / "down.zip")
    assert target.read_bytes() == adapter_zip
    with pytest.raises(PrmsiteAPIError) as caught:
        live_client.upload_prm_adapter(
            "prm-v1", base_model="tiny-llama", worker="trainer", data=zip_folder(other_adapter_folder)
        )
    assert caught.value.status_code == 409
    with pytest.raises(PrmsiteAPIError) as missing:
        live_client.download_prm_adapter("prm-v9")
    assert missing.value.status_code == 404
