"""POST /prm_adapter against the second round of attack (issue 17, items 2 and 15): regular expressions that backtrack,
members that are not an adapter's, zips behind a prefix, and uploads from a staff session."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile

import pytest
from django.test import Client

from adapters.models import PRMAdapter
from adapters.peft_patterns import REPEATED_GROUP
from adapters.validation import config as config_checks
from adapters.validation import tensors as tensor_checks
from tests.adapters.conftest import zip_folder
from tests.adapters.test_adapter_amplification import LAYER, adapter_zip, lora_tensors, safetensors_bytes, with_config
from tests.adapters.test_adapter_api import UPLOAD, adapter_members, stored_files, upload

pytestmark = pytest.mark.django_db

# The 500-byte adapter of the issue: peft reads this target_modules as a regular expression, and re.fullmatch takes
# about 2**40 steps to find that it does not match the module "aaa…a!".
HOSTILE_PATTERN = "(a+)+b"
HOSTILE_TENSORS = {"a" * 40 + "!.lora_A.weight": ("F32", [2, 16]), "a" * 40 + "!.lora_B.weight": ("F32", [16, 2])}


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def members(adapter_folder) -> dict[str, bytes]:
    return adapter_members(adapter_folder)


@pytest.fixture
def no_backtracking(monkeypatch):
    """Fails the test, instead of hanging it, if an uploaded pattern reaches Python's backtracking engine."""
    real_fullmatch = re.fullmatch
    uploaded: set[str] = set()

    def fullmatch(pattern, string, flags=0):
        if pattern in uploaded:
            raise AssertionError(f"re.fullmatch ran the uploaded pattern {pattern!r}")
        return real_fullmatch(pattern, string, flags)

    monkeypatch.setattr(re, "fullmatch", fullmatch)
    return uploaded


def refused(response, *words: str) -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid"
    assert all(word in body["detail"] for word in words), body["detail"]
    assert not PRMAdapter.objects.exists()
    return body["detail"]


# --- item 2: regular expressions -------------------------------------------------------------------------------


def test_the_backtracking_pattern_of_the_issue_is_refused_before_any_matching(api, members, no_backtracking):
    no_backtracking.add(HOSTILE_PATTERN)
    config = json.dumps({"peft_type": "LORA", "r": 2, "target_modules": HOSTILE_PATTERN}).encode()
    data = _zip_bytes({"adapter_config.json": config, "adapter_model.safetensors": safetensors_bytes(HOSTILE_TENSORS)})
    assert len(data) < 1000
    refused(upload(api, data), "target_modules", "regular expression", repr(HOSTILE_PATTERN), REPEATED_GROUP)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("a*" * 8 + "!", "a" * 900),  # no repeated group, yet re takes about 900**8 / 8! steps
        (r".*.*.*.*.*.*\.lora_x", "b" * 900),
        (r"(?:a|aa)?" * 60 + "!", "a" * 900),
    ],
)
def test_a_pattern_that_would_backtrack_is_matched_in_linear_steps(api, members, no_backtracking,
                                                                    compiled_patterns, pattern, text):  # fmt: skip
    no_backtracking.add(pattern)
    tensors = {f"{text}.lora_A.weight": ("F32", [2, 16]), f"{text}.lora_B.weight": ("F32", [16, 2])}
    data = adapter_zip(
        {**with_config(members, target_modules=pattern), "adapter_model.safetensors": safetensors_bytes(tensors)}
    )
    refused(upload(api, data), "is not a LoRA weight of a module")
    matcher = compiled_patterns[-1]
    assert matcher.steps == len(text) + 1  # one step a character: RE2 matches in linear time


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(", "missing ), unterminated subpattern"),
        ("a{1,99999999999}", "the repetition number is too large"),
        ("[z-a]", "bad character range"),
        (r"(q)\1", "backreference"),
        ("(?i)Q_PROJ", "flags"),
        ("x" * 5000, "characters long"),
    ],
)
def test_an_invalid_or_unsupported_target_pattern_is_a_400_not_a_500(api, members, pattern, reason):
    response = upload(api, adapter_zip(with_config(members, target_modules=pattern)))
    refused(response, "target_modules", "regular expression", reason)


@pytest.mark.parametrize(
    "changes",
    [
        {"modules_to_save": ["score", "(a+)+$"]},
        {"exclude_modules": "(.*)*x"},
        {"rank_pattern": {"(x+x+)+y": 4}},
        {"alpha_pattern": {"(": 4}},
        {"layers_pattern": ["layers", "(a|aa)+"], "layers_to_transform": [0]},
    ],
)
def test_every_field_peft_reads_as_a_pattern_is_checked(api, members, changes):
    # peft matches these with re wherever the adapter is loaded (prm_label_worker included)
    field = next(iter(changes))
    refused(upload(api, adapter_zip(with_config(members, **changes))), field, "regular expression")


@pytest.mark.parametrize(
    "changes",
    [
        {"target_modules": r".*\.(q_proj|v_proj)$"},
        {"target_modules": r"^model\.layers\.\d+\.self_attn\.(?:q|v)_proj$"},
        {
            "target_modules": r"(?:.*?(?:language|text).*?(?:self_attn|mlp).*?(?:q_proj|v_proj).*?)|"
            r"(?:\bmodel\.layers\.[\d]{1,}\.(?:self_attn|mlp)\.(?:(?:q_proj|k_proj|v_proj)))"
        },
        {"target_modules": "all-linear"},
        {"target_modules": ["q_proj", "v_proj"], "rank_pattern": {"model.layers.0.self_attn.q_proj": 2}},
        {
            "target_modules": ["self_attn.q_proj", "v_proj"],
            "exclude_modules": ["k_proj"],
            "layers_pattern": "layers",
            "layers_to_transform": [0],
        },
    ],
)
def test_the_patterns_real_configs_use_stay_accepted(api, members, changes):
    response = upload(api, adapter_zip(with_config(members, **changes)))
    assert response.status_code == 200, response.json()


@pytest.fixture
def compiled_patterns(monkeypatch) -> list:
    compiled = []
    real_compile = config_checks.pattern_compile

    def counting_compile(source):
        compiled.append(real_compile(source))
        return compiled[-1]

    for checks in (config_checks, tensor_checks):  # the config's patterns, then target_modules against the names
        monkeypatch.setattr(checks, "pattern_compile", counting_compile)
    return compiled


def test_a_config_of_too_many_patterns_is_refused_before_compiling_them_all(api, members, compiled_patterns):
    keys = {rf"^model\.layers\.{layer}\.self_attn\.q_proj$": 2 for layer in range(3000)}
    refused(upload(api, adapter_zip(with_config(members, rank_pattern=keys))), "add up to more than")
    assert len(compiled_patterns) <= config_checks.PATTERNS_MAX_CHARS // 36 + 1


def test_plain_module_names_cost_no_compiling(api, members, compiled_patterns):
    keys = {f"model.layers.{layer}.self_attn.q_proj": 2 for layer in range(20_000)}
    changes = {"rank_pattern": keys, "modules_to_save": ["score"], "layers_pattern": "layers"}
    response = upload(api, adapter_zip(with_config(members, **changes, layers_to_transform=[0])))
    assert response.status_code == 200, response.json()
    assert compiled_patterns == []


def test_checking_the_tensor_names_has_a_budget(api, members, monkeypatch):
    monkeypatch.setattr(tensor_checks, "TENSOR_CHECK_MAX_STEPS", 50)
    data = adapter_zip(with_config(members, target_modules=r".*\.(q_proj|v_proj)"))
    refused(upload(api, data), "takes more than 50 steps")


def test_a_list_of_targets_is_looked_up_not_scanned(api, members, monkeypatch):
    # 50,000 listed names and 2 modules: one lookup per dot of each module, not 100,000 comparisons
    monkeypatch.setattr(tensor_checks, "TENSOR_CHECK_MAX_STEPS", 100)
    targets = [f"m{index}" for index in range(50_000)] + ["q_proj", "v_proj"]
    response = upload(api, adapter_zip(with_config(members, target_modules=targets)))
    assert response.status_code == 200, response.json()


def test_an_overlong_tensor_name_is_refused(api, members):
    name = f"{LAYER}.{'x' * tensor_checks.TENSOR_NAME_MAX_CHARS}.q_proj"
    tensors = {**lora_tensors(), f"{name}.lora_A.weight": ("F32", [2, 16])}
    data = adapter_zip({**members, "adapter_model.safetensors": safetensors_bytes(tensors)})
    refused(upload(api, data), "names longer than")


# --- item 15 (a): nothing but an adapter's files ------------------------------------------------------------------


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled",))


PICKLE = pickle.dumps(_Exploit())
INNER_ZIP = _zip_bytes({"archive/data.pkl": PICKLE})  # what torch.save writes: a zip holding a pickle


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("weights.txt", PICKLE),
        ("notes.txt", b"just notes"),
        ("adapter_model.safetensors.txt", INNER_ZIP),
        ("tokenizer.json", b"{}"),
        ("sub/adapter_model.safetensors", PICKLE),
        ("__MACOSX/._adapter_config.json", b"\x00\x05\x16\x07"),
        ("other/", b""),
    ],
)
def test_a_member_that_is_not_an_adapter_file_is_refused_whatever_it_holds(api, members, media_root, name, data):
    refused(upload(api, adapter_zip({**members, name: data})), "is not a file of an adapter folder", repr(name))
    assert stored_files(media_root) == []


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("README.md", PICKLE, ("README.md", "UTF-8 text")),
        ("README.md", INNER_ZIP, ("README.md", "UTF-8 text")),
        ("prm_config.json", PICKLE, ("prm_config.json", "a JSON object")),
        ("prm_config.json", b"[1, 2]", ("prm_config.json", "a JSON object")),
        ("prm_config.json", b"[" * 100_000, ("prm_config.json", "nested too deeply")),
        ("adapter_model.safetensors", INNER_ZIP, ("safetensors cannot read",)),
        ("adapter_config.json", INNER_ZIP, ("adapter_config.json", "not a JSON object")),
    ],
)
def test_each_adapter_file_must_be_what_its_name_says(api, members, name, data, words):
    refused(upload(api, adapter_zip({**members, name: data})), *words)


def test_a_member_twice_is_refused(api, members):
    # zipfile's open(name) takes the last of two members of one name: a checker reading the first would pass a pickle
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("adapter_model.safetensors", PICKLE)
    refused(upload(api, buffer.getvalue()), "appears more than once", "adapter_model.safetensors")


def test_the_folder_train_prm_writes_is_accepted(api, members):
    prm_config = json.dumps({"format": {"step_tag": " ки"}, "training": {"eval": None}}).encode()
    zipped = adapter_zip({**members, "prm_config.json": prm_config, "README.md": "# Модель\n".encode()})
    assert upload(api, zipped).status_code == 200


def test_an_adapter_in_nested_folders_with_their_entries_is_accepted(api, adapter_folder):
    data = zip_folder(adapter_folder, prefix="runs/checkpoint-100/", extra={"runs/": b"", "runs/checkpoint-100/": b""})
    assert upload(api, data).status_code == 200


# --- item 15 (b): the zip is the whole body -------------------------------------------------------------------------

SHELL = b'#!/bin/sh\nunzip -o "$0" -d /tmp/x && sh /tmp/x/run.sh\nexit 0\n'


def test_a_self_extracting_zip_is_refused(api, adapter_zip):
    detail = refused(upload(api, SHELL + adapter_zip), "starts", "self-extracting")
    assert str(len(SHELL)) in detail


def test_a_prefixed_zip_whose_offsets_count_the_prefix_is_refused(api, members):
    # zip -A (or appending to a file) rewrites the offsets, so the archive is consistent from the file's start
    buffer = io.BytesIO(SHELL)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    data = buffer.getvalue()
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].header_offset == len(SHELL)
    refused(upload(api, data), "self-extracting")


def test_data_after_the_zip_is_refused(api, adapter_zip):
    refused(upload(api, adapter_zip + b"\n#trailing payload"), "data after its end record")


def test_a_zip_with_a_comment_is_accepted(api, members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = b"made by train_prm"
        for name, data in members.items():
            archive.writestr(name, data)
    assert upload(api, buffer.getvalue()).status_code == 200


# --- item 15 (c): a staff session uploads with its CSRF token ----------------------------------------------------


@pytest.fixture
def staff_session(staff_user) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    client.get("/prm_adapters", HTTP_ACCEPT="text/html")  # the browsable API's page sets the CSRF cookie
    return client, client.cookies["csrftoken"].value


@pytest.mark.parametrize("content_type", ["application/zip", "application/octet-stream"])
def test_a_staff_session_uploads_with_its_csrf_token(staff_session, adapter_zip, content_type):
    client, token = staff_session
    url = UPLOAD.format(v="prm-staff")
    response = client.generic("POST", url, adapter_zip, content_type=content_type, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200, response.content
    assert PRMAdapter.objects.get().prm_version == "prm-staff"


def test_a_staff_session_upload_without_its_csrf_token_is_a_403(staff_session, adapter_zip, media_root):
    client, _token = staff_session
    response = client.generic("POST", UPLOAD.format(v="prm-staff"), adapter_zip, content_type="application/zip")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not PRMAdapter.objects.exists() and stored_files(media_root) == []


def test_a_session_that_is_not_staff_cannot_upload(django_user_model, adapter_zip):
    client = Client()
    client.force_login(django_user_model.objects.create_user(username="reader", password="a-long-test-password"))
    response = client.generic("POST", UPLOAD.format(v="prm-x"), adapter_zip, content_type="application/zip")
    assert response.status_code == 403
    assert not PRMAdapter.objects.exists()
