"""Adapter uploads cannot amplify (issue 7, item 8): a small zip declaring huge tensors is refused before anything is
unpacked, weights are validated from the safetensors header inside the archive, and the tensors must be the LoRA
weights the config describes."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest
import safetensors
from django.test import override_settings

from adapters.models import PRMAdapter
from tests.adapters.test_adapter_api import adapter_members, stored_files, upload

pytestmark = pytest.mark.django_db

LAYER = "base_model.model.model.layers.0.self_attn"


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], *, tamper=None) -> bytes:
    """A safetensors file of zeros; ``tamper(header)`` may break the header after the offsets are laid out."""
    sizes = {"F32": 4, "F16": 2}
    header: dict = {"__metadata__": {"format": "pt"}}
    position = 0
    for name, (dtype, shape) in tensors.items():
        length = sizes[dtype]
        for dim in shape:
            length *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [position, position + length]}
        position += length
    if tamper is not None:
        tamper(header)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * position


def lora_tensors(rank: int = 2, hidden: int = 16, modules=("q_proj", "v_proj")) -> dict:
    tensors = {}
    for module in modules:
        tensors[f"{LAYER}.{module}.lora_A.weight"] = ("F32", [rank, hidden])
        tensors[f"{LAYER}.{module}.lora_B.weight"] = ("F32", [hidden, rank])
    return tensors


def adapter_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def members(adapter_folder) -> dict[str, bytes]:
    return adapter_members(adapter_folder)


def with_config(members: dict[str, bytes], **changes) -> dict[str, bytes]:
    config = json.loads(members["adapter_config.json"])
    config.update(changes)
    return {**members, "adapter_config.json": json.dumps(config).encode()}


def test_a_small_zip_declaring_huge_zero_tensors_is_refused_before_anything_is_unpacked(api, members, media_root):
    # The 2 MB zip of a 2 GiB tensor, scaled down: 2.5 MiB of zeros compress to a few KB; the limit is 1 MiB. (The
    # archive used to be allowed 4x the upload limit, so this was accepted and unpacked.)
    weights = safetensors_bytes(lora_tensors(rank=2, hidden=80 * 1024))
    data = adapter_zip({**members, "adapter_model.safetensors": weights})
    assert len(data) < 100_000
    with override_settings(PRM_ADAPTER_MAX_BYTES=1024 * 1024):
        response = upload(api, data)
    assert response.status_code == 400
    assert "unpacks to" in response.json()["detail"]
    assert not PRMAdapter.objects.exists() and stored_files(media_root) == []


def test_weights_are_validated_from_the_header_without_reading_tensors(api, members, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tensors were loaded")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    assert upload(api, adapter_zip(members)).status_code == 200


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda h: h[f"{LAYER}.q_proj.lora_A.weight"].update(shape=[2, 17]), "do not match its shape"),
        (lambda h: h[f"{LAYER}.q_proj.lora_A.weight"].update(dtype="Q4"), "no known dtype"),
        (lambda h: h[f"{LAYER}.q_proj.lora_A.weight"].update(shape=[2, -16]), "malformed shape"),
        (lambda h: h[f"{LAYER}.q_proj.lora_A.weight"].update(data_offsets=[0]), "malformed data_offsets"),
        (lambda h: h[f"{LAYER}.v_proj.lora_B.weight"].update(data_offsets=[384, 512 + 128]), "match its shape"),
        (lambda h: h[f"{LAYER}.q_proj.lora_B.weight"].update(data_offsets=[0, 128]), "overlap or leave gaps"),
        (lambda h: h.clear(), "holds no tensors"),
    ],
)
def test_an_inconsistent_safetensors_header_is_refused(api, members, tamper, message):
    weights = safetensors_bytes(lora_tensors(), tamper=tamper)
    response = upload(api, adapter_zip({**members, "adapter_model.safetensors": weights}))
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_a_header_longer_than_the_file_is_refused(api, members):
    weights = struct.pack("<Q", 10**12) + b"{}"
    response = upload(api, adapter_zip({**members, "adapter_model.safetensors": weights}))
    assert response.status_code == 400
    assert "does not fit" in response.json()["detail"]


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({**lora_tensors(), f"{LAYER}.k_proj.lora_A.weight": ("F32", [2, 16])}, "not a LoRA weight"),
        ({**lora_tensors(), "base_model.model.lm_head.weight": ("F32", [64, 16])}, "not a LoRA weight"),
        ({k: v for k, v in lora_tensors().items() if "v_proj.lora_B" not in k}, "lora_A without lora_B"),
        (lora_tensors(rank=3), "does not fit rank"),
    ],
)
def test_tensors_must_be_the_lora_weights_the_config_describes(api, members, tensors, message):
    response = upload(api, adapter_zip({**members, "adapter_model.safetensors": safetensors_bytes(tensors)}))
    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"r": "2"}, "r"),
        ({"r": 0}, "r"),
        ({"lora_alpha": "big"}, "lora_alpha"),
        ({"lora_dropout": 2}, "lora_dropout"),
        ({"bias": "some"}, "bias"),
        ({"target_modules": 5}, "target_modules"),
        ({"modules_to_save": "lm_head"}, "modules_to_save"),
        ({"rank_pattern": []}, "rank_pattern"),
        ({"base_model_name_or_path": 7}, "base_model_name_or_path"),
    ],
)
def test_config_fields_must_have_the_types_peft_expects(api, members, changes, field):
    response = upload(api, adapter_zip(with_config(members, **changes)))
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_an_adapter_of_another_peft_type_is_refused(api, members):
    config = {"peft_type": "IA3", "target_modules": ["k_proj"], "feedforward_modules": []}
    response = upload(api, adapter_zip({**members, "adapter_config.json": json.dumps(config).encode()}))
    assert response.status_code == 400
    assert "LoRA" in response.json()["detail"]


def test_a_config_nested_100000_deep_is_a_400_not_a_crash(api, members):
    deep = b'{"peft_type": "LORA", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = upload(api, adapter_zip({**members, "adapter_config.json": deep}))
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_regex_target_and_modules_saved_whole_are_understood(api, members):
    tensors = {**lora_tensors(), "base_model.model.score.modules_to_save.default.weight": ("F32", [2, 16])}
    changed = with_config(members, target_modules=r".*\.(q_proj|v_proj)", modules_to_save=["score"])
    response = upload(api, adapter_zip({**changed, "adapter_model.safetensors": safetensors_bytes(tensors)}))
    assert response.status_code == 200, response.json()
