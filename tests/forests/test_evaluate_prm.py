"""``python manage.py evaluate_prm``: ProcessBench's measure on constructed labels with known F1."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from forests.metrics.evaluation import PrmEvaluation, mean_outputs
from tests.factories import make_forest, make_label, make_rollout
from tests.forests.grown import grow

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("evaluate_prm", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def label_tree_a(grown, version: str = "prm-v1") -> None:
    # Reference (labelled): s1 s2 yes: -1 (correct); s1 s2 no: 2 (the "no" step has value 0);
    # s1 t2 yes: -1 (correct); u1 no: 0 (u1 has value 0).
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), version, prm_output=[0.9, 0.8, 0.9])  # -1: right
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), version, prm_output=[0.9, 0.7, 0.2])  # 2: right
    make_label(grown.rollout("A", "u1 ", "no"), version, prm_output=[0.6, 0.1])  # 1: wrong (reference 0)
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), version, prm_output=[0.4, 0.9, 0.9])  # 0: wrong


def test_against_exact_values_the_first_error_is_the_first_step_whose_value_falls_to_zero(tmp_path):
    grown = grow()
    label_tree_a(grown)
    output = tmp_path / "eval.json"
    out, err = run("--prm_version", "prm-v1", "--reference", "labelled", "--output_json", str(output))
    data = json.loads(output.read_text())
    assert (data["num_rollouts"], data["num_erroneous"], data["num_correct"]) == (4, 2, 2)
    assert data["error_accuracy"] == 0.5 and data["correct_accuracy"] == 0.5
    assert data["f1"] == pytest.approx(0.5)
    # Steps (score >= 0.5 against value > 0): 3 + 3 + 1 + 2 agree of 11.
    assert data["num_steps"] == 11 and data["step_agreement"] == pytest.approx(9 / 11)
    assert data["reference"] == "labelled" and data["threshold"] == 0.5
    assert "F1 (harmonic mean)" in out and "0.500" in out
    assert err.strip().startswith("evaluate_prm: 4 rollouts in ")


def test_the_threshold_moves_the_predicted_first_error():
    grown = grow()
    label_tree_a(grown)
    _, err = run("--prm_version", "prm-v1", "--reference", "labelled", "--threshold", "0.65")
    # At 0.65: s1 s2 yes still -1 (right); s1 s2 no now 2 (0.7 >= 0.65: right); u1 no: 0 (0.6 < 0.65: right);
    # s1 t2 yes: 0 (wrong). Erroneous 2/2, correct 1/2: F1 = 2/3.
    assert "F1 0.667" in err


def test_a_labelling_scheme_as_reference_uses_the_rollouts_own_step_labels(tmp_path):
    grown = grow()
    label_tree_a(grown)
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), "judge-1", prm_output=[1, 2, 1])  # -1 (neutral is no error)
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), "judge-1", prm_output=[1, 0, 0])  # 1: PRM says 2, wrong
    make_label(grown.rollout("A", "u1 ", "no"), "judge-1", prm_output=[1, 0])  # 1: PRM says 1, right
    # s1 t2 yes has no judge-1 label: skipped.
    output = tmp_path / "eval.json"
    run("--prm_version", "prm-v1", "--reference", "labels:judge-1", "--output_json", str(output))
    data = json.loads(output.read_text())
    assert (data["num_erroneous"], data["num_correct"]) == (2, 1)
    assert data["error_accuracy"] == 0.5 and data["correct_accuracy"] == 1.0
    assert data["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert data["skipped"] == {"no reference label": 1}


def test_several_labels_of_a_version_on_one_rollout_are_averaged():
    grown = grow()
    rollout = grown.rollout("A", "s1 ", "s2 ", "no")
    make_label(rollout, "prm-v1", prm_output=[0.9, 0.9, 0.0], worker="w1")
    make_label(rollout, "prm-v1", prm_output=[0.9, 0.0, 0.0], worker="w2")  # mean [0.9, 0.45, 0.0]: first below 1
    evaluation = PrmEvaluation(prm_version="prm-v1", reference="labelled", threshold=0.5)
    evaluation.add([True, True, False], mean_outputs([[0.9, 0.9, 0.0], [0.9, 0.0, 0.0]]))
    assert evaluation.predicted_first == [1]
    _, err = run("--prm_version", "prm-v1", "--reference", "labelled", "--forest_name", grown.forest.name)
    assert "F1 -" in err  # only an erroneous rollout: F1 is undefined
    assert "evaluate_prm: 1 rollouts" in err


def test_rollouts_outside_a_forest_are_skipped_for_the_labelled_reference():
    grown = grow()
    label_tree_a(grown)
    make_label(make_rollout(), "prm-v1", prm_output=[0.9, 0.9])  # posted without a forest
    _, err = run("--prm_version", "prm-v1", "--reference", "labelled")
    assert "skipped: 1 not in a forest" in err


def test_forest_name_restricts_the_rollouts():
    grown = grow()
    label_tree_a(grown)
    other = make_forest("other-forest")
    with pytest.raises(CommandError, match="no rollout in forest other-forest has both a label of 'prm-v1'"):
        run("--prm_version", "prm-v1", "--reference", "labelled", "--forest_name", other.name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prm_version", "prm-v1", "--reference", "exact"], "labelled, prm:VERSION"),
        (["--prm_version", "prm-v1", "--reference", "prm:other"], "reference must be labelled or labels:SCHEME"),
        (["--prm_version", "prm-v1", "--reference", "labelled", "--threshold", "nan"], "finite"),
        (["--prm_version", "nothing", "--reference", "labelled"], "no rollout has both a label of 'nothing'"),
    ],
)
def test_bad_input_fails_with_one_line(args, message):
    grow()
    with pytest.raises(CommandError, match=message) as failure:
        run(*args)
    assert "\n" not in str(failure.value)
