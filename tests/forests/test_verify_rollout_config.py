"""verify_rollout_config shows what a config makes of the first items, and names what is wrong with a broken one."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.forests.conftest import write_jsonl
from tests.forests.test_configs import MATH_ROWS, TEAM_CONFIG, TEMPLATE_JSON


def verify(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("verify_rollout_config", *args, stdout=out, stderr=err, no_color=True)
    return out.getvalue(), err.getvalue()


def test_it_prints_the_item_prompt_label_steps_and_prediction(liar_file, monkeypatch):
    monkeypatch.setenv("LIAR_DATASET", str(liar_file))
    out, _ = verify("--config_name", "liar", "--dataset_split", "test")
    assert '"statement": "The moon is made of cheese."' in out  # serialized item
    assert "Below is a dubious statement: \n\nThe moon is made of cheese." in out  # root prompt
    assert "Item #0: label\n0\n" in out
    assert "Steps (5, split by reasoning_delimiter_pattern)" in out
    assert "[5] '<u>Verdict: False (code: 0)</u>'" in out
    assert "Prediction (prediction_pattern)\n0\n" in out
    assert "Answer (prediction_pattern)\n'0'\n" in out
    assert "Verdict (label) against item #0's reference '0'\ncorrect\n" in out
    assert out.rstrip().endswith("OK: 1 item(s) of split 'test', 5 steps, prediction 0, correct")


def test_it_shows_as_many_items_as_asked(liar_file):
    out, _ = verify(
        "--config_name", "liar", "--dataset_split", "test", "--num_examples", "3", "--dataset_name", str(liar_file)
    )
    assert "Item #2: label" in out and "Item #3" not in out


def test_a_sample_response_can_be_given(gsm8k_file):
    out, _ = verify(
        "--config_name",
        "grade_school_math",
        "--dataset_split",
        "test",
        "--dataset_name",
        str(gsm8k_file),
        "--sample_response",
        "3 + 4 = 7\nso 7\n#### 7",
    )
    assert "Item #0: reference answer (number)\n7\n" in out
    assert "[1] '3 + 4 = 7'\n[2] '\\nso 7'\n[3] '\\n#### 7'" in out
    assert "Prediction (prediction_pattern)" not in out  # numbers are not integer labels
    assert "Answer (prediction_pattern)\n'7'\n" in out
    assert "Verdict (number) against item #0's reference '7'\ncorrect\n" in out
    assert out.rstrip().endswith("3 steps, answer '7', correct")


def test_a_math_config_shows_the_boxed_answer_and_the_graders_verdict(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    args = ["--config_name", "math", "--dataset_split", "test", "--dataset_name", str(data)]
    out, err = verify(*args)
    assert "Item #0: reference answer (math)\n\\frac{3}{4}\n" in out
    assert "Steps (4, split by reasoning_delimiter_pattern)" in out
    assert "Answer (the last \\boxed{})\n'\\\\frac{1}{2}'\n" in out
    assert "Verdict (math) against item #0's reference '\\\\frac{3}{4}'\nnot correct\n" in out
    assert err == ""
    out, _ = verify(*args, "--sample_response", "Add them.\n\nThe sum is $\\boxed{0.75}$.")
    assert "Answer (the last \\boxed{})\n'0.75'\n" in out
    assert out.rstrip().endswith("2 steps, answer '0.75', correct")
    out, err = verify(*args, "--sample_response", "I do not know.")
    assert out.rstrip().endswith("1 steps, answer None, not correct (no answer)")
    assert "no answer found in the sample response (the last \\boxed{})" in err


def test_a_math_item_without_a_reference_is_named(tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", [{"problem": "p", "solution": "no box"}])
    with pytest.raises(CommandError, match=r"item #0: get_reference_answer: item has neither an 'answer'"):
        verify("--config_name", "math", "--dataset_split", "test", "--dataset_name", str(data))


def test_a_response_without_a_verdict_warns(liar_file):
    out, err = verify(
        "--config_name",
        "liar",
        "--dataset_split",
        "test",
        "--dataset_name",
        str(liar_file),
        "--sample_response",
        "no verdict at all",
    )
    assert "Prediction (prediction_pattern)\nNone\n" in out
    assert "finds no integer label" in err
    assert out.rstrip().endswith("prediction None, not correct (no answer)")


def broken(config_dir, source: str) -> str:
    (config_dir / "broken.py").write_text(source)
    with pytest.raises(CommandError) as info:
        verify("--config_name", "broken", "--dataset_split", "test")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_config_missing_a_method_is_named(config_dir):
    message = broken(config_dir, TEAM_CONFIG.replace("def get_root_prompt", "def root_prompt"))
    assert "does not implement get_root_prompt" in message


def test_a_label_that_is_not_an_int_is_refused(config_dir):
    message = broken(config_dir, TEAM_CONFIG.replace('return item["a"]', 'return str(item["a"])'))
    assert "item #0: get_label must return an int, got str '0'" in message


def test_a_float_label_is_refused(config_dir):
    message = broken(config_dir, TEAM_CONFIG.replace('return item["a"]', 'return item["a"] + 0.5'))
    assert "get_label must return an int, got float" in message


def test_a_template_naming_a_field_the_item_lacks_is_named(liar_file, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, "template": "{statement} said by {speaker_name}"}))
    with pytest.raises(CommandError, match=r"item #0: get_root_prompt: template names field\(s\) 'speaker_name'"):
        verify("--config_name", str(path), "--dataset_split", "test", "--dataset_name", str(liar_file))


def test_a_config_formatting_its_template_itself_gets_the_missing_field_named(config_dir):
    message = broken(config_dir, TEAM_CONFIG.replace('template = "Q: {q}"', 'template = "Q: {q} from {source}"'))
    assert "item #0: get_root_prompt: template names field(s) 'source' that the item lacks (item fields: a, q)" in (
        message
    )


@pytest.mark.parametrize(
    ("setting", "pattern"),
    [("reasoning_delimiter_pattern", "Step(("), ("prediction_pattern", "code: ([-0-1]+")],
)
def test_patterns_that_do_not_compile_are_named(liar_file, tmp_path, setting, pattern):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, setting: pattern}))
    with pytest.raises(CommandError, match=f"{setting} .* does not compile"):
        verify("--config_name", str(path), "--dataset_split", "test", "--dataset_name", str(liar_file))


def test_a_prediction_pattern_with_two_groups_is_refused(liar_file, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({**TEMPLATE_JSON, "prediction_pattern": "(code): (\\d)"}))
    with pytest.raises(CommandError, match="has 2 groups"):
        verify("--config_name", str(path), "--dataset_split", "test", "--dataset_name", str(liar_file))


def test_a_method_that_raises_is_named(config_dir):
    message = broken(config_dir, TEAM_CONFIG.replace('return item["a"]', 'return item["missing"]'))
    assert "item #0: get_label raised KeyError: 'missing'" in message


def test_a_split_without_items_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(CommandError):
        verify("--config_name", "liar", "--dataset_split", "test", "--dataset_name", str(path))
