"""A forest's rollouts exported as JSON lines and imported into another forest (or server) unchanged, once."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from forests.models import Node
from rollouts.models import Rollout
from rollouts.services import rollout_create
from tests.factories import make_forest, make_root, rollout_fields
from tests.servers import PROJECT_ROOT

pytestmark = pytest.mark.django_db

PROMPTS = ["Is the sky green?", "Is water wet?"]


def forest_with_prompts(name: str):
    forest = make_forest(name)
    for prompt in PROMPTS:
        make_root(forest, prompt, ground_truth=0)
    return forest


def path_texts(forest) -> list[list[str]]:
    paths = []
    for rollout in Rollout.objects.filter(forest=forest).order_by("id"):
        node, texts = rollout.node, []
        while node.parent_id is not None:
            texts.append(node.text)
            node = node.parent
        paths.append([node.text, *reversed(texts)])
    return paths


def test_rollouts_survive_an_export_and_an_import_into_another_forest(tmp_path):
    source = forest_with_prompts("source")
    for worker, steps in [("a", ["Step 1. ", "No (code: 0)"]), ("b", ["Step 1. ", "Yes (code: 1)"])]:
        rollout_create(**rollout_fields(worker=worker, reasoning=steps), forest_name="source")
    rollout_create(
        **rollout_fields(example="Is water wet?", reasoning=["Wet. "], attributes={"usage": {"total_tokens": 9}}),
        forest_name="source",
    )
    target = forest_with_prompts("target")
    output = tmp_path / "rollouts.jsonl"
    call_command("export_rollouts", "--forest_name", "source", "--output", str(output))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["worker"] for line in lines] == ["a", "b", "worker-1"]
    assert lines[2]["usage"] == {"total_tokens": 9}
    call_command("import_rollouts", "--forest_name", "target", "--input", str(output))
    assert path_texts(target) == path_texts(source)
    imported = Rollout.objects.filter(forest=target).order_by("id")
    assert [r.attributes for r in imported] == [{}, {}, {"usage": {"total_tokens": 9}}]
    assert Node.objects.filter(forest=target).count() == Node.objects.filter(forest=source).count()


def test_importing_the_same_file_twice_stores_nothing_the_second_time(tmp_path):
    source = forest_with_prompts("source")
    rollout_create(**rollout_fields(), forest_name="source")
    forest_with_prompts("target")
    output = tmp_path / "r.jsonl"
    call_command("export_rollouts", "--forest_name", source.name, "--output", str(output))
    for _ in range(2):
        call_command("import_rollouts", "--forest_name", "target", "--input", str(output))
    assert Rollout.objects.filter(forest__name="target").count() == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ("[1]", "line 2: not a JSON object"),
        (json.dumps({**rollout_fields(), "prediction": "1"}), "line 2: prediction"),
        (json.dumps({**rollout_fields(), "example": "e\\u0000"}).replace("\\\\u0000", "\\u0000"), "line 2"),
        (json.dumps(rollout_fields(example="Not a prompt of the forest")), "No tree of forest"),
    ],
)
def test_a_bad_line_fails_with_one_line_and_nothing_is_imported(tmp_path, line, message):
    forest_with_prompts("target")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rollout_fields()) + "\n" + line + "\n")
    with pytest.raises(CommandError, match=message):
        call_command("import_rollouts", "--forest_name", "target", "--input", str(path))
    assert not Rollout.objects.exists()
    assert Node.objects.filter(depth__gt=0).count() == 0


def test_make_runs_demo_forest_comes_with_real_branching_rollouts():
    # What `make run` does: seed the demo forest, then load the rollouts `make demo` made (forests/demo/).
    from django.db.models import Count

    from forests.selectors import forest_progress

    call_command(
        "seed_forest", "--dataset_config_name", "liar_demo", "--dataset_split", "test", "--forest_name_suffix", "demo"
    )
    shipped = PROJECT_ROOT / "forests" / "demo" / "liar_demo_rollouts.jsonl"
    for _ in range(2):  # make run twice
        call_command("import_rollouts", "--forest_name", "liar_demo-test-demo", "--input", str(shipped))
    forest = Rollout.objects.first().forest
    lines = shipped.read_text(encoding="utf-8").splitlines()
    assert forest.name == "liar_demo-test-demo" and Rollout.objects.count() == len(lines) >= 60
    branching = Node.objects.filter(forest=forest).annotate(k=Count("children")).filter(k__gt=1, depth__gt=0)
    assert branching.count() >= 10  # real branching below the roots, not twenty bare roots
    progress = forest_progress(forest=forest)
    assert progress.trees_with_rollouts == 20 and 0 < progress.correct_rollouts < progress.rollouts
    assert all(r.attributes["usage"]["total_tokens"] > 0 for r in Rollout.objects.all())
