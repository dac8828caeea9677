"""Experiment configs are found by name in the built-in package and in EXPERIMENT_CONFIG_DIRS, and read datasets."""

from __future__ import annotations

import json
import textwrap

import pytest

from prmsite.core.answers import parse_prediction
from prmsite.core.configs.interfaces import RolloutConfig, template_fields
from prmsite.core.configs.loader import TemplateJsonConfig, config_discover, config_load
from prmsite.core.configs.rollout.grade_school_math import gsm8k_answer, gsm8k_label
from prmsite.core.configs.rollout.liar import liar_binary_label
from prmsite.core.configs.rollout.math import math_reference_answer
from prmsite.core.errors import ConfigError
from prmsite.core.grading import AnswerSpec, extract_answer, grade
from prmsite.core.steps import split_steps
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


def test_gsm8k_reference_is_the_number_after_the_four_hashes(gsm8k_file):
    config = config_load("grade_school_math", dataset_name=str(gsm8k_file))
    rows = items(config)
    assert config.answer_kind == "number"
    assert [config.get_reference_answer(row) for row in rows] == ["7", "2400", "-3"]
    assert "Tom has 3 apples" in config.get_root_prompt(rows[0])
    assert config.get_rollout_config()["answer_kind"] == "number"


def test_gsm8k_answer_refuses_an_answer_without_hashes():
    with pytest.raises(ConfigError, match="####"):
        gsm8k_answer("the answer is 7")
    assert gsm8k_answer("half of 7 is\n#### 3.5") == "3.5"
    assert gsm8k_label("so\n#### 1,200") == 1200
    with pytest.raises(ConfigError, match="not an integer"):
        gsm8k_label("#### 3.5")


def test_gsm8k_prediction_pattern_reads_the_models_final_answer_and_the_number_grader_judges_it():
    config = config_load("grade_school_math")
    spec = config.answer_spec()
    assert extract_answer("2 * 3 = 6\n#### 6", spec, config.prediction_pattern) == "6"
    assert extract_answer("so\n#### $1,200", spec, config.prediction_pattern) == "1,200"
    assert extract_answer("no final line", spec, config.prediction_pattern) is None
    assert grade(extract_answer("so\n#### 1,200", spec, config.prediction_pattern), "1200", spec).correct
    assert grade(extract_answer("so\n#### 1200.0", spec, config.prediction_pattern), "1200", spec).correct
    assert not grade(extract_answer("so\n#### 1201", spec, config.prediction_pattern), "1200", spec).correct
    # The integer reading of the pattern is unchanged for forests seeded as label before answer kinds existed.
    assert parse_prediction("so\n#### 1,200", config.prediction_pattern) == 1200


MATH_ROWS = [
    {  # MATH-500's shape: answer and solution
        "problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
        "solution": "We have $\\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
        "answer": "\\frac{3}{4}",
        "level": 1,
    },
    {  # the original MATH's shape: the answer only in the solution's last \boxed{}, with nested braces
        "problem": "Convert $(0,3)$ to polar coordinates.",
        "solution": "First \\boxed{r} is not it. We get $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$",
    },
    {"problem": "How many primes are below 10?", "solution": "2, 3, 5 and 7.", "answer": 4},
]


@pytest.fixture
def math_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MATH_DATASET", raising=False)
    return write_jsonl(tmp_path / "math" / "test.jsonl", MATH_ROWS)


def test_math_config_reads_a_local_jsonl_and_takes_the_answer_or_the_last_boxed(math_file, monkeypatch):
    monkeypatch.setenv("MATH_DATASET", str(math_file))
    config = config_load("math")
    rows = items(config)
    assert config.answer_kind == "math" and config.prediction_pattern == ""
    assert [config.get_reference_answer(row) for row in rows] == [
        "\\frac{3}{4}",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "4",
    ]
    prompt = config.get_root_prompt(rows[0])
    assert "Problem: What is $\\frac{1}{2} + \\frac{1}{4}$?" in prompt and "\\boxed{}" in prompt
    settings = config.get_rollout_config()
    assert settings["answer_kind"] == "math" and settings["dataset_name"] == str(math_file)
    assert settings["prediction_pattern"] == ""


def test_math_config_defaults_to_the_math_500_hub_dataset_and_takes_dataset_name(math_file, monkeypatch):
    monkeypatch.delenv("MATH_DATASET", raising=False)
    assert config_load("math").get_rollout_config()["dataset_name"] == "HuggingFaceH4/MATH-500"
    assert len(items(config_load("math", dataset_name=str(math_file)))) == 3


def test_math_reference_needs_an_answer_or_a_boxed_solution():
    assert math_reference_answer({"problem": "p", "solution": "so \\boxed{7}", "answer": "  "}) == "7"
    with pytest.raises(ConfigError, match=r"neither an 'answer' nor a .boxed"):
        math_reference_answer({"problem": "p", "solution": "no box here"})
    with pytest.raises(ConfigError, match="item fields: problem"):
        math_reference_answer({"problem": "p"})


def test_math_sample_response_splits_into_its_paragraphs_and_its_boxed_answer_grades():
    config = config_load("math")
    steps = split_steps(config.sample_response, config.reasoning_delimiter_pattern)
    assert len(steps) == 4 and "".join(steps) == config.sample_response
    spec = config.answer_spec()
    answer = extract_answer(config.sample_response, spec, config.prediction_pattern or None)
    assert answer == "\\frac{1}{2}"
    assert grade(answer, "0.5", spec).correct
    assert not grade(answer, "\\frac{1}{3}", spec).correct


@pytest.mark.parametrize(
    ("kind", "rows", "extra", "references"),
    [
        ("math", [{"q": "a", "label": "\\frac{1}{2}"}, {"q": "b", "label": " 3 "}], {}, ["\\frac{1}{2}", "3"]),
        ("number", [{"q": "a", "gold": 7}, {"q": "b", "gold": 12}], {"label_field": "gold"}, ["7", "12"]),
        ("text", [{"q": "a", "label": "Paris"}], {"answer_tolerance": 0.0}, ["Paris"]),
    ],
)
def test_a_template_json_declares_its_answer_kind_and_the_field_of_the_reference(
    tmp_path, kind, rows, extra, references
):
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, "template": "Q: {q}", "answer_kind": kind, **extra}))
    config = config_load(str(path), dataset_name=str(data))
    assert config.answer_kind == kind
    assert [config.get_reference_answer(row) for row in items(config)] == references
    settings = config.get_rollout_config()
    assert settings["answer_kind"] == kind
    assert settings["answer_tolerance"] == extra.get("answer_tolerance", AnswerSpec().tolerance)
    with pytest.raises(ConfigError, match="has no get_label"):
        config.get_label(rows[0])


def test_a_math_template_json_may_leave_the_prediction_pattern_out(tmp_path):
    path = tmp_path / "t.json"
    data = {k: v for k, v in TEMPLATE_JSON.items() if k != "prediction_pattern"}
    path.write_text(json.dumps({**data, "answer_kind": "math"}))
    assert config_load(str(path)).prediction_pattern == ""
    path.write_text(json.dumps({**data, "answer_kind": "number"}))
    with pytest.raises(ConfigError, match="lacks prediction_pattern"):
        config_load(str(path))


def test_a_template_json_label_kind_is_unchanged(tmp_path, liar_file):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, "label_map": {"pants-fire": 0, "true": 1}}))
    config = config_load(str(path), dataset_name=str(liar_file))
    rows = items(config)
    assert config.answer_kind == "label"
    assert [config.get_reference_answer(row) for row in rows[:2]] == ["0", "1"]
    assert config.get_rollout_config()["answer_kind"] == "label"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"answer_kind": "fraction"}, "answer_kind must be one of label, number, math, text"),
        ({"answer_kind": 3}, "answer_kind must be one of"),
        ({"answer_kind": "number", "answer_tolerance": "tight"}, "answer_tolerance must be a number"),
        ({"answer_kind": "number", "answer_tolerance": -1}, "answer_tolerance must be a number"),
        ({"answer_kind": "math", "label_map": {"a": 1}}, "label_map applies to answer_kind 'label' only"),
        ({"label_field": 5}, "label_field must be the name of an item field"),
        ({"label_map": {"a": "one"}}, "label_map: get_label must return an int"),
    ],
)
def test_a_bad_answer_setting_of_a_template_json_names_the_key(tmp_path, extra, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, **extra}))
    with pytest.raises(ConfigError, match=message) as info:
        config_load(str(path))
    assert str(path) in info.value.message


@pytest.mark.parametrize("value", [None, True, [1, 2], {"a": 1}])
def test_a_reference_field_that_is_not_text_or_a_number_is_refused(tmp_path, value):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, "answer_kind": "text"}))
    config = config_load(str(path), dataset_name=str(write_jsonl(tmp_path / "d.jsonl", [{"statement": "s"}])))
    with pytest.raises(ConfigError, match="not a reference answer"):
        config.get_reference_answer({"label": value})
    with pytest.raises(ConfigError, match="no label field 'label'"):
        config.get_reference_answer({"statement": "s"})


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
        (
            TEAM_CONFIG.replace(
                'rollout_config_version = "team-1"', 'rollout_config_version = "t"\n    answer_kind = "math"'
            ),
            "does not implement get_reference_answer",
        ),
        (
            TEAM_CONFIG.replace('rollout_config_version = "team-1"', 'answer_kind = "fuzzy"'),
            "answer_kind must be one of",
        ),
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


TEAM_MATH_CONFIG = """
from prmsite.core.configs.interfaces import RolloutConfig


class Config(RolloutConfig):
    rollout_config_version = "team-math-1"
    answer_kind = "number"
    answer_tolerance = 0.01
    template = "Q: {q}"
    reasoning_delimiter_pattern = "\\n"
    prediction_pattern = "answer: (\\\\S+)"

    def get_dataset_iterator(self, split):
        return [{"q": f"{split} question {i}", "a": i / 3} for i in range(3)]

    def get_root_prompt(self, item):
        return self.template.format(**item)

    def get_reference_answer(self, item):
        return f"{item['a']:.3f}"
"""


def test_a_team_config_of_another_kind_implements_get_reference_answer_only(config_dir):
    (config_dir / "team_math.py").write_text(TEAM_MATH_CONFIG)
    config = config_load("team_math")
    assert [config.get_reference_answer(item) for item in items(config)] == ["0.000", "0.333", "0.667"]
    assert config.answer_spec() == AnswerSpec(kind="number", tolerance=0.01)
    assert config.get_rollout_config()["answer_tolerance"] == 0.01


def test_an_existing_label_config_keeps_working_and_its_reference_is_its_label_as_text(config_dir):
    (config_dir / "team_task.py").write_text(TEAM_CONFIG)
    config = config_load("team_task")
    assert config.answer_kind == "label"
    assert [config.get_reference_answer(item) for item in items(config)] == ["0", "1", "2"]
    assert config.get_rollout_config()["answer_kind"] == "label"
