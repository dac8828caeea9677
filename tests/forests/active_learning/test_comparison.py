"""The table of a round's metrics next to the previous round's (pure: no server)."""

from __future__ import annotations

from forests.active_learning.comparison import comparison_rows, comparison_table
from forests.active_learning.state import ROUND_COMPLETED


def round_record(number: int, *, accuracy: float, f1: float | None, labels: int, reference: str = "labelled") -> dict:
    return {
        "round": number,
        "prm_version": f"f-r{number}",
        "labelling_scheme_version": "judge",
        "status": ROUND_COMPLETED,
        "stages": {
            "label": {"status": "done", "summary": {"sent": labels, "labels_total": labels * number}},
            "train": {
                "status": "done",
                "summary": {
                    "data": {"train_examples_used": labels * number},
                    "eval": {"loss": 0.5, "step_accuracy": accuracy, "processbench": {"f1": f1}},
                },
            },
            "prm_label": {"status": "done", "summary": {"labelled": 40}},
            "measure": {
                "status": "done",
                "summary": {
                    "beam_search": {
                        "results": [{"num_beams": 1, "accuracy": 0.5}, {"num_beams": 5, "accuracy": 0.6 + number / 10}],
                        "baselines": {"best_of_n": {"accuracy": 0.55}, "majority_vote": {"accuracy": 0.45}},
                    },
                    "evaluate_prm": {
                        "reference": reference,
                        "f1": f1,
                        "error_accuracy": 0.4,
                        "correct_accuracy": 0.9,
                        "step_agreement": 0.8,
                        "num_rollouts": 40,
                    },
                },
            },
        },
    }


def test_the_table_shows_each_metric_of_both_rounds_and_the_change():
    now = round_record(2, accuracy=0.8, f1=0.7, labels=30)
    table = comparison_table(now, round_record(1, accuracy=0.75, f1=None, labels=30))
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "round", "1", "round", "2", "change"]
    rows = {line.split("  ")[0]: line.split()[-3:] for line in lines[1:]}
    assert rows["held-out step accuracy"] == ["0.750", "0.800", "+0.050"]
    assert rows["labels of judge on the server"] == ["30", "60", "+30"]
    assert rows["AI labels stored this round"] == ["30", "30", "+0"]
    assert rows["beam search accuracy, N=5"] == ["0.700", "0.800", "+0.100"]
    assert rows["best-of-N by the PRM"] == ["0.550", "0.550", "+0.000"]
    assert rows["held-out ProcessBench F1"][-2:] == ["-", "0.700"]  # none before: no change


def test_figures_against_different_references_are_never_compared():
    rows = {name: (a, b, change) for name, a, b, change in comparison_rows(
        round_record(2, accuracy=0.8, f1=0.7, labels=1, reference="labels:judge"),
        round_record(1, accuracy=0.8, f1=0.6, labels=1, reference="labelled"))}  # fmt: skip
    assert rows["evaluate_prm vs labels:judge: F1"] == ("-", "0.700", "")
    assert rows["evaluate_prm vs labelled: F1"] == ("0.600", "-", "")


def test_a_first_round_has_nothing_to_compare_with():
    table = comparison_table(round_record(1, accuracy=0.8, f1=0.7, labels=3), None)
    assert "(no earlier round)" in table.splitlines()[0]
    assert all(line.split()[-1] != "+0" for line in table.splitlines()[1:])
