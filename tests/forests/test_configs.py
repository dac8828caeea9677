"""Experiment configs are found by name in the built-in package and in EXPERIMENT_CONFIG_DIRS, and read datasets."""

from __future__ import annotations

import json
import textwrap

import pytest

from prmsite.core.answers import parse_prediction
from prmsite.core.configs.interfaces import RolloutConfig, template_fields
from prmsite.core.configs.loader import TemplateJsonConfig, config_discover, config_load
from prmsite.core.configs.rollout.grade_school_math import gsm8k_label
from prmsite.core.configs.rollout.liar import liar_binary_label
from prmsite.core.errors import ConfigError
from tests.forests.conftest import LIAR_ROWS, write_jsonl

TEMPLATE_JSON = {
    "rollout_config_version": "example-20231018a2",
    "template": "Below is a dubious statement: \n\n{statement} \n\nIs it true? End with (code: 1) or (code: 0).",
    "reasoning_delimiter_pattern": "</?u>|Step|```",
    "prediction_pattern": "code: ([-0-1]+)",
}

TEAM_CONFIG = """
from prmsite.core.configs.interfaces import RolloutConfig


class Config(RolloutConfig):
    rollout_config_version = "team-1"
    template = "Q: {q}"
    reasoning_delimiter_pattern = "\\n"
    prediction_pattern = "answer: (\\\\d+)"

    def get_dataset_iterator(self, split):
        return [{"q": f"{split} question {i}", "a": i} for i in range(3)]

    def get_root_prompt(self, item):
        return self.template.format(**item)

    def get_label(self, item):
        return item["a"]
"""


def items(config, split="test"):
    return list(config.get_dataset_iterator(split))


def test_builtin_configs_are_discovered():
    names = {location.name for location in config_discover() if location.builtin}
    assert {"liar", "grade_school_math", "liar_demo"} <= names


def test_liar_reads_a_local_jsonl_named_by_the_environment(liar_file, monkeypatch):
    monkeypatch.setenv("LIAR_DATASET", str(liar_file).replace("liar_test", "liar_{split}"))
    config = config_load("liar")
    rows = items(config)
    assert [row["id"] for row in rows] == ["a", "b", "c", "d", "e"]
    assert [config.get_label(row) for row in rows] == [0, 1, 1, 0, 1]
    assert "The moon is made of cheese." in config.get_root_prompt(rows[0])
    assert config.get_rollout_config()["dataset_name"].endswith("liar_{split}.jsonl")


def test_liar_reads_labels_given_as_hub_class_indices(tmp_path):
    path = write_jsonl(tmp_path / "ids.jsonl", [{"statement": f"s{i}", "label": i} for i in range(6)])
    config = config_load("liar", dataset_name=str(path))
    assert [config.get_label(row) for row in items(config)] == [0, 1, 1, 1, 0, 0]


@pytest.mark.parametrize(
    ("label", "binary"),
    [
        ("true", 1),
        ("mostly-true", 1),
        ("half-true", 1),
        ("barely-true", 0),
        ("false", 0),
        ("pants-fire", 0),
        ("Pants on fire", 0),
        (0, 0),  # hub order: false
        (1, 1),  # half-true
        (2, 1),  # mostly-true
        (3, 1),  # true
        (4, 0),  # barely-true
        (5, 0),  # pants-fire
    ],
)
def test_liar_maps_the_six_way_label_to_binary(label, binary):
    assert liar_binary_label(label) == binary


@pytest.mark.parametrize("label", ["maybe", 6, -1, True, None])
def test_liar_refuses_an_unknown_label(label):
    with pytest.raises(ConfigError):
        liar_binary_label(label)


def test_gsm8k_label_is_the_integer_after_the_four_hashes(gsm8k_file):
    config = config_load("grade_school_math", dataset_name=str(gsm8k_file))
    rows = items(config)
    assert [config.get_label(row) for row in rows] == [7, 2400, -3]
    assert "Tom has 3 apples" in config.get_root_prompt(rows[0])


def test_gsm8k_label_refuses_an_answer_without_hashes():
    with pytest.raises(ConfigError, match="####"):
        gsm8k_label("the answer is 7")


def test_gsm8k_prediction_pattern_reads_the_models_final_answer():
    config = config_load("grade_school_math")
    assert parse_prediction("2 * 3 = 6\n#### 6", config.prediction_pattern) == 6
    assert parse_prediction("so\n#### 1,200", config.prediction_pattern) == 1200
    assert parse_prediction("no final line", config.prediction_pattern) is None


def test_datasets_are_read_from_csv_parquet_folders_and_save_to_disk(tmp_path):
    import datasets

    rows = [{"statement": s["statement"], "label": str(s["label"])} for s in LIAR_ROWS]
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_csv(str(tmp_path / "liar.csv"), index=False)
    dataset.to_parquet(str(tmp_path / "liar.parquet"))
    datasets.DatasetDict({"test": dataset, "train": dataset.select(range(2))}).save_to_disk(str(tmp_path / "dd"))
    write_jsonl(tmp_path / "folder" / "test.jsonl", rows)
    write_jsonl(tmp_path / "folder" / "train.jsonl", rows[:1])
    for location, split, expected in [
        (tmp_path / "liar.csv", "test", 5),
        (tmp_path / "liar.parquet", "validation", 5),
        (tmp_path / "dd", "train", 2),
        (tmp_path / "folder", "train", 1),
        (tmp_path / "folder", "test", 5),
    ]:
        config = config_load("liar", dataset_name=str(location))
        got = items(config, split)
        assert len(got) == expected, location
        assert got[0]["statement"] == LIAR_ROWS[0]["statement"]


def test_a_missing_split_of_a_saved_dataset_dict_is_a_clear_error(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(LIAR_ROWS[:1])}).save_to_disk(str(tmp_path / "dd"))
    config = config_load("liar", dataset_name=str(tmp_path / "dd"))
    with pytest.raises(ConfigError, match="has no split 'test'"):
        items(config, "test")


def test_a_missing_local_path_is_a_clear_error(tmp_path):
    config = config_load("liar", dataset_name=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="does not exist"):
        items(config)


def test_a_hub_name_is_not_fetched_offline():
    config = config_load("liar", dataset_name="someone/not-a-real-dataset")
    with pytest.raises(ConfigError, match="cannot read split 'test'"):
        items(config)


def test_a_team_config_folder_is_searched(config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    config = config_load("team_task")
    assert isinstance(config, RolloutConfig)
    assert config.config_name == "team_task"
    assert config.source_path == str(config_dir / "team_task.py")
    assert [config.get_root_prompt(item) for item in items(config, "dev")][:1] == ["Q: dev question 0"]
    assert "team_task" in {location.name for location in config_discover() if not location.builtin}


def test_a_template_json_in_a_config_folder_is_a_config(config_dir, liar_file):
    (config_dir / "liar_template.json").write_text(
        json.dumps({**TEMPLATE_JSON, "dataset_name": str(liar_file), "label_map": {"pants-fire": 0, "true": 1}})
    )
    config = config_load("liar_template")
    assert isinstance(config, TemplateJsonConfig)
    rows = items(config)
    assert config.get_root_prompt(rows[0]).startswith("Below is a dubious statement: \n\nThe moon is made of cheese.")
    assert config.get_label(rows[0]) == 0
    assert config.get_label(rows[1]) == 1
    with pytest.raises(ConfigError, match="not in label_map"):
        config.get_label(rows[2])
    assert config.get_rollout_config()["prediction_pattern"] == "code: ([-0-1]+)"


def test_a_template_json_is_loaded_by_path_with_the_dataset_given_apart(tmp_path, liar_file):
    path = tmp_path / "example-20231018a2.json"
    path.write_text(json.dumps(TEMPLATE_JSON))
    config = config_load(str(path), dataset_name=str(liar_file))
    assert config.config_name == "example-20231018a2"
    assert len(items(config)) == 5


def test_a_template_json_without_a_dataset_says_so(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(TEMPLATE_JSON))
    with pytest.raises(ConfigError, match="--dataset_name"):
        items(config_load(str(path)))


def test_a_template_json_missing_a_setting_is_refused(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({k: v for k, v in TEMPLATE_JSON.items() if k != "prediction_pattern"}))
    with pytest.raises(ConfigError, match="lacks prediction_pattern"):
        config_load(str(path))


@pytest.mark.parametrize("name", ["Liar", "liar2", "liar-new", "../liar", "", "_private"])
def test_a_config_name_must_be_lowercase_letters_and_underscores(name):
    with pytest.raises(ConfigError):
        config_load(name)


def test_an_unknown_config_lists_where_it_looked(config_dir):
    with pytest.raises(ConfigError, match="no experiment config named 'nothing_here'") as info:
        config_load("nothing_here")
    assert str(config_dir) in info.value.message


def test_a_name_defined_twice_is_refused_rather_than_shadowed(config_dir):
    (config_dir / "liar.py").write_text(TEAM_CONFIG)
    with pytest.raises(ConfigError, match="more than one place"):
        config_load("liar")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "defines no class named Config"),
        ("class Config:\n    pass\n", "must subclass"),
        (TEAM_CONFIG.replace("def get_label", "def get_labels"), "does not implement get_label"),
        ("import not_a_module_anywhere\n", "fails to import: ModuleNotFoundError"),
    ],
)
def test_a_broken_team_config_is_a_clear_error(config_dir, source, message):
    (config_dir / "broken.py").write_text(textwrap.dedent(source))
    with pytest.raises(ConfigError, match=message):
        config_load("broken")


def test_loading_a_team_config_leaves_sys_path_alone(config_dir):
    import sys

    before = list(sys.path)
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    config_load("team_task")
    assert sys.path == before


def test_template_fields_are_the_names_of_the_placeholders():
    assert template_fields("a {x} b {y.z} c {w[0]} {{literal}} {x}") == ["x", "y", "w"]
    with pytest.raises(ConfigError, match="positional"):
        template_fields("a {} b")


def test_a_template_naming_a_missing_field_says_which():
    config = config_load("liar")
    with pytest.raises(ConfigError, match=r"'statement'.*item fields: claim, label"):
        config.get_root_prompt({"claim": "x", "label": "true"})


def test_prediction_is_the_last_match_as_an_int():
    pattern = TEMPLATE_JSON["prediction_pattern"]
    assert parse_prediction("say (code: 1) or (code: 0) ... Verdict (code: 0)", pattern) == 0
    assert parse_prediction("Verdict: more info (code: -1)", pattern) == -1
    assert parse_prediction("no verdict", pattern) is None
    assert parse_prediction("code: --", pattern) is None
