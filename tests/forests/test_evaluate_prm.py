"""``python manage.py evaluate_prm``: ProcessBench's measure on constructed labels with known F1."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from forests.metrics.evaluation import PrmEvaluation, mean_outputs
from forests.models import Node
from rollouts.models import Rollout
from tests.factories import make_forest, make_label, make_rollout
from tests.forests.grown import add_rollout, grow
from tests.rollouts.labelling.conftest import make_scheme

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


def test_a_labelling_schemes_version_is_measured_with_its_codes_read_as_values(tmp_path):
    # As on the PRM comparison page (tests/forests/test_prm_compare_page.py): at threshold 0.6, u1 no's codes [2, 0]
    # read as [0.5, 0] find its first error at step 0 (the raw code 2 would pass the step), and s1 t2 yes's [1, 0, 1]
    # stops the correct rollout at step 1.
    grown = grow()
    make_scheme("human-v1")
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), "human-v1", prm_output=[1, 0, 1])
    make_label(grown.rollout("A", "u1 ", "no"), "human-v1", prm_output=[2, 0])
    output = tmp_path / "figures.json"
    run("--prm_version", "human-v1", "--reference", "labelled", "--threshold", "0.6", "--output_json", str(output))
    figures = json.loads(output.read_text())
    assert (figures["error_accuracy"], figures["correct_accuracy"]) == (1.0, 0.0)
    assert (figures["step_agreement"], figures["num_steps"]) == (0.8, 5)


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


def processbench_forest():
    """The grown forest as a two-subset ProcessBench set: tree A's item names subset gsm8k, tree B's its source math
    (one more rollout in B). A labelling scheme ``pb`` is the reference (1 right, 0 wrong), ``prm-v1`` the PRM."""
    grown = grow()
    Node.objects.filter(pk=grown.roots["A"].pk).update(serialized_item={"problem": "Is A?", "subset": "gsm8k"})
    Node.objects.filter(pk=grown.roots["B"].pk).update(serialized_item={"problem": "Is B?", "source": "math"})
    c_no = add_rollout("B", ["c1 ", "no"], 0)
    labelled = [
        # rollout, reference codes (first error), PRM scores (first below 0.5, right or not)
        (grown.rollout("A", "s1 ", "s2 ", "yes"), [1, 1, 1], [0.9, 0.8, 0.7]),  # -1; -1 right
        (grown.rollout("A", "s1 ", "s2 ", "no"), [1, 0, 0], [0.9, 0.3, 0.2]),  # 1; 1 right
        (grown.rollout("A", "s1 ", "t2 ", "yes"), [1, 1, 1], [0.9, 0.65, 0.9]),  # -1; -1 right
        (grown.rollout("A", "u1 ", "no"), [0, 0], [0.6, 0.2]),  # 0; 1 wrong
        (grown.rollout("B", "b1 ", "no"), [0, 0], [0.2, 0.9]),  # 0; 0 right
        (grown.rollout("B", "b1 ", "yes"), [1, 1], [0.9, 0.55]),  # -1; -1 right
        (grown.rollout("B", "c1 ", "yes"), [1, 0], [0.9, 0.9]),  # 1; -1 wrong
        (c_no, [1, 0], [0.7, 0.4]),  # 1; 1 right
    ]
    for rollout, codes, scores in labelled:
        make_label(rollout, "pb", prm_output=codes)
        make_label(rollout, "prm-v1", prm_output=scores)
    return grown


def subsets_of(data: dict) -> dict:
    return {row["subset"]: row for row in data["subsets"]}


def test_processbench_figures_per_subset_and_their_mean_beside_the_pooled_ones(tmp_path):
    processbench_forest()
    output = tmp_path / "eval.json"
    out, err = run("--prm_version", "prm-v1", "--reference", "labels:pb", "--output_json", str(output))
    data = json.loads(output.read_text())
    rows = subsets_of(data)
    assert list(rows) == ["gsm8k", "math"]
    # gsm8k: erroneous 1 of 2 found, correct 2 of 2: F1 = 2 * 1/2 * 1 / (3/2) = 2/3.
    assert (rows["gsm8k"]["num_rollouts"], rows["gsm8k"]["num_erroneous"], rows["gsm8k"]["num_correct"]) == (4, 2, 2)
    assert (rows["gsm8k"]["error_accuracy"], rows["gsm8k"]["correct_accuracy"]) == (0.5, 1.0)
    assert rows["gsm8k"]["f1"] == pytest.approx(2 / 3)
    # math: erroneous 2 of 3, correct 1 of 1: F1 = 2 * 2/3 * 1 / (5/3) = 4/5.
    assert (rows["math"]["error_accuracy"], rows["math"]["correct_accuracy"]) == (pytest.approx(2 / 3), 1.0)
    assert rows["math"]["f1"] == pytest.approx(0.8)
    # ProcessBench's average (2/3 + 4/5) / 2 = 11/15; pooled: erroneous 3 of 5, correct 3 of 3, F1 3/4.
    assert data["mean_subset_f1"] == pytest.approx(11 / 15)
    assert data["f1"] == pytest.approx(0.75) and data["num_rollouts"] == 8
    assert data["threshold"] == 0.5 and data["threshold_tuned_on"] is None
    assert "F1, mean over subsets (ProcessBench average)" in out and "0.733" in out
    assert [line.split()[0] for line in out.splitlines() if line.strip().startswith(("gsm8k", "math"))] == [
        "gsm8k",
        "math",
    ]
    assert "F1 0.750, mean subset F1 0.733" in err


def test_a_threshold_tuned_on_one_subset_is_applied_to_every_subset(tmp_path):
    processbench_forest()
    output = tmp_path / "eval.json"
    out, err = run(
        "--prm_version", "prm-v1", "--reference", "labels:pb", "--tune_threshold_on", "gsm8k", "--output_json",
        str(output),
    )  # fmt: skip
    data = json.loads(output.read_text())
    # gsm8k's scores 0.2 0.3 0.6 0.65 0.7 0.8 0.9; each rollout matches its reference for: [0.9, 0.8, 0.7] (-1)
    # t <= 0.7; [0.9, 0.3, 0.2] (1) 0.3 < t <= 0.9; [0.9, 0.65, 0.9] (-1) t <= 0.65; [0.6, 0.2] (0) t > 0.6.
    # All four at 0.65 only: F1 1.
    assert data["threshold"] == 0.65 and data["threshold_tuned_on"] == "gsm8k" and data["tuned_candidates"] == 7
    rows = subsets_of(data)
    assert rows["gsm8k"]["f1"] == 1.0
    # math at 0.65: [0.2, 0.9] (0) 0 right; [0.9, 0.55] (-1) 1 wrong; [0.9, 0.9] (1) -1 wrong; [0.7, 0.4] (1) 1
    # right: erroneous 2 of 3, correct 0 of 1, F1 0. Mean (1 + 0) / 2. Pooled: 4 of 5 and 2 of 3, F1 8/11.
    assert (rows["math"]["error_accuracy"], rows["math"]["correct_accuracy"]) == (pytest.approx(2 / 3), 0.0)
    assert rows["math"]["f1"] == 0.0 and data["mean_subset_f1"] == 0.5
    assert data["f1"] == pytest.approx(8 / 11)
    assert "threshold 0.65 (tuned on subset gsm8k, best of 7 score values)" in out
    assert "; threshold 0.65 tuned on gsm8k" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tune_threshold_on", "olympiadbench"], "no evaluated rollout is in subset 'olympiadbench' to tune the "
         "threshold on (subsets: gsm8k, math)"),
        (["--tune_threshold_on", "gsm8k", "--threshold", "0.6"], "not allowed with argument"),
    ],
)  # fmt: skip
def test_tuning_on_a_subset_without_rollouts_is_refused_in_one_line(args, message):
    processbench_forest()
    with pytest.raises(CommandError, match=re.escape(message)) as failure:
        run("--prm_version", "prm-v1", "--reference", "labels:pb", *args)
    assert "\n" not in str(failure.value)


def test_tuning_on_a_subset_with_one_kind_of_rollout_is_refused():
    grown = processbench_forest()
    Node.objects.filter(pk=grown.roots["B"].pk).update(serialized_item={"subset": "math"})
    make_label(add_rollout("C", ["z1 ", "yes"], 1), "pb", prm_output=[1, 1])  # only a correct rollout in C
    Node.objects.filter(pk=grown.roots["C"].pk).update(serialized_item={"subset": "omnimath"})
    make_label(Rollout.objects.get(reasoning=["z1 ", "yes"]), "prm-v1", prm_output=[0.9, 0.9])
    with pytest.raises(
        CommandError, match=re.escape("cannot tune the threshold on subset 'omnimath': F1 is undefined")
    ):
        run("--prm_version", "prm-v1", "--reference", "labels:pb", "--tune_threshold_on", "omnimath")


def test_without_subsets_the_output_has_one_unnamed_group_and_no_subset_table(tmp_path):
    grown = grow()
    label_tree_a(grown)
    output = tmp_path / "eval.json"
    out, err = run("--prm_version", "prm-v1", "--reference", "labelled", "--output_json", str(output))
    data = json.loads(output.read_text())
    assert [row["subset"] for row in data["subsets"]] == [None]
    assert data["mean_subset_f1"] == data["f1"] == pytest.approx(0.5)
    assert "mean over subsets" not in out and "mean subset F1" not in err


def test_subsets_with_the_labelled_reference():
    grown = grow()
    label_tree_a(grown)
    make_label(grown.rollout("B", "b1 ", "no"), "prm-v1", prm_output=[0.9, 0.9])  # reference -1 (b1 1/2, no 1/1)
    Node.objects.filter(pk=grown.roots["B"].pk).update(serialized_item={"subset": "b"})
    out, err = run("--prm_version", "prm-v1", "--reference", "labelled")
    # Tree A's item names no subset: "(none)", F1 1/2 (see label_tree_a); B: one correct rollout, F1 undefined.
    assert re.search(r"^\s+b\s+1\s+0\s+1\s+-\s+1\.000\s+-$", out, re.MULTILINE)
    assert re.search(r"^\s+\(none\)\s+4\s+2\s+2\s+0\.500\s+0\.500\s+0\.500$", out, re.MULTILINE)
    assert "mean subset F1 -" in err
