"""The checks of an adapter zip one by one (``adapters.validation``), without the database or the API: each refusal
is its module's message constant, and the tensor check counts its steps."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from adapters.validation import adapter_zip_validate
from adapters.validation.archive import (
    NO_CONFIG,
    NOT_A_ZIP,
    NOT_AN_ADAPTER_FILE,
    PICKLED_WEIGHTS,
    PREFIXED_ZIP,
    SEVERAL_CONFIGS,
    TRAILING_DATA,
    UNSAFE_NAME,
    config_member_find,
    member_name_check,
    members_check,
    whole_file_check,
)
from adapters.validation.config import CONFIG_NOT_JSON, CONFIG_REJECTED, config_check, config_patterns
from adapters.validation.folder import CONFIG_NAME, README_NAME, WEIGHTS_NAME
from adapters.validation.safetensors_header import NO_TENSORS, WEIGHTS_REJECTED, header_check
from adapters.validation.tensors import (
    LORA_UNPAIRED,
    TENSOR_CHECK_TOO_COSTLY,
    TENSOR_NOT_LORA,
    TENSOR_RANK,
    StepBudget,
    lora_tensors_check,
    targeted_modules,
)
from prmsite.core.errors import ApplicationError
from tests.adapters.test_adapter_amplification import LAYER, adapter_zip, lora_tensors, safetensors_bytes

CONFIG = {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj", "v_proj"]}
MODULES = LAYER.removeprefix("base_model.model.")  # the module path peft's tensor names carry


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(ApplicationError) as caught:
        call(*args, **kwargs)
    return caught.value.message


def archive_of(members: dict[str, bytes]) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(adapter_zip(members)))


@pytest.mark.parametrize("name", ["../escape/adapter_config.json", "/etc/passwd", "a\\b", "C:/x"])
def test_an_unsafe_member_name_is_refused(name):
    assert refusal(member_name_check, zipfile.ZipInfo(name)) == UNSAFE_NAME.format(name=name)


@pytest.mark.parametrize("name", ["adapter_model.bin", "weights.PT", "folder/state.ckpt"])
def test_a_pickle_based_member_is_refused_whatever_its_folder(name):
    assert refusal(member_name_check, zipfile.ZipInfo(name)) == PICKLED_WEIGHTS.format(name=name)


def test_only_the_files_of_the_configs_folder_are_members():
    infos = [zipfile.ZipInfo(name) for name in ("adapter/", f"adapter/{CONFIG_NAME}", f"adapter/{WEIGHTS_NAME}")]
    members = members_check(infos, folder=PurePosixPath("adapter"))
    assert set(members) == {CONFIG_NAME, WEIGHTS_NAME}
    stray = [*infos, zipfile.ZipInfo(f"other/{README_NAME}")]
    message = refusal(members_check, stray, folder=PurePosixPath("adapter"))
    assert message == NOT_AN_ADAPTER_FILE.format(name=f"other/{README_NAME}")


def test_the_archive_holds_one_config():
    assert refusal(config_member_find, [zipfile.ZipInfo(WEIGHTS_NAME)]) == NO_CONFIG
    two = [zipfile.ZipInfo(f"a/{CONFIG_NAME}"), zipfile.ZipInfo(f"b/{CONFIG_NAME}")]
    names = f"a/{CONFIG_NAME}, b/{CONFIG_NAME}"
    assert refusal(config_member_find, two) == SEVERAL_CONFIGS.format(names=names)


def test_the_zip_must_be_the_whole_file(tmp_path: Path):
    data = adapter_zip({CONFIG_NAME: b"{}"})
    for name, content, message in (
        ("prefixed.zip", b"#!/bin/sh\n" + data, PREFIXED_ZIP.format(count=10)),
        ("trailing.zip", data + b"more", TRAILING_DATA),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with zipfile.ZipFile(path) as archive:
            assert refusal(whole_file_check, path, archive) == message
    path = tmp_path / "plain.zip"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as archive:
        whole_file_check(path, archive)


def test_a_body_that_is_not_a_zip_is_refused_first(tmp_path: Path):
    path = tmp_path / "upload"
    path.write_bytes(b"not a zip at all")
    assert refusal(adapter_zip_validate, path=path, max_uncompressed_bytes=1 << 20) == NOT_A_ZIP


def test_the_config_is_a_json_object_with_a_peft_type():
    assert refusal(config_check, b"[1, 2]") == CONFIG_NOT_JSON.format(reason="not an object")
    assert refusal(config_check, b"{}") == CONFIG_REJECTED.format(reason="no peft_type")


def test_the_configs_regular_expressions_are_every_value_peft_compiles():
    config = {
        "target_modules": r".*\.q_proj",
        "exclude_modules": ["plain"],
        "layers_pattern": "layers",
        "modules_to_save": ["score"],
        "rank_pattern": {"^model": 4},
    }
    assert list(config_patterns(config)) == [
        ("target_modules", r".*\.q_proj"),
        ("layers_pattern", "layers"),
        ("modules_to_save", "score"),
        ("a key of rank_pattern", "^model"),
    ]


def test_the_safetensors_header_must_tile_the_data():
    tensors = lora_tensors()
    with archive_of({WEIGHTS_NAME: safetensors_bytes(tensors)}) as archive:
        assert set(header_check(archive, archive.getinfo(WEIGHTS_NAME))) == set(tensors)

    def gap(header):
        first = next(name for name in header if name != "__metadata__")
        header[first]["data_offsets"] = [o + 4 for o in header[first]["data_offsets"]]

    with archive_of({WEIGHTS_NAME: safetensors_bytes(tensors, tamper=gap)}) as archive:
        message = refusal(header_check, archive, archive.getinfo(WEIGHTS_NAME))
    assert message == WEIGHTS_REJECTED.format(reason="tensor byte ranges overlap or leave gaps")
    with archive_of({WEIGHTS_NAME: safetensors_bytes({})}) as archive:
        assert refusal(header_check, archive, archive.getinfo(WEIGHTS_NAME)) == NO_TENSORS


def header_of(tensors: dict) -> dict:
    with archive_of({WEIGHTS_NAME: safetensors_bytes(tensors)}) as archive:
        return header_check(archive, archive.getinfo(WEIGHTS_NAME))


def test_lora_tensors_of_the_targeted_modules_pass():
    tensors = lora_tensors()
    assert set(lora_tensors_check(header_of(tensors), CONFIG)) == set(tensors)


def test_a_tensor_of_a_module_not_targeted_is_refused():
    header = header_of(lora_tensors(modules=("q_proj", "k_proj")))
    name = f"{LAYER}.k_proj.lora_A.weight"
    assert refusal(lora_tensors_check, header, CONFIG) == TENSOR_NOT_LORA.format(name=name, targets="q_proj, v_proj")


def test_lora_a_and_b_come_in_pairs_of_the_configs_rank():
    tensors = lora_tensors()
    del tensors[f"{LAYER}.v_proj.lora_B.weight"]
    message = refusal(lora_tensors_check, header_of(tensors), CONFIG)
    assert message == LORA_UNPAIRED.format(module=f"{MODULES}.v_proj")
    message = refusal(lora_tensors_check, header_of(lora_tensors(rank=3)), CONFIG)
    assert message == TENSOR_RANK.format(name=f"{MODULES}.q_proj.lora_A/B", shape=[3, 3], rank=2)


def test_a_list_of_targets_costs_one_step_per_dot_of_each_module():
    modules = {"model.layers.0.q_proj", "model.layers.0.k_proj", "score"}
    budget = StepBudget(100)
    assert targeted_modules(modules, ["q_proj"], budget) == {"model.layers.0.q_proj"}
    assert budget.left == 100 - sum(1 + module.count(".") for module in modules)


def test_the_tensor_check_stops_at_its_budget():
    modules = {f"model.layers.{index}.q_proj" for index in range(10)}
    message = refusal(targeted_modules, modules, ["q_proj"], StepBudget(5))
    assert message == TENSOR_CHECK_TOO_COSTLY.format(limit=5)
