"""A forest's rollouts exported as JSON lines and imported into another forest (or server) unchanged, once."""

from __future__ import annotations

import io
import json
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.db.models import Count

from forests import rollout_files
from forests.intake import receive_rollout
from forests.models import Node
from forests.rollout_files import rollout_lines
from forests.selectors import forest_progress
from prmsite.core.errors import ApplicationError
from rollouts.models import Rollout
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
        receive_rollout(**rollout_fields(worker=worker, reasoning=steps), forest_name="source")
    receive_rollout(
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
    receive_rollout(**rollout_fields(), forest_name="source")
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


# --- issue 17: imports in short transactions, resumable; hostile files (items 10 and 14) ----------------------------


def write_rollouts(path, count: int, *, keyed: bool = True) -> None:
    lines = []
    for index in range(count):
        fields = rollout_fields(worker=f"w{index}", reasoning=[f"Step {index}. ", "No (code: 0)"])
        if keyed and index % 2 == 0:  # half of them bring their own key, the others get one from their line
            fields["idempotency_key"] = f"k{index}"
        lines.append(json.dumps(fields))
    path.write_text("\n".join(lines) + "\n")


class Hooked:
    """Stands for the command's progress bars: runs ``hook(desc, done)`` at every update."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, stderr):
        return self

    def callback(self, desc, unit, total=None):
        return lambda done, total_now=None: self.hook(desc, done)

    def close(self):
        pass


@pytest.mark.django_db(transaction=True)
def test_an_import_commits_in_short_transactions_and_other_writers_get_in_between(tmp_path, monkeypatch):

    forest_with_prompts("target")
    path = tmp_path / "r.jsonl"
    write_rollouts(path, 7)
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def another_writer(done: int) -> None:
        # Another connection (a worker posting meanwhile) writes, and sees what the import committed so far.
        try:
            make_forest(f"written-meanwhile-{done}")
            seen.append((done, Rollout.objects.count()))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def hook(desc: str, done: int) -> None:
        if desc != "importing" or errors:
            return
        thread = threading.Thread(target=another_writer, args=(done,))
        thread.start()
        thread.join(timeout=120)  # only a write lock held by the import would keep it waiting (then failing)

    monkeypatch.setattr("forests.management.commands.import_rollouts.Bars", Hooked(hook))
    err = io.StringIO()
    call_command("import_rollouts", "--forest_name", "target", "--input", str(path), "--batch_size", "2", stderr=err)
    assert not errors, errors
    assert seen == [(2, 2), (4, 4), (6, 6), (7, 7)]  # four transactions, each committed before the next began
    assert "Imported 7 rollouts into target (0 were there already), in 4 transactions of up to 2" in err.getvalue()


@pytest.mark.django_db(transaction=True)
def test_an_import_interrupted_in_the_middle_and_run_again_stores_each_rollout_once(tmp_path, monkeypatch):
    forest_with_prompts("target")
    path = tmp_path / "r.jsonl"
    write_rollouts(path, 7)
    receive = rollout_files.receive_rollout
    calls = []

    def killed_at_the_fifth(**fields):
        calls.append(1)
        if len(calls) == 5:  # in the third batch of two
            raise RuntimeError("killed")
        return receive(**fields)

    monkeypatch.setattr(rollout_files, "receive_rollout", killed_at_the_fifth)
    with pytest.raises(RuntimeError, match="killed"):
        call_command("import_rollouts", "--forest_name", "target", "--input", str(path), "--batch_size", "2")
    assert Rollout.objects.count() == 4  # the first two batches, nothing of the third
    monkeypatch.setattr(rollout_files, "receive_rollout", receive)
    err = io.StringIO()
    call_command("import_rollouts", "--forest_name", "target", "--input", str(path), "--batch_size", "2", stderr=err)
    assert "Imported 3 rollouts into target (4 were there already)" in err.getvalue()
    assert sorted(r.worker for r in Rollout.objects.all()) == [f"w{i}" for i in range(7)]
    keys = list(Rollout.objects.values_list("idempotency_key", flat=True))
    assert len(set(keys)) == 7 and None not in keys
    call_command("import_rollouts", "--forest_name", "target", "--input", str(path))
    assert Rollout.objects.count() == 7  # a file without keys imported again stores nothing either


def hostile_line(kind: str) -> bytes:
    good = json.dumps(rollout_fields())
    if kind == "not UTF-8":
        return good.replace("Step 1", "Step \xff").encode("latin-1")
    if kind in ("NaN", "Infinity", "-Infinity"):
        return good[:-1].encode() + f', "score": {kind}}}'.encode()
    if kind == "beyond float range":
        return good[:-1].encode() + b', "score": 1e400}'
    if kind == "a huge extra field":
        return good[:-1].encode() + b', "padding": "' + b"x" * 5_000_000 + b'"}'
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not UTF-8", "line 2: not UTF-8 text"),
        ("NaN", "line 2: NaN is not a JSON number"),
        ("Infinity", "line 2: Infinity is not a JSON number"),
        ("-Infinity", "line 2: -Infinity is not a JSON number"),
        ("beyond float range", "line 2: 1e400 is not a JSON number"),
        ("a huge extra field", "line 2: longer than 100000 bytes"),
    ],
)
def test_a_hostile_line_is_one_line_error_naming_it_and_nothing_is_imported(tmp_path, settings, kind, message):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    forest_with_prompts("target")
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(rollout_fields()).encode() + b"\n" + hostile_line(kind) + b"\n")
    with pytest.raises(CommandError, match=message) as refused:
        call_command("import_rollouts", "--forest_name", "target", "--input", str(path))
    assert "\n" not in str(refused.value)
    assert not Rollout.objects.exists()


def test_a_line_too_long_is_refused_before_it_is_read_whole(tmp_path):
    first = json.dumps(rollout_fields()).encode() + b"\n"
    path = tmp_path / "huge.jsonl"
    path.write_bytes(first + hostile_line("a huge extra field") + b"\n")
    read: list[int] = []
    with pytest.raises(ApplicationError, match="line 2: longer than 1000 bytes"):
        for _ in rollout_lines(path, max_line_bytes=1000, on_bytes=read.append):
            pass
    assert read[-1] <= len(first) + 1001  # 5 MB on that line, a kilobyte of it read
