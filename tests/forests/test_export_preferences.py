"""``python manage.py export_preferences``: every kind, read back with ``datasets`` and checked field by field."""

from __future__ import annotations

import io
import json

import pytest
from datasets import Features, Json, Value, load_dataset, load_from_disk
from django.core.management import CommandError, call_command

from prmsite.core.dataset_files import dataset_write
from tests.factories import make_label
from tests.forests.grown import PROMPTS, add_rollout, grow

pytestmark = pytest.mark.django_db


def export(tmp_path, *args: str, fmt: str = "jsonl", name: str = "out"):
    suffix = {"jsonl": ".jsonl", "parquet": ".parquet", "hf_disk": ""}[fmt]
    output = tmp_path / f"{name}{suffix}"
    err = io.StringIO()
    call_command(
        "export_preferences", "--forest_name", "metrics-forest", "--output", str(output), "--format", fmt, *args,
        stdout=io.StringIO(), stderr=err,
    )  # fmt: skip
    if fmt == "hf_disk":
        dataset = load_from_disk(str(output))
    else:
        dataset = load_dataset("json" if fmt == "jsonl" else "parquet", data_files=str(output), split="train")
    return dataset, err.getvalue(), output


def ids(grown, tree, *steps):
    return grown.node(tree, *steps).pk


def test_pairs_are_sibling_steps_whose_values_differ(tmp_path):
    grown = grow()
    dataset, err, _ = export(tmp_path, "--kind", "pairs")
    rows = list(dataset)
    # A: root (s1 3/4 vs u1 0), s1 (t2 1 vs s2 2/3), s1.s2 (yes 1 vs no 0); B: root (b1 1/2 vs c1 0), b1 (no vs yes).
    assert len(rows) == 5
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("s1 ", "u1 "),
        ("t2 ", "s2 "),
        ("yes", "no"),
        ("b1 ", "c1 "),
        ("no", "yes"),
    ]
    second = rows[1]
    assert second["prompt"] == PROMPTS["A"] + "s1 "
    assert second["margin"] == pytest.approx(1 / 3)
    assert second["preference"] == 1
    assert (second["chosen_value"], second["rejected_value"]) == (1.0, pytest.approx(2 / 3))
    assert (second["chosen_count"], second["rejected_count"]) == (1, 3)
    assert second["parent_id"] == ids(grown, "A", "s1 ")
    assert second["chosen_id"] == ids(grown, "A", "s1 ", "t2 ")
    assert second["rejected_id"] == ids(grown, "A", "s1 ", "s2 ")
    assert second["tree_id"] == grown.roots["A"].pk and second["forest"] == "metrics-forest"
    assert second["chosen_ci95_low"] == pytest.approx(0.2065, abs=1e-4) and second["chosen_ci95_high"] == 1.0
    assert rows[2]["prompt"] == PROMPTS["A"] + "s1 s2 "
    assert rows[0]["prompt"] == PROMPTS["A"]
    assert err.strip().endswith("s") and "Exported 5 pairs records of forest metrics-forest" in err


def test_the_summary_is_also_written_to_output_json(tmp_path):
    grow()
    _, err, output = export(tmp_path, "--kind", "pairs", "--output_json", str(tmp_path / "summary.json"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {
        "forest_name": "metrics-forest",
        "kind": "pairs",
        "format": "jsonl",
        "output": str(output),
        "records": 5,
        "skipped": {},
    }
    assert "Exported 5 pairs records" in err


def test_min_margin_and_the_cap_per_node_keep_the_largest_margins(tmp_path):
    grow()
    dataset, _, _ = export(tmp_path, "--kind", "pairs", "--min_margin", "0.5")
    assert sorted(round(m, 3) for m in dataset["margin"]) == [0.5, 0.75, 1.0, 1.0]
    # Three siblings under one node: the cap keeps the two widest margins.
    add_rollout("A", ["s1 ", "v2 ", "no"], 0)
    add_rollout("A", ["s1 ", "v2 ", "no"], 0)
    capped, _, _ = export(tmp_path, "--kind", "pairs", "--max_pairs_per_node", "2", name="capped")
    under_s1 = [(r["chosen"], r["rejected"], round(r["margin"], 3)) for r in capped if r["prompt"] == "Is A?s1 "]
    # s1's children: t2 (1.0), s2 (2/3), v2 (0.0): t2>v2 (1.0) and s2>v2 (0.667) beat t2>s2 (0.333); out by ids.
    assert under_s1 == [("s2 ", "v2 ", 0.667), ("t2 ", "v2 ", 1.0)]


def test_neutral_pairs_are_marked_2_on_request(tmp_path):
    grow()
    add_rollout("A", ["s1 ", "s2 ", "maybe"], 1)
    without, _, _ = export(tmp_path, "--kind", "pairs")
    assert set(without["preference"]) == {1}
    dataset, _, _ = export(tmp_path, "--kind", "pairs", "--neutral_pairs", name="neutral")
    neutral = [r for r in dataset if r["preference"] == 2]
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in neutral] == [("yes", "maybe", 0.0)]  # both 1.0


def test_stepwise_is_the_contract_of_the_prm_trainer(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "stepwise", fmt="parquet")
    assert dataset.features["prompt"].dtype == "string"
    assert dataset.features["completions"].feature.dtype == "string"
    assert dataset.features["labels"].feature.dtype == "bool"
    rows = list(dataset)
    assert len(rows) == 7  # one per distinct path
    no = next(r for r in rows if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "no"))
    assert no["prompt"] == PROMPTS["A"]
    assert no["completions"] == ["s1 ", "s2 ", "no"]
    assert no["labels"] == [True, True, False]
    assert no["values"] == pytest.approx([0.75, 2 / 3, 0.0])
    assert no["counts"] == [4, 3, 1]
    assert no["node_ids"] == [ids(grown, "A", "s1 "), ids(grown, "A", "s1 ", "s2 "), no["leaf_id"]]
    assert (no["prediction"], no["ground_truth"], no["correct"], no["rollout_id"]) == (0, 1, False, None)
    yes = next(r for r in rows if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "yes"))
    assert yes["rollouts"] == 2 and yes["labels"] == [True, True, True]
    assert [r["tree_id"] for r in rows] == sorted(r["tree_id"] for r in rows)


def test_stepwise_soft_labels_and_one_record_per_rollout(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "stepwise", "--soft_labels", "--paths", "rollouts")
    assert dataset.features["labels"].feature.dtype == "float64"
    rows = list(dataset)
    assert len(rows) == 8  # every rollout, the two identical ones apart
    yes = [r for r in rows if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "yes")]
    assert sorted(r["rollout_id"] for r in yes) == sorted(r.pk for r in grown.rollouts[("A", "s1 ", "s2 ", "yes")])
    assert yes[0]["labels"] == pytest.approx([0.75, 2 / 3, 1.0])
    assert all(r["rollouts"] == 1 for r in rows)


def test_a_higher_threshold_makes_uncertain_steps_bad(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "stepwise", "--threshold", "0.7")
    no = next(r for r in dataset if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "no"))
    assert no["labels"] == [True, False, False]  # 0.75 > 0.7, 0.667 is not


def test_math_shepherd_tags_every_step_and_labels_it(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "math_shepherd", fmt="hf_disk")
    no = next(r for r in dataset if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "no"))
    assert no["input"] == "Is A? s1 ки\ns2 ки\nno ки"
    assert no["label"] == "Is A? s1 +\ns2 +\nno -"
    # The trainers' reading: the labels sit where the tags are.
    tags = [i for i in range(len(no["input"])) if no["input"].startswith("ки", i)]
    assert len(tags) == 3


def test_openrlhf_puts_a_placeholder_after_each_step_and_the_values_beside(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "openrlhf", "--placeholder_token", "<step>")
    no = next(r for r in dataset if r["leaf_id"] == ids(grown, "A", "s1 ", "s2 ", "no"))
    assert no["input"] == "Is A? s1 <step>\ns2 <step>\nno <step>"
    assert no["value"] == pytest.approx([0.75, 2 / 3, 0.0])


def test_paths_whose_text_holds_the_step_tag_are_skipped_and_counted(tmp_path):
    grow()
    add_rollout("B", ["a ки b ", "no"], 0)
    dataset, err, _ = export(tmp_path, "--kind", "math_shepherd")
    assert len(dataset) == 7
    assert "1 skipped (text holding the step tag 'ки')" in err


def test_processbench_has_its_fields_and_the_first_wrong_step(tmp_path):
    grown = grow()
    dataset, _, _ = export(tmp_path, "--kind", "processbench")
    assert {"id", "generator", "problem", "steps", "final_answer_correct", "label"} <= set(dataset.column_names)
    by_leaf = {r["leaf_id"]: r for r in dataset}
    no = by_leaf[ids(grown, "A", "s1 ", "s2 ", "no")]
    assert (no["label"], no["final_answer_correct"]) == (2, False)
    assert no["problem"] == PROMPTS["A"] and no["steps"] == ["s1 ", "s2 ", "no"]
    assert no["generator"] == "model-a" and no["id"] == f"metrics-forest-node-{no['leaf_id']}"
    assert by_leaf[ids(grown, "A", "u1 ", "no")]["label"] == 0
    yes = by_leaf[ids(grown, "A", "s1 ", "s2 ", "yes")]
    assert (yes["label"], yes["final_answer_correct"]) == (-1, True)


def test_tree_is_one_nested_record_per_tree(tmp_path):
    grown = grow()
    dataset, _, output = export(tmp_path, "--kind", "tree")
    assert len(dataset) == 3
    first = json.loads(output.read_text(encoding="utf-8").splitlines()[0])
    assert first["tree_id"] == grown.roots["A"].pk and first["ground_truth"] == 1 and first["num_rollouts"] == 5
    root = first["root"]
    assert (root["text"], root["count"], root["value"]) == (PROMPTS["A"], 5, 0.6)
    s1 = root["children"][0]
    assert (s1["text"], s1["count"], s1["value"]) == ("s1 ", 4, 0.75)
    assert [c["text"] for c in s1["children"]] == ["s2 ", "t2 "]
    assert s1["children"][0]["children"][0] == {
        "id": ids(grown, "A", "s1 ", "s2 ", "yes"),
        "text": "yes",
        "value": 1.0,
        "count": 2,
        "ci95_low": pytest.approx(0.342, abs=1e-3),
        "ci95_high": 1.0,
        "is_leaf": True,
        "prediction": 1,
        "children": [],
    }
    empty = json.loads(output.read_text(encoding="utf-8").splitlines()[2])
    assert empty["root"]["value"] is None and empty["num_rollouts"] == 0
    parquet, _, _ = export(tmp_path, "--kind", "tree", fmt="parquet")
    assert parquet[0]["root"]["children"][0]["text"] == "s1 "


TRICKY_TEXTS = [
    'quote " backslash \\ slash / </script>',
    "tab\tnewline\ncr\rbell\x07 esc\x1b del\x7f",  # no NUL: PostgreSQL text cannot hold it
    "unicode é 中文 🙂 \u2028 ки",
    "  padded, with a trailing newline\n",
]


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("pairs", ["--neutral_pairs"]),
        ("stepwise", ["--paths", "rollouts"]),
        ("stepwise", ["--soft_labels"]),
        ("math_shepherd", []),
        ("openrlhf", ["--placeholder_token", "<step/>"]),
        ("processbench", []),
        ("tree", []),
    ],
)
def test_jsonl_is_byte_for_byte_what_datasets_writes_for_the_same_records(tmp_path, kind, args):
    grown = grow()
    for i, text in enumerate(TRICKY_TEXTS):
        add_rollout("A", ["s1 ", text, "yes" if i % 2 else "no"], i % 2)
        add_rollout("B", [text, f"tail {i} / 1/3"], 1)
    make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[1 / 3, 1e-20])
    saved, _, _ = export(tmp_path, "--kind", kind, *args, fmt="hf_disk", name="saved")
    lines, _, output = export(tmp_path, "--kind", kind, *args, name="lines")
    # The JSON lines are assembled from Arrow columns (prmsite.core.json_text); datasets' own writer, given the
    # records the same export saved with save_to_disk, writes the same bytes (pandas' ujson, 10 decimals, "\/").
    reference = tmp_path / "reference.jsonl"
    saved.to_json(str(reference), lines=True, force_ascii=False)
    assert output.read_bytes() == reference.read_bytes()
    assert [json.loads(line) for line in output.read_text(encoding="utf-8").split("\n")[:-1]] == list(lines)
    assert lines.column_names == saved.column_names and len(lines) == len(saved)


def test_json_text_not_written_for_the_lines_goes_through_datasets_writer(tmp_path):
    features = Features({"id": Value("int64"), "root": Json()})
    output = tmp_path / "records.jsonl"
    written = dataset_write([{"id": [1], "root": ['{"a": 0.6666666666666666, "b": "x/y"}']}], features, output, "jsonl")
    assert written == 1
    assert output.read_text(encoding="utf-8") == '{"id":1,"root":{"a":0.6666666667,"b":"x\\/y"}}\n'


def test_the_same_forest_exports_the_same_bytes(tmp_path):
    grow()
    _, _, first = export(tmp_path, "--kind", "pairs", name="one")
    _, _, second = export(tmp_path, "--kind", "pairs", name="two")
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "two.jsonl"]  # no temporary left


def test_nothing_to_export_fails_and_leaves_the_old_file(tmp_path):
    grow()
    output = tmp_path / "out.jsonl"
    output.write_text("old\n")
    with pytest.raises(CommandError, match="nothing to export") as failure:
        call_command(
            "export_preferences", "--forest_name", "metrics-forest", "--output", str(output), "--min_margin", "2",
            stderr=io.StringIO(),
        )  # fmt: skip
    assert "\n" not in str(failure.value)
    assert output.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_folder_that_is_not_a_saved_dataset_is_never_replaced(tmp_path):
    grow()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CommandError, match="not a dataset saved by save_to_disk"):
        call_command(
            "export_preferences", "--forest_name", "metrics-forest", "--output", str(precious), "--format", "hf_disk",
            stderr=io.StringIO(),
        )  # fmt: skip
    assert (precious / "notes.txt").read_text() == "keep me"
    export(tmp_path, "--kind", "pairs", fmt="hf_disk", name="saved")
    again, _, _ = export(tmp_path, "--kind", "stepwise", fmt="hf_disk", name="saved")  # a saved dataset is replaced
    assert "completions" in again.column_names and len(again) == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--forest_name", "nope"], "No forest named 'nope'"),
        (["--forest_name", "metrics-forest", "--min_margin", "-1"], "min_margin"),
        (["--forest_name", "metrics-forest", "--max_pairs_per_node", "0"], "max_pairs_per_node"),
        (["--forest_name", "metrics-forest", "--value_function_option", "prm:none"], "No label of prm_version"),
        (["--forest_name", "metrics-forest", "--placeholder_token", ""], "placeholder"),
    ],
)
def test_bad_input_fails_with_one_line(tmp_path, args, message):
    grow()
    with pytest.raises(CommandError, match=message):
        call_command("export_preferences", *args, "--output", str(tmp_path / "x.jsonl"), stderr=io.StringIO())
    assert list(tmp_path.iterdir()) == []


def test_prm_values_export_only_paths_whose_steps_all_have_a_value(tmp_path):
    grown = grow()
    make_label(grown.rollout("A", "s1 ", "s2 ", "no"), "prm-v1", prm_output=[0.9, 0.6, 0.1])
    make_label(grown.rollout("A", "u1 ", "no"), "prm-v1", prm_output=[0.3, 0.5])
    make_label(grown.rollout("B", "b1 ", "yes"), "prm-v1", prm_output=[0.7, 0.2])
    dataset, err, _ = export(tmp_path, "--kind", "stepwise", "--soft_labels", "--value_function_option", "prm:prm-v1")
    # Three labelled paths; s1 s2 yes shares s1 and s2 with a labelled one, but its last step has no value: skipped,
    # like the three other paths with unlabelled steps.
    assert sorted(tuple(r["completions"]) for r in dataset) == [("b1 ", "yes"), ("s1 ", "s2 ", "no"), ("u1 ", "no")]
    labelled = next(r for r in dataset if r["completions"] == ["s1 ", "s2 ", "no"])
    assert labelled["labels"] == pytest.approx([0.9, 0.6, 0.1]) and labelled["counts"] == [1, 1, 1]
    assert "4 skipped (a step without a value)" in err
    pairs, _, _ = export(tmp_path, "--kind", "pairs", "--value_function_option", "prm:prm-v1", name="prm-pairs")
    # Only the root of A has two children with values (s1 0.9, u1 0.3).
    assert [(r["chosen"], r["rejected"], round(r["margin"], 3)) for r in pairs] == [("s1 ", "u1 ", 0.6)]
