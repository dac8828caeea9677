"""seed_forest creates one root per item, records the config's provenance, and is all-or-nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from forests.models import Forest, Node, text_sha256
from forests.services import ERROR_BAD_SUFFIX, forest_name_make, forest_seed
from prmsite.core.configs.loader import config_load
from prmsite.core.errors import ApplicationError, ConfigError, ConflictError
from prmsite.core.grading import AnswerSpec
from tests.forests.conftest import LIAR_ROWS, write_jsonl
from tests.forests.test_configs import MATH_ROWS, TEAM_CONFIG, TEAM_MATH_CONFIG

pytestmark = pytest.mark.django_db


def seed(*args: str) -> tuple[dict, str]:
    out, err = StringIO(), StringIO()
    call_command("seed_forest", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue()


def git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_seed_forest_creates_one_root_per_item_and_prints_the_forest_name(liar_file):
    summary, _ = seed(
        "--dataset_config_name",
        "liar",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "t1",
        "--dataset_name",
        str(liar_file),
    )
    assert summary["forest_name"] == "liar-test-t1"
    assert summary["trees"] == 5
    forest = Forest.objects.get(name="liar-test-t1")
    roots = list(Node.objects.filter(forest=forest).order_by("id"))
    assert len(roots) == 5
    assert all(root.depth == 0 and root.parent_id is None and root.tree_id == root.pk for root in roots)
    assert [root.ground_truth for root in roots] == [0, 1, 1, 0, 1]
    assert [root.reference_answer for root in roots] == ["0", "1", "1", "0", "1"]
    assert summary["answer_kind"] == "label"
    assert [root.serialized_item["id"] for root in roots] == ["a", "b", "c", "d", "e"]
    assert "The moon is made of cheese." in roots[0].text
    assert roots[0].text_sha256 == text_sha256(roots[0].text)


def test_the_forest_keeps_the_generation_settings_a_worker_needs(liar_file):
    seed(
        "--dataset_config_name",
        "liar",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "g",
        "--dataset_name",
        str(liar_file),
    )
    forest = Forest.objects.get(name="liar-test-g")
    config = config_load("liar")
    assert forest.config_name == "liar"
    assert forest.dataset_split == "test"
    assert forest.rollout_config["template"] == config.template
    assert forest.rollout_config["reasoning_delimiter_pattern"] == config.reasoning_delimiter_pattern
    assert forest.rollout_config["prediction_pattern"] == config.prediction_pattern
    assert forest.rollout_config["rollout_config_version"] == config.rollout_config_version
    assert forest.rollout_config["config_name"] == "liar"
    assert forest.rollout_config["answer_kind"] == "label"
    assert AnswerSpec.from_settings(forest.rollout_config) == AnswerSpec(kind="label")


def test_the_forest_records_the_config_source_and_its_hash(liar_file):
    seed(
        "--dataset_config_name",
        "liar",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "p",
        "--dataset_name",
        str(liar_file),
    )
    forest = Forest.objects.get(name="liar-test-p")
    source = Path(config_load("liar").source_path).read_text()
    assert forest.config_source == source
    assert forest.config_sha256 == hashlib.sha256(source.encode()).hexdigest()


def test_limit_seeds_only_the_first_items(liar_file):
    summary, _ = seed(
        "--dataset_config_name", "liar", "--dataset_split", "test", "--limit", "2", "--dataset_name", str(liar_file)
    )
    roots = Node.objects.filter(forest__name=summary["forest_name"]).order_by("id")
    assert [root.serialized_item["id"] for root in roots] == ["a", "b"]


def test_without_a_suffix_the_name_ends_with_a_utc_timestamp():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert forest_name_make(config_name="liar", dataset_split="test", now=now) == "liar-test-20260102-030405"
    assert forest_name_make(config_name="liar", dataset_split="test[:10%]", suffix="x") == "liar-test_10-x"


@pytest.mark.parametrize("suffix", ["a/b", "a b", "é", "x?y"])
def test_a_suffix_that_would_break_the_forest_url_is_refused(suffix):
    with pytest.raises(ApplicationError) as info:
        forest_name_make(config_name="liar", dataset_split="test", suffix=suffix)
    assert info.value.message == ERROR_BAD_SUFFIX.format(suffix=suffix)


def test_a_name_collision_is_a_clear_error_and_changes_nothing(liar_file):
    args = [
        "--dataset_config_name",
        "liar",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "same",
        "--dataset_name",
        str(liar_file),
    ]
    seed(*args)
    with pytest.raises(CommandError, match="already exists"):
        seed(*args)
    assert Node.objects.count() == 5


def test_exist_ok_makes_a_second_seed_a_no_op(liar_file):
    args = [
        "--dataset_config_name",
        "liar",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "demo",
        "--dataset_name",
        str(liar_file),
        "--exist_ok",
    ]
    first, _ = seed(*args)
    second, err = seed(*args)
    assert first["created"] is True and second["created"] is False
    assert second["forest_name"] == first["forest_name"]
    assert "exists already" in err
    assert Forest.objects.count() == 1 and Node.objects.count() == 5


def test_a_failure_half_way_leaves_no_forest_behind(tmp_path, liar_file):
    rows = [*LIAR_ROWS[:3], {"id": "bad", "statement": "x", "label": "sort-of"}, *LIAR_ROWS[3:]]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    config = config_load("liar", dataset_name=str(path))
    with pytest.raises(ConfigError, match=r"item #3: LIAR label 'sort-of'"):
        forest_seed(config=config, dataset_split="test", forest_name_suffix="half", batch_size=2)
    assert not Forest.objects.exists()
    assert not Node.objects.exists()
    # The same command succeeds once the data is fixed: nothing half-seeded stands in the way.
    config = config_load("liar", dataset_name=str(liar_file))
    assert forest_seed(config=config, dataset_split="test", forest_name_suffix="half").trees == 5


def test_seeding_reports_progress_in_batches(liar_file):
    calls = []
    config = config_load("liar", dataset_name=str(liar_file))
    forest_seed(config=config, dataset_split="test", batch_size=2, on_progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_an_empty_split_creates_no_forest(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    config = config_load("liar", dataset_name=str(path))
    with pytest.raises(ApplicationError):
        forest_seed(config=config, dataset_split="test")
    assert not Forest.objects.exists()


def test_a_conflicting_name_raises_a_conflict(liar_file):
    config = config_load("liar", dataset_name=str(liar_file))
    forest_seed(config=config, dataset_split="test", forest_name_suffix="c")
    with pytest.raises(ConflictError):
        forest_seed(config=config, dataset_split="test", forest_name_suffix="c")


def test_a_config_in_a_clean_git_folder_records_its_commit(config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    git(config_dir, "init", "-q")
    git(config_dir, "add", "team_task.py")
    git(config_dir, "commit", "-qm", "config")
    head = git(config_dir, "rev-parse", "HEAD")
    summary, err = seed("--dataset_config_name", "team_task", "--dataset_split", "dev", "--forest_name_suffix", "c")
    forest = Forest.objects.get(name=summary["forest_name"])
    assert forest.config_git_commit == head == summary["config_git_commit"]
    assert forest.config_git_dirty is False
    assert "Warning" not in err
    assert Node.objects.filter(forest=forest).count() == 3


def test_uncommitted_changes_in_the_config_folder_are_recorded_with_a_warning(config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    git(config_dir, "init", "-q")
    git(config_dir, "add", "team_task.py")
    git(config_dir, "commit", "-qm", "config")
    (config_dir / "team_task.py").write_text(TEAM_CONFIG.replace("Q: {q}", "Question: {q}"))
    summary, err = seed("--dataset_config_name", "team_task", "--dataset_split", "dev", "--forest_name_suffix", "d")
    forest = Forest.objects.get(name=summary["forest_name"])
    assert forest.config_git_dirty is True
    assert "uncommitted changes" in err
    assert "Question: {q}" in forest.config_source  # the source as it was used, not as committed


def test_a_config_outside_any_repository_has_no_commit(config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    summary, _ = seed("--dataset_config_name", "team_task", "--dataset_split", "dev", "--forest_name_suffix", "n")
    forest = Forest.objects.get(name=summary["forest_name"])
    assert forest.config_git_commit == ""
    assert summary["config_git_commit"] is None


def test_a_template_json_seeds_a_forest(tmp_path, liar_file):
    from tests.forests.test_configs import TEMPLATE_JSON

    path = tmp_path / "templates" / "example-20231018a2.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                **TEMPLATE_JSON,
                "dataset_name": str(liar_file),
                "label_field": "id",
                "label_map": {k: i for i, k in enumerate("abcde")},
            }
        )
    )
    summary, _ = seed("--dataset_config_name", str(path), "--dataset_split", "test", "--forest_name_suffix", "j")
    assert summary["forest_name"] == "example-20231018a2-test-j"
    forest = Forest.objects.get(name=summary["forest_name"])
    assert forest.config_source == path.read_text()
    assert sorted(Node.objects.filter(forest=forest).values_list("ground_truth", flat=True)) == [0, 1, 2, 3, 4]


def test_an_unknown_config_fails_with_one_line():
    with pytest.raises(CommandError, match="no experiment config named 'nope'"):
        seed("--dataset_config_name", "nope", "--dataset_split", "test")


def test_the_demo_config_seeds_twenty_invented_statements():
    summary, _ = seed("--dataset_config_name", "liar_demo", "--dataset_split", "test", "--forest_name_suffix", "demo")
    assert summary["trees"] == 20
    labels = list(Node.objects.filter(forest__name="liar_demo-test-demo").values_list("ground_truth", flat=True))
    assert set(labels) == {0, 1}


def test_a_math_forest_keeps_each_reference_answer_as_text_and_no_integer_ground_truth(tmp_path):
    data = write_jsonl(tmp_path / "math" / "test.jsonl", MATH_ROWS)
    summary, _ = seed(
        "--dataset_config_name",
        "math",
        "--dataset_split",
        "test",
        "--forest_name_suffix",
        "m",
        "--dataset_name",
        str(data),
    )
    assert summary["forest_name"] == "math-test-m" and summary["trees"] == 3 and summary["answer_kind"] == "math"
    forest = Forest.objects.get(name="math-test-m")
    assert AnswerSpec.from_settings(forest.rollout_config) == AnswerSpec(kind="math")
    assert forest.rollout_config["prediction_pattern"] == ""
    roots = list(Node.objects.filter(forest=forest).order_by("id"))
    assert [root.reference_answer for root in roots] == ["\\frac{3}{4}", "\\left( 3, \\frac{\\pi}{2} \\right)", "4"]
    assert [root.ground_truth for root in roots] == [None, None, None]
    assert roots[0].text.endswith("Problem: What is $\\frac{1}{2} + \\frac{1}{4}$?\n\n")


def test_grade_school_math_seeds_number_references(gsm8k_file):
    summary, _ = seed(
        "--dataset_config_name", "grade_school_math", "--dataset_split", "test", "--dataset_name", str(gsm8k_file)
    )
    forest = Forest.objects.get(name=summary["forest_name"])
    assert forest.rollout_config["answer_kind"] == "number"
    roots = Node.objects.filter(forest=forest).order_by("id")
    assert [(r.reference_answer, r.ground_truth) for r in roots] == [("7", None), ("2400", None), ("-3", None)]


def test_a_team_config_of_the_number_kind_seeds_with_its_tolerance(config_dir):
    (config_dir / "team_math.py").write_text(TEAM_MATH_CONFIG)
    summary, _ = seed("--dataset_config_name", "team_math", "--dataset_split", "dev", "--forest_name_suffix", "t")
    forest = Forest.objects.get(name=summary["forest_name"])
    assert AnswerSpec.from_settings(forest.rollout_config) == AnswerSpec(kind="number", tolerance=0.01)
    assert list(Node.objects.filter(forest=forest).order_by("id").values_list("reference_answer", flat=True)) == [
        "0.000",
        "0.333",
        "0.667",
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"problem": "p", "solution": "no box"}, r"item #1: item has neither an 'answer' nor a \\boxed"),
        ({"problem": "p", "answer": "x" * 1001}, "item #1: the reference answer is longer than 1000 characters"),
    ],
)
def test_an_item_without_a_usable_reference_answer_seeds_nothing(tmp_path, row, message):
    data = write_jsonl(tmp_path / "math.jsonl", [MATH_ROWS[0], row, MATH_ROWS[2]])
    config = config_load("math", dataset_name=str(data))
    with pytest.raises(ConfigError, match=message):
        forest_seed(config=config, dataset_split="test", forest_name_suffix="bad", batch_size=1)
    assert not Forest.objects.exists() and not Node.objects.exists()


def test_a_template_json_of_the_text_kind_seeds_the_fields_value(tmp_path):
    from tests.forests.test_configs import TEMPLATE_JSON

    data = write_jsonl(tmp_path / "capitals.jsonl", [{"country": "France", "capital": "Paris"}])
    path = tmp_path / "capitals.json"
    path.write_text(
        json.dumps(
            {
                **TEMPLATE_JSON,
                "template": "The capital of {country}?",
                "prediction_pattern": "Answer: (.+)",
                "answer_kind": "text",
                "label_field": "capital",
                "dataset_name": str(data),
            }
        )
    )
    summary, _ = seed("--dataset_config_name", str(path), "--dataset_split", "test", "--forest_name_suffix", "x")
    root = Node.objects.get(forest__name=summary["forest_name"])
    assert (root.reference_answer, root.ground_truth, root.text) == ("Paris", None, "The capital of France?")
    assert Forest.objects.get(name=summary["forest_name"]).rollout_config["answer_kind"] == "text"
