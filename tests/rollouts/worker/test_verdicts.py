"""The AI labeller's reading of a judge's answer: JSON wherever it is, 'Step N: code' lines, and the answers it refuses
rather than reading half; the schema asked for in each structured-output mode; the prompt template."""

from __future__ import annotations

import ast
import json

import pytest

from rollouts.worker.judge_prompt import DEFAULT_TEMPLATE, FIELDS, PromptTemplate, TemplateError
from rollouts.worker.verdicts import (
    DECODE_BUDGET,
    KIND_BAD_CODE,
    KIND_CONFLICT,
    KIND_INCOMPLETE,
    KIND_NO_VERDICTS,
    KIND_WRONG_STEPS,
    VerdictError,
    parse_verdicts,
    structured_output_body,
    verdict_schema,
)

SCHEMA_ANSWER = {
    "steps": [
        {"step": 1, "explanation": "reads the claim right", "label": 1},
        {"step": 2, "explanation": "the sum is wrong", "label": 0},
        {"step": 3, "explanation": "only restates", "label": 2},
    ]
}
CODES = (1, 0, 2)
EXPLANATIONS = ("reads the claim right", "the sum is wrong", "only restates")


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(SCHEMA_ANSWER),
        "Sure! Here is my grading.\n" + json.dumps(SCHEMA_ANSWER, indent=2) + "\nLet me know if you need more.",
        "```json\n" + json.dumps(SCHEMA_ANSWER, indent=2) + "\n```",
        # a reasoning model's thinking (with braces of its own) before the answer
        "<think>Step 1: 1? {draft} Step 2: maybe 1</think>\n" + json.dumps(SCHEMA_ANSWER),
        # an example in the prose first, the real answer last
        'The format is {"steps": [{"step": 1, "label": 1}]}. My answer:\n' + json.dumps(SCHEMA_ANSWER),
        # trailing commas and a comment, as models write them
        '{"steps": [\n  // graded\n  {"step": 1, "explanation": "reads the claim right", "label": 1,},\n'
        '  {"step": 2, "explanation": "the sum is wrong", "label": "0"},\n'
        '  {"step": 3, "explanation": "only restates", "label": 2.0},\n]}',
        # Python-style literals
        "{'verdicts': [{'step': 1, 'reason': 'reads the claim right', 'verdict': 'preferred'}, "
        "{'step': 2, 'reason': 'the sum is wrong', 'verdict': 'not preferred'}, "
        "{'step': 3, 'reason': 'only restates', 'verdict': 'neutral'}]}",
        # out of order, numbered
        json.dumps({"steps": list(reversed(SCHEMA_ANSWER["steps"]))}),
        # parallel lists
        json.dumps({"labels": list(CODES), "explanations": list(EXPLANATIONS)}),
        # a mapping by step
        json.dumps(
            {
                "Step 1": {"label": 1, "rationale": EXPLANATIONS[0]},
                "2": {"grade": 0, "rationale": EXPLANATIONS[1]},
                "step 3": {"score": 2, "rationale": EXPLANATIONS[2]},
            }
        ),
    ],
)
def test_json_answers_are_read_wherever_they_are(answer):
    verdicts = parse_verdicts(answer, 3)
    assert verdicts.codes == CODES and verdicts.source == "json"
    assert verdicts.explanations == EXPLANATIONS


@pytest.mark.parametrize(
    "answer",
    [
        "Step 1: 1 — reads the claim right\nStep 2: 0 — the sum is wrong\nStep 3: 2 — only restates",
        "**Step 1:** 1 (preferred) - reads the claim right\n**Step 2:** 0 (not preferred): the sum is wrong\n"
        "**Step 3:** 2 (neutral) \u2013 only restates",  # an en dash
        "Grades:\n- Step 1 - label: 1 - reads the claim right\n- Step 2 (label 0): the sum\nis wrong\n\n"
        "- Step 3: code 2, only restates\n\nOverall the solution fails at step 2.",
        # the steps restated before they are graded: each step takes its last line
        "Step 1: The claim says 2 + 2 = 4.\nStep 2: 5 + 3 = 9 is wrong.\n\n"
        "Step 1: 1 — reads the claim right\nStep 2: 0 — the sum is wrong\nStep 3: 2 — only restates",
        "1. Step 1: 1: reads the claim right\n2. Step 2: 0: the sum is wrong\n3. Step 3: 2: only restates",
    ],
)
def test_step_lines_are_read_with_their_explanations(answer):
    verdicts = parse_verdicts(answer, 3)
    assert verdicts.codes == CODES and verdicts.source == "lines"
    assert verdicts.explanations == EXPLANATIONS


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        ("I think the solution is fine overall.", KIND_NO_VERDICTS, "no readable verdicts"),
        ("", KIND_NO_VERDICTS, "no readable verdicts"),
        (json.dumps({"steps": SCHEMA_ANSWER["steps"][:2]}), KIND_INCOMPLETE, r"no verdict for step\(s\) 3 of 3"),
        ("Step 1: 1 — fine\nStep 3: 2 — restates", KIND_INCOMPLETE, r"no verdict for step\(s\) 2 of 3"),
        ("[1, 0]", KIND_INCOMPLETE, "2 verdicts for 3 steps"),
        ("[1, 0, 2, 1]", KIND_WRONG_STEPS, "4 verdicts for 3 steps"),
        ("Step 1: 1\nStep 2: 0\nStep 3: 2\nStep 4: 1", KIND_WRONG_STEPS, "grades step 4, but the rollout has steps 1"),
        ("Step 0: 1\nStep 1: 0\nStep 2: 2", KIND_WRONG_STEPS, "grades step 0"),
        ("Step 1: 1\nStep 2: 3 — very wrong\nStep 3: 2", KIND_BAD_CODE, "step 2 has the code '3'"),
        ('{"steps": [{"step": 1, "label": 1}, {"step": 2, "label": -1}, {"step": 3, "label": 2}]}', KIND_BAD_CODE,
         "step 2 has the code -1"),
        ('{"steps": [{"step": 1, "label": "yes"}, {"step": 2, "label": 0}, {"step": 3, "label": 2}]}', KIND_BAD_CODE,
         "step 1 has the code 'yes'"),
        ('{"steps": [{"step": 1, "label": true}, {"step": 2, "label": 0}, {"step": 3, "label": 2}]}', KIND_BAD_CODE,
         "step 1 has the code True"),
        ('{"steps": [{"step": 1, "label": 1}, {"step": 1, "label": 0}, {"step": 2, "label": 0}, {"step": 3, '
         '"label": 2}]}', KIND_CONFLICT, "grades step 1 twice"),
    ],
)  # fmt: skip
def test_unusable_answers_are_refused_whole_saying_why(answer, kind, message):
    with pytest.raises(VerdictError, match=message) as caught:
        parse_verdicts(answer, 3)
    assert caught.value.kind == kind
    assert "\n" not in str(caught.value)


def test_a_prose_number_after_step_is_not_taken_for_a_grade_that_a_later_line_gives():
    answer = "Step 2: 1.5 apples are left, and Step 1: 12 is the total.\n\nStep 1: 1 — right\nStep 2: 0 — wrong"
    assert parse_verdicts(answer, 2).codes == (1, 0)


@pytest.mark.parametrize(
    "garbage",
    [
        lambda k: "[{" * 10_000 * k,  # brackets that never close
        lambda k: "[x" * 5_000 * k + "]" * 5_000 * k,  # deeply nested spans, none of them JSON
        lambda k: "[it's {fine}] " * 1_500 * k,  # apostrophes and braces in prose
        lambda k: '{"a": "' + "[{" * 10_000 * k + '"}',  # brackets inside a string
    ],
)
def test_an_answer_full_of_brackets_costs_decoding_linear_in_its_length(garbage, monkeypatch):
    # The work counted: the characters handed to the JSON and Python-literal decoders. A quadratic reading would hand
    # them every nested span (about n²/2 characters); the reading hands its spans to at most DECODE_BUDGET characters
    # per character of the answer, each span to at most three decoders (JSON, repaired JSON, a Python literal).
    decoded = [0]
    real_loads, real_literal_eval = json.loads, ast.literal_eval

    def counting_loads(text, *args, **kwargs):
        decoded[0] += len(text)
        return real_loads(text, *args, **kwargs)

    def counting_literal_eval(text):
        decoded[0] += len(text)
        return real_literal_eval(text)

    monkeypatch.setattr(json, "loads", counting_loads)
    monkeypatch.setattr(ast, "literal_eval", counting_literal_eval)
    for k in (1, 4, 16):
        answer = garbage(k) + "\nStep 1: 1 — fine"
        decoded[0] = 0
        assert parse_verdicts(answer, 1).codes == (1,)
        assert decoded[0] <= 3 * (DECODE_BUDGET * len(answer) + 10_000)


def test_the_schema_asks_for_one_entry_per_step_with_an_explanation_before_a_code():
    schema = verdict_schema(4)
    steps = schema["properties"]["steps"]
    assert (steps["minItems"], steps["maxItems"]) == (4, 4)
    assert list(steps["items"]["properties"]) == ["step", "explanation", "label"]
    assert steps["items"]["properties"]["label"]["enum"] == [0, 1, 2]
    assert steps["items"]["required"] == ["step", "explanation", "label"]
    # an answer that follows the schema is read
    answer = {"steps": [{"step": i, "explanation": "x", "label": 1} for i in range(1, 5)]}
    assert parse_verdicts(json.dumps(answer), 4).codes == (1, 1, 1, 1)


def test_each_structured_output_mode_asks_in_its_servers_words():
    schema = verdict_schema(2)
    assert structured_output_body("json_schema", 2) == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "step_verdicts", "schema": schema, "strict": True},
        }
    }
    assert structured_output_body("structured_outputs", 2) == {"structured_outputs": {"json": schema}}
    assert structured_output_body("guided_json", 2) == {"guided_json": schema}
    assert structured_output_body("none", 2) == {}
    with pytest.raises(ValueError, match="must be one of"):
        structured_output_body("grammar", 2)


# --- the prompt template ---------------------------------------------------------------------------------------------

ROLLOUT = {
    "id": 7,
    "example": "Is 2 + 2 = 4? {steps}",
    "reasoning": ["Step 1: add 2 and 2. ", "\nVerdict: True (code: 1)\n"],
    "prediction": 1,
    "ground_truth": 1,
    "model": "m-7b",
}


def test_the_default_template_shows_the_problem_the_numbered_steps_and_the_answer_format():
    prompt = PromptTemplate.default().render(ROLLOUT)
    assert "Is 2 + 2 = 4? {steps}" in prompt  # a value is never expanded again
    assert '<step number="1">\nStep 1: add 2 and 2.\n</step>\n<step number="2">\nVerdict: True (code: 1)\n</step>' in (
        prompt
    )
    assert "from step 1 to step 2" in prompt and "1 (preferred)" in prompt and "0 (not preferred)" in prompt
    assert '{"steps": [{"step": 1, "explanation": "<one short sentence>", "label": <0, 1 or 2>}, ...]}' in prompt
    assert PromptTemplate.default().unknown_fields == []
    assert set(PromptTemplate(DEFAULT_TEMPLATE).names) <= set(FIELDS)


def test_a_template_file_fills_every_field_and_leaves_other_braces_alone(tmp_path):
    path = tmp_path / "judge.txt"
    path.write_text(
        "P={problem} N={num_steps} pred={prediction} gt={ground_truth} ok={correct} by={model}\n{steps}\n"
        'Answer like {"a": {"b": 1}} and put it in \\boxed{answer}.\n{format_instructions}',
        encoding="utf-8",
    )
    template = PromptTemplate.from_file(path)
    assert template.unknown_fields == ["answer"]
    prompt = template.render({**ROLLOUT, "prediction": None})
    assert prompt.startswith('P=Is 2 + 2 = 4? {steps} N=2 pred=none gt=1 ok=no by=m-7b\n<step number="1">')
    assert 'Answer like {"a": {"b": 1}} and put it in \\boxed{answer}.' in prompt
    assert "from step 1 to step 2:" in prompt


def test_a_template_without_the_steps_or_unreadable_is_refused(tmp_path):
    with pytest.raises(TemplateError, match=r"lacks \{steps\}"):
        PromptTemplate("Grade {problem}", source="--prompt_template t.txt")
    with pytest.raises(TemplateError, match="cannot be read"):
        PromptTemplate.from_file(tmp_path / "missing.txt")


def test_a_math_rollouts_answer_and_the_servers_verdict_fill_their_fields():
    # The server graded it (math-verify: 1/2 is \frac{1}{2}); the judge is told so, not the label rule's "no".
    rollout = {**ROLLOUT, "prediction": None, "ground_truth": None, "answer": "\\frac{1}{2}", "correct": True}
    fields = PromptTemplate("{final_answer} {correct} {prediction} \\boxed{answer} {steps}").render(rollout)
    assert fields.startswith("\\frac{1}{2} yes none \\boxed{answer} ")
    # From a server too old to send a verdict: the label rule of the specification's fields.
    assert PromptTemplate("{final_answer} {correct} {steps}").render(ROLLOUT).startswith("1 yes ")
