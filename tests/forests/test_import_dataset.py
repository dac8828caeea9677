"""import_dataset: each format from small files into a forest and a labelling scheme, bad records refused with their
line before anything is written, a second import adding nothing, and the round trips through our exports."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from adapters.prm.examples import examples_from_labels
from forests.dataset_import import IMPORT_WORKER
from forests.intake import receive_rollout
from forests.models import Forest, Node
from prmsite.core import step_datasets
from prmsite.core.domain import STEP_CONFIDENCE_COLUMNS
from prmsite.core.processbench import first_error
from rollouts.labelling.stats import label_rows, scheme_agreement
from rollouts.labels import label_create
from rollouts.models import LabellingScheme, ProcessRewardLabel, Rollout
from tests.factories import make_forest, make_root

pytestmark = pytest.mark.django_db(transaction=True)

PB = [
    {
        "id": "gsm8k-0",
        "generator": "gen-a",
        "problem": "What is 2+3?",
        "steps": ["2+3 is 6.", "So \\boxed{6}."],
        "final_answer_correct": False,
        "label": 0,
    },
    {
        "id": "gsm8k-1",
        "generator": "gen-b",
        "problem": "What is 2+3?",
        "steps": ["2+3 is 5.", "So \\boxed{5}."],
        "final_answer_correct": True,
        "label": -1,
    },
    {
        "id": "gsm8k-2",
        "generator": "gen-a",
        "problem": "What is 4*4?",
        "steps": ["4*4 is 16.", "Then add 1.", "So \\boxed{17}."],
        "final_answer_correct": False,
        "label": 1,
    },
]


def write_jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


def run(path: Path, fmt: str, *args: str) -> dict:
    out = []

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    call_command("import_dataset", "--format", fmt, "--input", str(path), *args, stdout=Sink(), stderr=Sink())
    return json.loads("".join(out).strip().splitlines()[-1])


def imported(version: str) -> Counter:
    """(problem, steps, label codes) of every labelled rollout of ``version``."""
    labels = ProcessRewardLabel.objects.filter(prm_version=version).select_related("rollout", "rollout__node")
    return Counter((label.rollout.example, tuple(label.rollout.reasoning), tuple(label.prm_output)) for label in labels)


def nothing_written() -> bool:
    return not Forest.objects.exists() and not Rollout.objects.exists() and not ProcessRewardLabel.objects.exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_processbench_becomes_a_forest_and_a_scheme(tmp_path, suffix):
    path = tmp_path / f"gsm8k{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, PB)
    else:
        pq.write_table(pa.Table.from_pylist(PB), path)
    summary = run(path, "processbench")
    assert (
        summary["rollouts"] == 3
        and summary["labels"] == 3
        and summary["labelling_scheme_version"] == ("processbench-gsm8k")
    )
    forest = Forest.objects.get(name=summary["forest_name"])
    assert summary["forest_name"].startswith("processbench-gsm8k-")
    assert forest.rollout_config["answer_kind"] == "math"
    roots = Node.objects.filter(forest=forest, parent__isnull=True).order_by("id")
    assert [r.text for r in roots] == ["What is 2+3?", "What is 4*4?"]
    assert roots[0].serialized_item["subset"] == "gsm8k" and "steps" not in roots[0].serialized_item
    assert imported("processbench-gsm8k") == Counter(
        {
            ("What is 2+3?", ("2+3 is 6.", "So \\boxed{6}."), (0, 2)): 1,
            ("What is 2+3?", ("2+3 is 5.", "So \\boxed{5}."), (1, 1)): 1,
            ("What is 4*4?", ("4*4 is 16.", "Then add 1.", "So \\boxed{17}."), (1, 0, 2)): 1,
        }
    )
    rollouts = Rollout.objects.filter(forest=forest).order_by("id")
    assert [r.correct for r in rollouts] == [False, True, False]
    assert [r.answer for r in rollouts] == ["6", "5", "17"]
    assert [r.model for r in rollouts] == ["gen-a", "gen-b", "gen-a"]
    assert {label.labelled_by for label in ProcessRewardLabel.objects.all()} == {""}
    assert LabellingScheme.objects.get(prm_version="processbench-gsm8k").title


def test_shared_prefixes_merge_and_a_second_import_adds_nothing(tmp_path):
    items = [PB[0], {**PB[0], "id": "x", "steps": ["2+3 is 6.", "Hmm, \\boxed{7}."]}]
    path = write_jsonl(tmp_path / "math.jsonl", items)
    first = run(path, "processbench")
    forest = Forest.objects.get(name=first["forest_name"])
    assert Node.objects.filter(forest=forest).count() == 4  # root, the shared first step, two last steps
    counts = (Node.objects.count(), Rollout.objects.count(), ProcessRewardLabel.objects.count())
    second = run(path, "processbench")
    assert second["forest_name"] == first["forest_name"]
    assert (second["rollouts"], second["labels"]) == (0, 0)
    assert (Node.objects.count(), Rollout.objects.count(), ProcessRewardLabel.objects.count()) == counts


def test_another_file_under_the_same_name_is_refused(tmp_path):
    run(write_jsonl(tmp_path / "a.jsonl", PB), "processbench", "--forest_name_suffix", "x")
    with pytest.raises(CommandError, match="holds an import of another file"):
        run(write_jsonl(tmp_path / "a.jsonl", PB[:1]), "processbench", "--forest_name_suffix", "x")


def test_math_shepherd_and_prm800k_and_stepwise(tmp_path):
    text = "Q? Step 1: a ки\nStep 2: The answer is: 4 ки"
    shepherd = write_jsonl(tmp_path / "ms.jsonl", [{"input": text, "label": text.replace("ки", "+")}])
    assert run(shepherd, "math_shepherd")["labels"] == 1
    assert imported("math_shepherd-ms") == Counter({("Q?", ("Step 1: a", "Step 2: The answer is: 4"), (1, 1)): 1})
    assert Rollout.objects.get(worker=IMPORT_WORKER, model="math_shepherd").correct is True

    prm = {
        "question": {"problem": "7.8 min in s?", "ground_truth_answer": "468"},
        "label": {
            "finish_reason": "solution",
            "steps": [
                {"completions": [{"text": "x", "rating": -1}, {"text": "7.8*60", "rating": 1}], "chosen_completion": 1},
                {"completions": [{"text": "= 468\n\n# Answer\n\n468", "rating": 1}], "chosen_completion": 0},
            ],
        },
    }
    summary = run(write_jsonl(tmp_path / "phase1.jsonl", [prm]), "prm800k")
    assert (summary["rollouts"], summary["labels"]) == (2, 2)
    assert imported("prm800k-phase1") == Counter(
        {("7.8 min in s?", ("x",), (0,)): 1, ("7.8 min in s?", ("7.8*60", "= 468\n\n# Answer\n\n468"), (1, 1)): 1}
    )
    root = Node.objects.get(forest__name=summary["forest_name"], parent__isnull=True)
    assert root.reference_answer == "468"
    solution = Rollout.objects.get(forest__name=summary["forest_name"], answer="468")
    assert solution.correct is True

    rows = [{"prompt": "P", "completions": ["a", "b"], "labels": [1.0, 0.5], "correct": True}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sw.parquet")
    summary = run(tmp_path / "sw.parquet", "stepwise", "--labelling_scheme_version", "mine")
    assert summary["labelling_scheme_version"] == "mine"
    assert imported("mine") == Counter({("P", ("a", "b"), (1, 2)): 1})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "line 2: not JSON"),
        (json.dumps({"problem": "p", "steps": ["a"]}).encode(), "line 2: missing key 'label'"),
        (b'{"problem": "p\\ud800", "steps": ["a"], "label": -1}', "line 2: .*lone UTF-16 surrogate"),
        (b'{"problem": "p", "steps": ["a\\u0000"], "label": -1}', "line 2: .*NUL character"),
        (b'{"problem": "p", "steps": "a", "label": -1}', "line 2: 'steps' must be a list of strings"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_written(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(PB[0]).encode() + b"\n" + line + b"\n" + json.dumps(PB[1]).encode() + b"\n")
    with pytest.raises(CommandError, match=message):
        run(path, "processbench")
    assert nothing_written()


def test_a_10_mb_line_is_refused_and_nothing_is_written(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as sink:
        sink.write(json.dumps(PB[0]) + "\n")
        sink.write(json.dumps({**PB[1], "problem": "x" * 10_000_000}) + "\n")
    with pytest.raises(CommandError, match=f"line 2: longer than {step_datasets.MAX_RECORD_BYTES} bytes"):
        run(path, "processbench")
    assert nothing_written()


def test_a_refusal_while_writing_leaves_nothing(tmp_path, settings):
    settings.PRM_ROLLOUT_MAX_STEPS = 2
    with pytest.raises(CommandError, match=r"line 3: path 0: .*at most 2 reasoning steps"):
        run(write_jsonl(tmp_path / "gsm8k.jsonl", PB), "processbench")
    assert nothing_written()


def test_a_problem_with_two_references_is_refused(tmp_path):
    items = [{**PB[0], "reference_answer": "5"}, {**PB[1], "reference_answer": "6"}]
    with pytest.raises(CommandError, match="line 2: problem first seen at line 1 with reference answer '5'"):
        run(write_jsonl(tmp_path / "r.jsonl", items), "processbench")
    assert nothing_written()


# --- round trips through our exports -------------------------------------------------------------------------------

# (problem, steps, label codes): labels agree on every shared step, as the export's node values need.
FOREST = [
    ("What is 2+2?", ["Step 1: 2+2 = 4.", "Step 2: The answer is: 4"], [1, 1]),
    ("What is 2+2?", ["Step 1: 2+2 = 4.", "Step 2: The answer is: 5"], [1, 0]),
    ("What is 2+2?", ["Step 1: 2+2 = 5.", "Step 2: The answer is: 5"], [0, 0]),
    ("What is 3*3?", ["Step 1: 3*3 = 9.", "Step 2: Check it.", "Step 3: The answer is: 9"], [1, 1, 1]),
]


def labelled_forest(scheme: str = "human") -> Forest:
    forest = make_forest("source", rollout_config={"answer_kind": "math"})
    for problem in {p for p, _, _ in FOREST}:
        make_root(forest, text=problem, ground_truth=None, reference_answer="4" if "2+2" in problem else "9")
    LabellingScheme.objects.create(prm_version=scheme, title="people")
    for problem, steps, codes in FOREST:
        rollout = receive_rollout(
            model="m", example=problem, reasoning=steps, worker="w", answer=steps[-1][-1], forest_name=forest.name
        )
        label_create(rollout_id=rollout.pk, prm_version=scheme, prm_output=codes, worker="person", labelled_by=None)
    return forest


def export(tmp_path: Path, kind: str, *args: str, fmt: str = "jsonl") -> Path:
    output = tmp_path / f"{kind}.{fmt}"
    call_command(
        "export_preferences",
        "--forest_name",
        "source",
        "--output",
        str(output),
        "--format",
        fmt,
        "--kind",
        kind,
        "--paths",
        "rollouts",
        "--value_function_option",
        "labels:human",
        "--threshold",
        "0.5",
        *args,
        stderr=open("/dev/null", "w"),  # noqa: SIM115 (closed with the process)
    )
    return output


@pytest.mark.parametrize(("kind", "fmt"), [("stepwise", "jsonl"), ("math_shepherd", "jsonl"), ("stepwise", "parquet")])
def test_round_trip_gives_back_the_paths_and_labels(tmp_path, kind, fmt):
    labelled_forest()
    path = export(tmp_path, kind, fmt=fmt)
    columns = pq.read_schema(path).names if fmt == "parquet" else list(json.loads(path.read_text().splitlines()[0]))
    assert set(STEP_CONFIDENCE_COLUMNS) <= set(columns)  # the import reads past the steps' counts and intervals
    summary = run(path, kind)
    assert summary["rollouts"] == len(FOREST)
    assert imported(summary["labelling_scheme_version"]) == Counter(
        (problem, tuple(steps), tuple(codes)) for problem, steps, codes in FOREST
    )


def test_round_trip_with_soft_labels_keeps_neutral_steps(tmp_path):
    forest = labelled_forest()
    rollout = receive_rollout(
        model="m", example="What is 3*3?", reasoning=["Step 1: 3*3 = 9.", "Step 2: Hm."], worker="w",
        forest_name=forest.name,
    )  # fmt: skip
    label_create(rollout_id=rollout.pk, prm_version="human", prm_output=[1, 2], worker="person", labelled_by=None)
    summary = run(export(tmp_path, "stepwise", "--soft_labels"), "stepwise")
    expected = Counter((problem, tuple(steps), tuple(codes)) for problem, steps, codes in FOREST)
    expected[("What is 3*3?", ("Step 1: 3*3 = 9.", "Step 2: Hm."), (1, 2))] += 1
    assert imported(summary["labelling_scheme_version"]) == expected


def test_round_trip_through_processbench_keeps_the_first_error(tmp_path):
    labelled_forest()
    summary = run(export(tmp_path, "processbench"), "processbench")
    got = Counter(
        (problem, steps, first_error(code == 1 for code in codes))
        for (problem, steps, codes), n in imported(summary["labelling_scheme_version"]).items()
        for _ in range(n)
    )
    assert got == Counter((p, tuple(s), first_error(c == 1 for c in codes)) for p, s, codes in FOREST)


def test_evaluate_prm_and_consensus_read_the_imported_scheme(tmp_path):
    summary = run(write_jsonl(tmp_path / "gsm8k.jsonl", PB), "processbench")
    version = summary["labelling_scheme_version"]
    for label in ProcessRewardLabel.objects.filter(prm_version=version):
        # a PRM that finds every first error: 0.9 before it, 0.1 at it and after
        index = first_error(code == 1 for code in label.prm_output)
        scores = [0.9 if index < 0 or i < index else 0.1 for i in range(len(label.prm_output))]
        label_create(rollout_id=label.rollout_id, prm_version="prm-x", prm_output=scores, worker="prm")
    figures = tmp_path / "figures.json"
    call_command(
        "evaluate_prm", "--prm_version", "prm-x", "--reference", f"labels:{version}", "--forest_name",
        summary["forest_name"], "--output_json", str(figures), stdout=open("/dev/null", "w"),  # noqa: SIM115
    )  # fmt: skip
    result = json.loads(figures.read_text())
    assert result["num_rollouts"] == 3 and result["f1"] == 1.0
    out = tmp_path / "consensus.jsonl"
    call_command(
        "export_consensus", "--prm_version", version, "--output", str(out), "--min_labels", "1",
        stdout=open("/dev/null", "w"), stderr=open("/dev/null", "w"),  # noqa: SIM115
    )  # fmt: skip
    assert len(out.read_text().splitlines()) == 3


def test_agreement_and_training_examples_read_the_imported_scheme(tmp_path):
    """A scheme asking for two labellers: the import is one, a person the other; agreement pairs them, and train_prm's
    examples read the imported codes (neutral steps skipped by default, weighted with --neutral_weight)."""
    LabellingScheme.objects.create(prm_version="pb-two", title="two", labels_per_rollout=2)
    run(write_jsonl(tmp_path / "gsm8k.jsonl", PB), "processbench", "--labelling_scheme_version", "pb-two")
    imported_labels = list(ProcessRewardLabel.objects.filter(prm_version="pb-two").order_by("rollout_id"))
    for label in imported_labels:
        label_create(
            rollout_id=label.rollout_id, prm_version="pb-two", prm_output=label.prm_output, worker="web",
            labelled_by="alice",
        )  # fmt: skip
    report = scheme_agreement(labels=label_rows(prm_version="pb-two"))
    assert report.rollouts == 3
    ((pair),) = report.pairs
    assert {pair.a, pair.b} == {"alice", IMPORT_WORKER} and pair.rollouts == 3
    assert pair.first_error.pairs == pair.first_error.agreeing_pairs == 3 and pair.steps.kappa == 1.0
    rollouts = {r.pk: {"example": r.example, "reasoning": r.reasoning} for r in Rollout.objects.all()}
    rows = [
        {"id": label.pk, "rollout_id": label.rollout_id, "prm_output": label.prm_output} for label in imported_labels
    ]
    examples = examples_from_labels(rows, rollouts).examples
    assert sorted(example.targets for example in examples) == [(0.0, 0.5), (1.0, 0.0, 0.5), (1.0, 1.0)]
    assert sorted(example.weights for example in examples) == [(1.0, 0.0), (1.0, 1.0), (1.0, 1.0, 0.0)]
    weighted = examples_from_labels(rows, rollouts, neutral_weight=0.5).examples
    assert sorted(example.weights for example in weighted) == [(1.0, 0.5), (1.0, 1.0), (1.0, 1.0, 0.5)]


def test_a_label_forest_imported_twice_adds_nothing_even_for_paths_without_an_answer(tmp_path):
    rows = [
        {"prompt": "P", "completions": ["a", "b"], "labels": [True, True], "ground_truth": 1, "prediction": 1},
        {"prompt": "P", "completions": ["a", "c"], "labels": [True, False], "ground_truth": 1},
    ]
    path = write_jsonl(tmp_path / "sw.jsonl", rows)
    first = run(path, "stepwise", "--answer_kind", "label")
    assert (first["rollouts"], first["labels"]) == (2, 2)
    root = Node.objects.get(forest__name=first["forest_name"], parent__isnull=True)
    assert (root.ground_truth, root.reference_answer) == (1, "1")
    assert set(Rollout.objects.values_list("prediction", "correct")) == {(None, False), (1, True)}
    second = run(path, "stepwise", "--answer_kind", "label")
    assert (second["rollouts"], second["labels"]) == (0, 0) and Rollout.objects.count() == 2
