"""``python manage.py beam_search``: the table, the JSON, the plot, the value functions and one-line failures."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from forests.metrics.beam import path_scores
from forests.metrics.values import ValueFunction
from forests.metrics_reading import forest_arrays_load, forest_values
from forests.search_reports import forest_search_report_saved
from tests.factories import make_forest, make_label, make_root
from tests.forests.grown import grow

pytestmark = pytest.mark.django_db

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("beam_search", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_prints_accuracy_by_n_beside_the_baselines_and_writes_json_and_plot(tmp_path):
    grown = grow()
    output, plot = tmp_path / "result.json", tmp_path / "plot.png"
    out, err = run(
        "--forest_name", grown.forest.name, "--num_beam_values", "1,5", "--value_function_option", "labelled",
        "--output_json", str(output), "--plot", str(plot),
    )  # fmt: skip
    data = json.loads(output.read_text())
    assert data["forest_name"] == grown.forest.name
    assert data["value_function_option"] == "labelled"
    assert data["aggregation"] == "last"
    # Both trees with rollouts are answered right with exact values; tree C has none and is left out.
    assert data["results"] == [
        {"num_beams": 1, "accuracy": 1.0, "ci95": 0.0, "num_trees": 2},
        {"num_beams": 5, "accuracy": 1.0, "ci95": 0.0, "num_trees": 2},
    ]
    baselines = data["baselines"]
    assert baselines["random_rollout"]["accuracy"] == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert baselines["majority_vote"]["accuracy"] == pytest.approx((1 + 0) / 2)  # A: 1 (3 votes); B: 1 (2 votes)
    assert baselines["oracle"]["accuracy"] == 1.0
    assert baselines["majority_vote"]["tokens_per_tree"] == pytest.approx((500 + 300) / 2)
    assert baselines["random_rollout"]["tokens_per_tree"] == 100
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert "majority vote (self-consistency)" in out and "N" in out.splitlines()[2]
    assert err.strip().splitlines()[-1].startswith(f"beam_search: 2 trees of {grown.forest.name} in ")
    assert forest_search_report_saved(forest=grown.forest) is None  # nothing saved without --save


def test_each_aggregation_is_accepted_and_save_puts_the_report_on_the_forest():
    grown = grow()
    for aggregation in ("min", "mean", "last", "product"):
        run("--forest_name", grown.forest.name, "--aggregation", aggregation)
    run("--forest_name", grown.forest.name, "--aggregation", "min", "--num_beam_values", "2", "--save")
    grown.forest.refresh_from_db()
    saved = forest_search_report_saved(forest=grown.forest)
    assert saved["aggregation"] == "min"
    assert [row["num_beams"] for row in saved["results"]] == [2]
    assert saved["computed_at"].endswith("UTC")


def test_prm_values_come_from_a_versions_step_outputs():
    grown = grow()
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), "prm-v1", prm_output=[0.9, 0.8, 0.9])
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), "prm-v1", prm_output=[0.9, 0.7, 0.2])
    make_label(grown.rollout("A", "s1 ", "t2 ", "yes"), "prm-v1", prm_output=[0.3, 0.2, 0.95])
    make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[0.95, 0.99])
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), "other", prm_output=[0.0, 0.0, 0.0])  # another version
    arrays = forest_arrays_load(forest=grown.forest)
    values = forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("prm:prm-v1"))
    by_id = values.by_id(arrays.ids)
    s1 = grown.node("A", "s1 ")
    assert by_id[s1.pk].count == 3 and by_id[s1.pk].value == pytest.approx((0.9 + 0.9 + 0.3) / 3)
    assert by_id[grown.node("B", "b1 ").pk].value is None  # no label reaches tree B

    # Tree A, N=1, last: u1 (0.95) beats s1 (0.7): the answer is "no", wrong; tree B has no value at all and its
    # beams tie: the lowest ids lead to b1 then "no", right.
    out, _ = run("--forest_name", grown.forest.name, "--value_function_option", "prm:prm-v1", "--num_beam_values", "1")
    assert " 0.500 ± 0.980 " in out
    # min: s1 (0.7) → s2 (min 0.7) → yes (0.7) against u1 → no (min 0.95): still wrong for A.
    scores = path_scores(arrays, values.value, "min")
    assert scores[arrays.index_of(grown.node("A", "u1 ", "no").pk)] == pytest.approx(0.95)


def test_labels_of_a_scheme_read_1_as_1_0_as_0_and_2_as_one_half():
    grown = grow()
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), "judge-1", prm_output=[1, 2, 0])
    make_label(grown.rollout("A", "s1 ", "s2 ", "yes"), "judge-1", prm_output=[1, 1, 1])
    arrays = forest_arrays_load(forest=grown.forest)
    values = forest_values(forest=grown.forest, arrays=arrays, value_function=ValueFunction.parse("labels:judge-1"))
    by_id = values.by_id(arrays.ids)
    assert by_id[grown.node("A", "s1 ", "s2 ").pk].value == pytest.approx(0.75)  # neutral 0.5 and preferred 1
    assert by_id[grown.node("A", "s1 ", "s2 ", "no").pk].value == 0.0
    assert by_id[grown.node("A", "s1 ").pk].value == 1.0
    out, _ = run("--forest_name", grown.forest.name, "--value_function_option", "labels:judge-1")
    assert "labels:judge-1" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--forest_name", "nope"], "No forest named 'nope'"),
        (["--forest_name", "metrics-forest", "--num_beam_values", "0,2"], "whole numbers from 1 up"),
        (["--forest_name", "metrics-forest", "--value_function_option", "exact"], "labelled, prm:VERSION"),
        (["--forest_name", "metrics-forest", "--value_function_option", "prm:none"], "No label of prm_version"),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, args, message):
    grow()
    output = tmp_path / "out.json"
    with pytest.raises(CommandError, match=message) as failure:
        run(*args, "--output_json", str(output))
    assert "\n" not in str(failure.value)
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_a_label_outside_the_scheme_codes_is_named():
    grown = grow()
    label = make_label(grown.rollout("B", "c1 ", "yes"), "judge-1", prm_output=[1, 0.7])
    with pytest.raises(CommandError, match=f"Label {label.pk} of labelling scheme 'judge-1' holds 0.7"):
        run("--forest_name", grown.forest.name, "--value_function_option", "labels:judge-1")


def test_a_forest_without_rollouts_reports_no_accuracy_rather_than_failing(tmp_path):
    forest = make_forest("bare-forest")
    make_root(forest, "Is it?", ground_truth=1)
    output = tmp_path / "bare.json"
    out, _ = run("--forest_name", forest.name, "--output_json", str(output), "--plot", str(tmp_path / "bare.png"))
    data = json.loads(output.read_text())
    assert data["num_trees"] == 0
    assert data["results"][0] == {"num_beams": 1, "accuracy": None, "ci95": None, "num_trees": 0}
    assert data["baselines"]["oracle"]["accuracy"] is None
    assert "0 trees with rollouts" in out and (tmp_path / "bare.png").read_bytes().startswith(PNG_MAGIC)
