"""Answers beyond class labels: a rollout's answer is graded once, by the forest's answer kind against its tree's
reference answer, when it is stored; every reader reads the stored verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.management import call_command

from forests.intake import receive_rollout
from forests.metrics_reading import forest_arrays_load
from forests.models import Node
from forests.search_reports import forest_search_report
from forests.selectors import forest_progress
from prmsite.core.grading import NO_REFERENCE, AnswerSpec
from rollouts.models import Rollout
from tests.factories import make_forest, make_root, rollout_fields

pytestmark = pytest.mark.django_db

PROBLEM = "What is $\\frac{10}{28}$ in lowest terms?"


@pytest.fixture
def math_forest():
    forest = make_forest("math-forest", rollout_config=AnswerSpec(kind="math").as_settings())
    make_root(forest, PROBLEM, ground_truth=None, reference_answer="\\frac{5}{14}", serialized_item={"problem": "x"})
    return forest


def post(forest, steps, answer, **fields):
    values = rollout_fields(example=PROBLEM, reasoning=steps, **fields)
    values.pop("prediction"), values.pop("ground_truth")
    return receive_rollout(**values, answer=answer, forest_name=forest.name)


def test_an_equivalent_answer_is_stored_correct_on_the_rollout_and_its_leaf(math_forest):
    rollout = post(math_forest, ["Divide by 2.", "So \\boxed{5/14}."], "5/14")
    rollout.refresh_from_db()
    assert (rollout.answer, rollout.correct, rollout.verdict_reason) == ("5/14", True, "")
    assert rollout.prediction is None and rollout.ground_truth is None
    leaf = rollout.node
    assert (leaf.answer, leaf.correct) == ("5/14", True)


def test_a_different_answer_is_stored_wrong_and_no_answer_says_why(math_forest):
    wrong = post(math_forest, ["Divide by 4."], "\\frac{5}{7}")
    none = post(math_forest, ["I give up."], None)
    assert wrong.correct is False and wrong.verdict_reason == ""
    assert none.correct is False and none.verdict_reason  # the grader could not decide, and says why


def test_a_trusted_caller_may_carry_a_datasets_own_verdict(math_forest):
    rollout = receive_rollout(
        **{**rollout_fields(example=PROBLEM, reasoning=["Guess."]), "prediction": None, "ground_truth": None},
        answer="7",
        forest_name=math_forest.name,
        correct=True,
        verdict_reason="the dataset says so",
    )
    assert rollout.correct is True and rollout.verdict_reason == "the dataset says so"


def test_a_label_rollout_keeps_the_specifications_fields_and_gets_its_answer_from_the_prediction():
    forest = make_forest("label-forest")
    make_root(forest, "Is the sky green?", ground_truth=0)
    rollout = receive_rollout(**rollout_fields(prediction=0, ground_truth=0), forest_name=forest.name)
    assert (rollout.prediction, rollout.ground_truth, rollout.answer, rollout.correct) == (0, 0, "0", True)
    # An answer alone states the label; the tree knows the ground truth.
    fields = rollout_fields(reasoning=["Other."])
    fields.pop("prediction"), fields.pop("ground_truth")
    answered = receive_rollout(**fields, answer=" 1 ", forest_name=forest.name)
    assert (answered.prediction, answered.ground_truth, answered.correct) == (1, 0, False)


def test_an_answer_without_a_forest_or_a_ground_truth_is_stored_not_correct_with_the_reason():
    # Schema-valid (the fuzzer found it): nothing to grade against is the grader's "cannot decide", never a 400.
    fields = rollout_fields()
    fields.pop("ground_truth"), fields.pop("prediction")
    rollout = receive_rollout(**fields, answer="1")
    assert (rollout.prediction, rollout.ground_truth, rollout.correct) == (1, None, False)
    assert rollout.verdict_reason == NO_REFERENCE


def test_values_progress_and_votes_read_the_stored_verdict(math_forest):
    post(math_forest, ["A.", "So 5/14."], "5/14")
    post(math_forest, ["A.", "So 10/28."], "\\frac{10}{28}")
    post(math_forest, ["B.", "So 0.5."], "0.5")
    post(math_forest, ["C.", "So 1/2."], "\\frac12")
    post(math_forest, ["D.", "So 1/2 again."], "1/2")
    arrays = forest_arrays_load(forest=math_forest)
    assert arrays.rollout_correct.tolist().count(True) == 2
    leaves = Node.objects.filter(forest=math_forest, is_leaf=True)
    assert sorted(leaves.values_list("correct", flat=True)) == [False, False, False, True, True]
    progress = forest_progress(forest=math_forest)
    assert (progress.rollouts, progress.correct_rollouts) == (5, 2)
    report = forest_search_report(
        forest=math_forest, num_beam_values=[1], value_function_option="labelled", aggregation="min"
    ).as_dict()
    # Three rollouts say one half, in three spellings; the two right ones say 5/14 in two: grouped by equivalence,
    # one half wins the vote (by strings, every answer would be alone and the vote a five-way tie: 0.4).
    assert report["baselines"]["majority_vote"]["accuracy"] == 0.0
    assert report["baselines"]["oracle"]["accuracy"] == 1.0
    assert np.isclose(report["baselines"]["random_rollout"]["accuracy"], 0.4)


def test_post_rollout_takes_an_answer_instead_of_the_label_fields(api, math_forest):
    body = {
        "model": "m",
        "example": PROBLEM,
        "reasoning": ["Halve both.", "\\boxed{\\dfrac{5}{14}}"],
        "answer": "\\dfrac{5}{14}",
        "worker": "w",
        "forest_name": math_forest.name,
    }
    response = api.post("/rollout", body, format="json")
    assert response.status_code == 200, response.json()
    stored = Rollout.objects.get(pk=response.json())
    assert stored.correct is True and stored.answer == "\\dfrac{5}{14}"
    # Without an answer, the specification's fields are required as before.
    bad = api.post("/rollout", {k: v for k, v in body.items() if k != "answer"}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"prediction", "ground_truth"}


def test_a_math_forests_rollouts_move_between_servers_with_their_answers(tmp_path, math_forest):
    post(math_forest, ["A.", "So 5/14."], "5/14")
    post(math_forest, ["B.", "So 1/2."], "1/2")
    target = make_forest("math-target", rollout_config=AnswerSpec(kind="math").as_settings())
    make_root(target, PROBLEM, ground_truth=None, reference_answer="\\frac{5}{14}", serialized_item={"problem": "x"})
    output = tmp_path / "rollouts.jsonl"
    call_command("export_rollouts", "--forest_name", math_forest.name, "--output", str(output))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["answer"] for line in lines] == ["5/14", "1/2"]
    assert not any("prediction" in line or "ground_truth" in line for line in lines)
    call_command("import_rollouts", "--forest_name", target.name, "--input", str(output))
    moved = Rollout.objects.filter(forest=target).order_by("id")
    assert [(r.answer, r.correct) for r in moved] == [("5/14", True), ("1/2", False)]  # graded again, the same


def test_post_rollout_with_an_answer_and_nothing_to_grade_it_against_is_stored(api):
    # Found by the schema fuzzer: schema-valid, it was a 400.
    body = {"model": "m", "example": "e", "reasoning": ["s"], "answer": "CONTENT_LENGTH", "worker": "w"}
    response = api.post("/rollout", body, format="json")
    assert response.status_code == 200
    stored = Rollout.objects.get(pk=response.json())
    assert stored.correct is False and stored.verdict_reason == NO_REFERENCE


def test_an_answer_of_null_in_a_label_forest_is_no_answer_and_its_retry_answers_the_same_id(api):
    forest = make_forest("null-answers")
    make_root(forest, "Is the sky green?", ground_truth=0)
    body = {"model": "m", "example": "Is the sky green?", "reasoning": ["Hm."], "answer": None, "worker": "w"}
    body |= {"forest_name": forest.name, "idempotency_key": "k-1"}
    first = api.post("/rollout", body, format="json")
    assert first.status_code == 200, first.json()
    stored = Rollout.objects.get(pk=first.json())
    assert (stored.prediction, stored.ground_truth, stored.correct) == (None, 0, False)
    assert stored.verdict_reason  # "no answer"
    again = api.post("/rollout", body, format="json")
    assert again.status_code == 200 and again.json() == first.json()
