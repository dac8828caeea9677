"""(e) The adapter storage full: an upload is refused with 507 and the one JSON error shape (not a 500), no partial
file is left, nothing is recorded in the database, and the next upload that fits is stored.

For real where the test may mount: the server runs in a mount namespace of its own (``unshare -m``) with a 64 KiB
tmpfs as its media folder, so its writes fail with ENOSPC; the test reads that folder through
``/proc/<pid>/root``. Everywhere: the same refusal in process, with a write that fails with ENOSPC or EFBIG.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from adapters.models import PRMAdapter
from tests.adapters.conftest import _save_tiny_adapter, zip_folder

TMPFS_BYTES = 64 * 1024


def _big_adapter_zip(folder: Path) -> bytes:
    """A valid LoRA adapter of about 250 KiB: too big for the tmpfs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # deferred: torch is heavy
    from peft import LoraConfig, get_peft_model  # deferred: peft is heavy
    from transformers import LlamaConfig, LlamaForCausalLM  # deferred: transformers is heavy

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=256, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=64
    )
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(folder)
    return zip_folder(folder)


def _can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    point = tmp_path / "probe"
    point.mkdir()
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k none {point} && touch {point}/x"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def _assert_refused(response: requests.Response) -> None:
    assert response.status_code == 507, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == "insufficient_storage" and set(response.json()) == {"detail", "code"}


def test_a_full_tmpfs_refuses_the_upload_with_507_and_keeps_nothing(server_factory, token, tmp_path):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs in a mount namespace here (unshare -m); the in-process tests cover it")
    media = tmp_path / "media"
    media.mkdir()
    big = _big_adapter_zip(tmp_path / "big")
    small = zip_folder(_save_tiny_adapter(tmp_path / "small"))
    assert len(big) > TMPFS_BYTES > 4 * len(small)
    server = server_factory(DJANGO_MEDIA_ROOT=str(media))
    server.wrap = ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o size={TMPFS_BYTES} none {media} && exec "$@"', "-"]
    server.start()
    seen = Path(f"/proc/{server.process.pid}/root") / str(media).lstrip("/")  # the tmpfs, as the server sees it
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/zip"}
    url = f"{server.url}/prm_adapter?base_model=tiny&worker=trainer&prm_version="

    for attempt in range(2):  # the same refusal again: the first one left nothing behind that fills the disk
        _assert_refused(requests.post(url + "prm-big", data=big, headers=headers, timeout=120))
        assert [p.name for p in seen.rglob("*") if p.is_file()] == [], attempt
        assert PRMAdapter.objects.count() == 0
    stored = requests.post(url + "prm-small", data=small, headers=headers, timeout=120)
    assert stored.status_code == 200, stored.text
    assert [p.name for p in seen.rglob("*") if p.is_file()] == ["prm-small.zip"]
    assert list(PRMAdapter.objects.values_list("prm_version", flat=True)) == ["prm-small"]
    assert requests.get(url + "prm-big", headers=headers, timeout=120).status_code == 404
    assert "Internal Server Error" not in server.log.read_text()


@pytest.fixture
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


class _FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes."""

    room = 1000
    failure = errno.ENOSPC

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(self.failure, os.strerror(self.failure))
        return super().write(data)


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT], ids=["ENOSPC", "EFBIG", "EDQUOT"])
def test_a_write_failing_for_want_of_space_is_a_507_with_nothing_kept(
    api, adapter_zip, media_root, monkeypatch, failure
):
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if "b" in mode and "w" in mode:
            raw = _FullDisk(fd, "r+", closefd=True)
            raw.failure = failure
            return io.BufferedRandom(raw)
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr("adapters.services.os.fdopen", fdopen)
    url = "/prm_adapter?prm_version=prm-full&base_model=tiny&worker=trainer"
    response = api.post(url, data=adapter_zip, content_type="application/zip")
    assert response.status_code == 507, response.content
    assert response.json()["code"] == "insufficient_storage"
    assert [p for p in Path(media_root).rglob("*") if p.is_file()] == []
    assert PRMAdapter.objects.count() == 0

    monkeypatch.setattr("adapters.services.os.fdopen", real_fdopen)
    assert api.post(url, data=adapter_zip, content_type="application/zip").status_code == 200


def test_a_failed_move_into_place_leaves_no_file_and_no_row(api, adapter_zip, media_root, monkeypatch):
    def no_room(old, new, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("django.core.files.storage.filesystem.file_move_safe", no_room)
    response = api.post(
        "/prm_adapter?prm_version=prm-full&base_model=tiny&worker=trainer",
        data=adapter_zip,
        content_type="application/zip",
    )
    assert response.status_code == 507, response.content
    assert [p for p in Path(media_root).rglob("*") if p.is_file()] == []
    assert PRMAdapter.objects.count() == 0


def test_a_spool_left_by_a_killed_server_is_removed_by_the_next_upload(api, adapter_zip, media_root):
    folder = Path(media_root) / "prm_adapters"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".upload-killed.zip", folder / ".upload-in-flight.zip"
    stale.write_bytes(b"PK half")
    fresh.write_bytes(b"PK half")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))
    response = api.post(
        "/prm_adapter?prm_version=prm-next&base_model=tiny&worker=trainer",
        data=adapter_zip,
        content_type="application/zip",
    )
    assert response.status_code == 200, response.content
    assert not stale.exists() and fresh.exists()  # another upload may still be writing a recent one
