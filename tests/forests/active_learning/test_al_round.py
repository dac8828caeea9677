"""``al_round`` end to end on CPU: a small forest of synthetic rollouts on a live server, a stub judge over real HTTP,
a tiny model built in code. Two rounds: every stage runs, the second labels first what the first round's PRM gets
wrong, and the table shows each round's real metrics next to the other's."""

from __future__ import annotations

import json
import os
import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from adapters.models import PRMAdapter
from adapters.prm.synthetic import synthetic_rollout
from prmsite.core.client import PrmsiteClient
from rollouts.models import ProcessRewardLabel, Rollout
from rollouts.selectors import rollout_active_learning_order
from tests.adapters.prm.conftest import TINY_TRAINING
from tests.factories import make_forest, make_root
from tests.stub_openai import judge_reply

SCHEME = "judge-al"
FOREST = "al-forest"


@pytest.fixture
def environment(live_api_server, worker_token, stub, monkeypatch, tmp_path):
    """The server, the judge and a token in the environment, as the commands read them."""
    monkeypatch.setenv("WEBSERVER_API_BASE", live_api_server.url)
    monkeypatch.setenv("WEBSERVER_API_TOKEN", worker_token)
    monkeypatch.setenv("OPENAI_API_BASE", stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the judge's spool
    stub.reply = judge_reply
    with PrmsiteClient(live_api_server.url, worker_token, backoff_initial=0.01) as client:
        yield client


def seed_forest(client: PrmsiteClient, *, prompts: int, rollouts_per_prompt: int, seed: int = 5) -> list[int]:
    """A forest of synthetic prompts (ground truth 1), its rollouts posted through the API into the trie; a rollout
    predicts 1 when every step is good."""
    forest = make_forest(FOREST, rollout_config={"template": "{q}", "reasoning_delimiter_pattern": "step",
                                                 "prediction_pattern": "(\\d)"})  # fmt: skip
    rng = random.Random(seed)
    bodies = []
    for p in range(prompts):
        prompt = f"Problem {p} " + " ".join(rng.sample([f"w{i}" for i in range(24)], 4))
        root = make_root(forest, prompt, ground_truth=1)
        for _ in range(rollouts_per_prompt):
            steps, values = synthetic_rollout(rng)
            bodies.append({"model": "tiny", "example": prompt, "reasoning": steps, "worker": "rollout-worker",
                           "prediction": int(all(v > 0.5 for v in values)), "ground_truth": 1,
                           "forest_name": forest.name, "root_id": root.pk})  # fmt: skip
    results = client.post_rollouts(bodies)
    assert all("id" in r for r in results), results[:3]
    return [r["id"] for r in results]


def al_round(tmp_path, base_model, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    flags = {**TINY_TRAINING, "device": "cpu", "eval_fraction": 0.2, "label_batch_size": 16}
    call_command(
        "al_round", "--forest_name", FOREST, "--labelling_scheme_version", SCHEME, "--base_model", str(base_model),
        "--model_name", "stub-model", "--num_processes", "8", "--state_dir", str(tmp_path / "state"),
        "--reference", "labels", *[part for name, value in flags.items() for part in (f"--{name}", str(value))],
        *args, stdout=out, stderr=err,
    )  # fmt: skip
    return out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_two_rounds_run_every_stage_and_compare_their_real_metrics(environment, tiny_base, tmp_path):
    ids = seed_forest(environment, prompts=60, rollouts_per_prompt=3)

    out, err = al_round(tmp_path, tiny_base, "--max_labels", "90", "--output_json", str(tmp_path / "round1.json"))
    first = json.loads((tmp_path / "round1.json").read_text())
    assert first["round"] == 1 and first["status"] == "completed" and first["prm_version"] == f"{FOREST}-r1"
    assert [first["stages"][name]["status"] for name in ("label", "train", "prm_label", "measure")] == ["done"] * 4
    stages = {name: stage["summary"] for name, stage in first["stages"].items()}
    assert stages["label"]["sent"] == 90 and stages["label"]["labels_total"] == 90
    assert stages["train"]["uploaded"] and stages["train"]["data"]["examples"] == 90
    assert stages["prm_label"]["labelled"] == len(ids)  # the PRM labelled every rollout of the server
    beam = stages["measure"]["beam_search"]
    evaluation = stages["measure"]["evaluate_prm"]
    assert beam["value_function_option"] == f"prm:{FOREST}-r1" and beam["num_trees"] == 60
    assert [r["num_beams"] for r in beam["results"]] == [1, 5] and all(0 <= r["accuracy"] <= 1 for r in beam["results"])
    assert evaluation["reference"] == f"labels:{SCHEME}" and evaluation["num_rollouts"] == 90
    assert "round 1 (prm al-forest-r1) against no earlier round" in out
    assert "[4/4] measure: done in" in err
    first_labelled = set(ProcessRewardLabel.objects.filter(prm_version=SCHEME).values_list("rollout_id", flat=True))
    assert PRMAdapter.objects.filter(prm_version=f"{FOREST}-r1").exists()

    # Round 2: 90 more labels, those the first PRM gets most wrong first.
    unlabelled = Rollout.objects.exclude(pk__in=first_labelled)
    expected = list(
        rollout_active_learning_order(queryset=unlabelled, reference_prm_version=f"{FOREST}-r1").values_list(
            "id", flat=True
        )[:90]
    )
    out, err = al_round(tmp_path, tiny_base, "--max_labels", "90", "--output_json", str(tmp_path / "round2.json"))
    second = json.loads((tmp_path / "round2.json").read_text())
    assert second["round"] == 2 and second["status"] == "completed"
    assert second["stages"]["label"]["summary"]["reference_prm_version"] == f"{FOREST}-r1"
    second_labelled = set(ProcessRewardLabel.objects.filter(prm_version=SCHEME).values_list("rollout_id", flat=True))
    assert second_labelled - first_labelled == set(expected)
    assert second["stages"]["train"]["summary"]["data"]["examples"] == 180
    assert second["stages"]["measure"]["summary"]["evaluate_prm"]["num_rollouts"] == 180
    # The PRM of a round trained on the judge's labels of a learnable task agrees with them.
    assert second["stages"]["train"]["summary"]["eval"]["step_accuracy"] >= 0.8
    assert second["stages"]["measure"]["summary"]["evaluate_prm"]["step_agreement"] >= 0.8

    assert "round 2 (prm al-forest-r2) against round 1 (prm al-forest-r1)" in out
    table = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    accuracy = second["stages"]["train"]["summary"]["eval"]["step_accuracy"]
    previous_accuracy = first["stages"]["train"]["summary"]["eval"]["step_accuracy"]
    row = table["held-out step accuracy"]
    assert row[-3:] == [f"{previous_accuracy:.3f}", f"{accuracy:.3f}", f"{accuracy - previous_accuracy:+.3f}"]
    assert table["AI labels stored this round"][-3:] == ["90", "90", "+0"]
    assert table[f"labels of {SCHEME} on the server"][-3:] == ["90", "180", "+90"]
    state = json.loads((tmp_path / "state" / f"{FOREST}.json").read_text())
    assert [r["round"] for r in state["rounds"]] == [1, 2] and state["forest_name"] == FOREST
    assert os.environ["WEBSERVER_API_TOKEN"] not in (tmp_path / "state" / f"{FOREST}.json").read_text()
    print({r["round"]: {n: st["seconds"] for n, st in r["stages"].items()} for r in state["rounds"]})


def test_a_failing_stage_stops_the_round_with_one_line_and_the_next_run_goes_on_from_it(environment, stub, tiny_base,
                                                                                      tmp_path):  # fmt: skip
    ids = seed_forest(environment, prompts=6, rollouts_per_prompt=2)
    stub.fail_next(401)  # the judge refuses the key: a fatal error of stage 1
    with pytest.raises(
        CommandError, match=r"^al_round: round 1 failed at stage label: the generation server answered 401"
    ):
        al_round(tmp_path, tiny_base, "--epochs", "1")
    state = json.loads((tmp_path / "state" / f"{FOREST}.json").read_text())
    [record] = state["rounds"]
    assert record["status"] == "failed" and record["stages"]["label"]["status"] == "failed"
    assert "train" not in record["stages"] and not PRMAdapter.objects.exists()
    # (the requests in flight beside the refused one were answered: their labels are kept)
    kept = ProcessRewardLabel.objects.filter(prm_version=SCHEME).count()
    assert kept == record["stages"]["label"]["summary"]["sent"] <= len(ids)

    # The next run goes on with the same round (and prm_version): the judge labels every rollout, the PRM learns
    # from the forest's Monte-Carlo values, labels every rollout, and is measured against the exact values.
    out, err = al_round(tmp_path, tiny_base, "--train_on", "forest", "--reference", "labelled")
    assert "round 1 (prm al-forest-r1) failed earlier; going on" in err
    state = json.loads((tmp_path / "state" / f"{FOREST}.json").read_text())
    [record] = state["rounds"]
    assert record["status"] == "completed" and record["prm_version"] == f"{FOREST}-r1"
    stages = {name: stage["summary"] for name, stage in record["stages"].items()}
    assert stages["label"]["sent"] == len(ids) - kept and stages["label"]["labels_total"] == len(ids)
    assert stages["train"]["data"]["source"] == f"dataset {tmp_path / 'state' / 'al-forest-round-1' / 'stepwise.jsonl'}"
    assert stages["prm_label"]["labelled"] == len(ids)
    assert stages["measure"]["evaluate_prm"]["reference"] == "labelled"
    assert stages["measure"]["evaluate_prm"]["num_rollouts"] == len(ids)
    assert stages["measure"]["beam_search"]["num_trees"] == 6
    assert "round 1 (prm al-forest-r1) against no earlier round" in out
    assert "evaluate_prm vs labelled: F1" in out and "beam search accuracy, N=5" in out

    # Round 2 without the judge: the scheme's labels as they are; the table compares the two rounds.
    out, err = al_round(tmp_path, tiny_base, "--skip_ai_labels", "--prm_version", "mine-2", "--epochs", "1")
    state = json.loads((tmp_path / "state" / f"{FOREST}.json").read_text())
    assert [r["prm_version"] for r in state["rounds"]] == [f"{FOREST}-r1", "mine-2"]
    second = state["rounds"][1]
    assert second["stages"]["label"]["status"] == "skipped"
    assert second["stages"]["train"]["summary"]["data"]["source"] == f"labelling_scheme_version {SCHEME}"
    assert "round 2 (prm mine-2) against round 1 (prm al-forest-r1)" in out
    table = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert table["AI labels stored this round"][-2:] == [str(len(ids) - kept), "-"]
    assert table["rollouts labelled by the PRM"][-3:] == [str(len(ids)), str(len(ids)), "+0"]


def test_the_forest_must_be_in_the_database_before_any_work(environment, tmp_path):
    with pytest.raises(
        CommandError, match=r"^al_round: No forest named 'no-such-forest' in this database; al_round measures through"
    ):
        call_command("al_round", "--forest_name", "no-such-forest", "--labelling_scheme_version", SCHEME,
                     "--base_model", "x", "--model_name", "m", "--state_dir", str(tmp_path / "s"),
                     stdout=StringIO(), stderr=StringIO())  # fmt: skip
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())
