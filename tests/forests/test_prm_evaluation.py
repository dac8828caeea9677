"""``forests.prm_evaluation``: a PRM version's scores against a reference, read from the labels."""

from __future__ import annotations

import math

import pytest

from forests.prm_evaluation import REFERENCE_INVALID, THRESHOLD_NOT_FINITE, prm_evaluation
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
