"""``forests.prm_evaluation``: a PRM version's scores against a reference, read from the labels."""

from __future__ import annotations

import math

import pytest

from forests.models import Node
from forests.prm_evaluation import REFERENCE_INVALID, THRESHOLD_NOT_FINITE, TUNE_SUBSET_EMPTY, prm_evaluation
from prmsite.core.errors import ApplicationError
from tests.factories import make_label
from tests.forests.grown import grow

pytestmark = pytest.mark.django_db


def label(grown, version: str = "prm-v1") -> None:
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), version, prm_output=[0.9, 0.8, 0.9])  # -1: right
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), version, prm_output=[0.9, 0.7, 0.2])  # 2: right
    make_label(grown.rollout("A", "u1 ", "no"), version, prm_output=[0.6, 0.1])  # 1: wrong (reference 0)
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), version, prm_output=[0.4, 0.9, 0.9])  # 0: wrong


def test_against_exact_values_each_labelled_rollout_is_measured():
    grown = grow()
    label(grown)
    read: list[int] = []
    evaluation = prm_evaluation(prm_version="prm-v1", reference="labelled", forest=grown.forest, on_labels=read.append)
    result = evaluation.as_dict()
    assert (result["num_rollouts"], result["num_steps"], result["f1"]) == (4, 11, pytest.approx(0.5))
    assert result["forest_name"] == grown.forest.name and read[-1] == 4


def test_a_rollout_without_a_reference_label_is_skipped():
    grown = grow()
    label(grown)
    make_label(grown.rollout("A", "u1 ", "no"), "judge-1", prm_output=[1, 0])
    evaluation = prm_evaluation(prm_version="prm-v1", reference="labels:judge-1")
    assert evaluation.skipped == {"no reference label": 3} and len(evaluation.reference_first) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reference": "prm:other"}, REFERENCE_INVALID.format(reference="prm:other")),
        ({"reference": "labelled", "threshold": math.nan}, THRESHOLD_NOT_FINITE),
    ],
)
def test_a_reference_or_threshold_out_of_range_is_refused(fields, message):
    with pytest.raises(ApplicationError) as refused:
        prm_evaluation(prm_version="prm-v1", **fields)
    assert refused.value.message == message


def test_the_figures_are_additive_and_carry_each_rollouts_subset():
    grown = grow()
    label(grown)
    Node.objects.filter(pk=grown.roots["A"].pk).update(serialized_item={"source": 7})  # not text: read as text
    result = prm_evaluation(prm_version="prm-v1", reference="labelled").as_dict()
    assert {"num_rollouts", "error_accuracy", "correct_accuracy", "f1", "step_agreement", "skipped"} <= set(result)
    assert [(row["subset"], row["num_rollouts"]) for row in result["subsets"]] == [("7", 4)]
    assert result["mean_subset_f1"] == result["f1"] == pytest.approx(0.5) and result["threshold_tuned_on"] is None


def test_tuning_on_a_subset_no_rollout_is_in_is_refused():
    grown = grow()
    label(grown)
    Node.objects.filter(pk=grown.roots["A"].pk).update(serialized_item={"subset": "gsm8k"})
    with pytest.raises(ApplicationError) as refused:
        prm_evaluation(prm_version="prm-v1", reference="labelled", tune_threshold_on="math")
    assert refused.value.message == TUNE_SUBSET_EMPTY.format(subset="math", subsets="gsm8k")


def test_tuning_measures_every_rollout_at_the_chosen_threshold():
    grown = grow()
    label(grown)
    Node.objects.filter(pk=grown.roots["A"].pk).update(serialized_item={"subset": "gsm8k"})
    # Tree A's four rollouts in rollout order (see label), reference and the thresholds where the PRM matches it:
    # -1 [0.9, 0.8, 0.9] t <= 0.8; 2 [0.9, 0.7, 0.2] 0.2 < t <= 0.7; -1 [0.4, 0.9, 0.9] t <= 0.4; 0 [0.6, 0.1]
    # t > 0.6. Of the candidates 0.1 0.2 0.4 0.6 0.7 0.8 0.9, two give three matches: 0.4 (erroneous 1 of 2,
    # correct 2 of 2) and 0.7 (2 of 2, 1 of 2), both F1 2/3, the best; the lower wins.
    evaluation = prm_evaluation(prm_version="prm-v1", reference="labelled", tune_threshold_on="gsm8k")
    assert evaluation.threshold == 0.4 and evaluation.threshold_tuned_on == "gsm8k"
    assert evaluation.predicted_first == [-1, 2, -1, 1]  # every rollout measured at 0.4
    assert evaluation.as_dict()["f1"] == pytest.approx(2 / 3)
