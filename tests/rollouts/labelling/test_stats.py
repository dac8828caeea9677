"""The staff page of a scheme: progress, labellers and their speed, agreement among labellers and with the forest's
Monte-Carlo values and an AI judge's scheme, and the consensus export (page, download and command)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from forests.intake import receive_rollout
from rollouts.labelling.agreement import LabelRatings, agreement_report
from rollouts.labelling.consensus import RULE_FIRST_ERROR
from rollouts.labelling.exports import ConsensusOptions, consensus_records
from rollouts.labelling.stats import (
    MC_SOURCE,
    comparison_candidates,
    label_rows,
    labeller_stats,
    scheme_agreement,
    scheme_comparisons,
    scheme_progress,
)
from rollouts.labelling.step_values import rollout_mc_values
from rollouts.labels import label_create
from rollouts.models import RolloutCheckout
from rollouts.queue import checkout_claim
from tests.factories import make_forest, make_rollout, make_root
from tests.rollouts.labelling.conftest import human_label as human
from tests.rollouts.labelling.conftest import make_scheme

pytestmark = pytest.mark.django_db

PROMPT = "What is 2 + 2?"


def in_forest(forest, steps, prediction):
    return receive_rollout(
        model="tiny",
        example=PROMPT,
        reasoning=steps,
        prediction=prediction,
        ground_truth=4,
        worker="w",
        forest_name=forest.name,
    )


def judge(rollout, codes):
    label_create(rollout_id=rollout.pk, prm_version="judge-v1", prm_output=codes, worker="gpt-judge")


@pytest.fixture
def labelled():
    """Three rollouts in one tree (values by hand below), three outside any forest, labelled by ann and bob (K = 2),
    a live lease of cat's, and an AI judge's labels of the three in the tree.

    The tree: root -> a -> b -> c (ends right), b -> d (ends wrong), a -> x (ends wrong). Values (share of right
    ends below): a 1/3, b 1/2, c 1, d 0, x 0.
    """
    scheme = make_scheme(labels_per_rollout=2)
    make_scheme("judge-v1", title="GPT judge")
    forest = make_forest("arith")
    make_root(forest, text=PROMPT, ground_truth=4)
    r1 = in_forest(forest, ["a", "b", "c"], 4)
    r2 = in_forest(forest, ["a", "b", "d"], 5)
    r3 = in_forest(forest, ["a", "x"], 5)
    r4, r5, r6 = make_rollout(), make_rollout(), make_rollout()
    seconds = iter([10, 20, 30, 40, 50, 60])
    human(r1, "ann", [1, 1, 1], seconds=next(seconds))
    human(r1, "bob", [1, 0, 1], seconds=12)
    human(r2, "ann", [1, 1, -1], seconds=next(seconds))
    human(r2, "bob", [1, 1, -1], seconds=24)
    human(r3, "ann", [1, -1], seconds=next(seconds))
    human(r3, "bob", [-1, -1], seconds=36)
    human(r4, "ann", [1, 1], seconds=next(seconds))
    human(r5, "ann", [1, 1], seconds=next(seconds), bad_problem=True)
    human(r5, "bob", [1, 1])
    human(r6, "ann", [1, 1], seconds=next(seconds))
    human(r6, "bob", [1, 1])
    judge(r1, [1, 1, 1])
    judge(r2, [1, 0, 0])
    judge(r3, [1, 0])
    assert checkout_claim(prm_version="human-v1", claimed_by="cat", now=timezone.now(), limit=1).ids == [r4.pk]
    return scheme, [r1, r2, r3, r4, r5, r6]


def test_progress_counts_complete_partial_in_progress_and_remaining(labelled):
    scheme, _ = labelled
    progress = scheme_progress(scheme=scheme, now=timezone.now())
    assert (progress.rollouts, progress.complete, progress.partial) == (6, 5, 1)
    assert (progress.in_progress, progress.leases, progress.labels) == (1, 1, 11)
    assert progress.remaining == 1
    later = scheme_progress(scheme=scheme, now=timezone.now() + timedelta(days=1))
    assert later.in_progress == 0


def test_labeller_counts_and_speed(labelled):
    scheme, _ = labelled
    rows = list(label_rows(prm_version=scheme.prm_version))
    stats = {entry.labeller: entry for entry in labeller_stats(scheme=scheme, now=timezone.now(), labels=rows)}
    ann, bob, cat = stats["ann"], stats["bob"], stats["cat"]
    assert (ann.labels, ann.rated_steps, ann.wrong_steps) == (6, 14, 2)
    assert ann.seconds_median == 35  # 10 … 60
    assert ann.steps_per_minute == pytest.approx(14 / (210 / 60))
    assert ann.bad_problems == 1
    assert ann.finish_reasons == {"solution": 4, "found_error": 2}
    assert (bob.labels, bob.timed_labels, bob.seconds_median) == (5, 3, 24)
    assert bob.steps_per_minute == pytest.approx(8 / (72 / 60))
    assert (cat.labels, cat.leases) == (0, 1)


def test_agreement_among_labellers_reads_the_stored_labels(labelled):
    scheme, rollouts = labelled
    r1, r2, r3, r4, r5, r6 = rollouts
    report = scheme_agreement(labels=label_rows(prm_version=scheme.prm_version))
    by_hand = [
        LabelRatings(r1.pk, "ann", [1, 1, 1], -1),
        LabelRatings(r1.pk, "bob", [1, 0, 1], -1),
        LabelRatings(r2.pk, "ann", [1, 1, -1], 2),
        LabelRatings(r2.pk, "bob", [1, 1, -1], 2),
        LabelRatings(r3.pk, "ann", [1, -1], 1),
        LabelRatings(r3.pk, "bob", [-1, -1], 0),
        LabelRatings(r4.pk, "ann", [1, 1], -1),
        LabelRatings(r5.pk, "ann", [1, 1], -1),
        LabelRatings(r5.pk, "bob", [1, 1], -1),
        LabelRatings(r6.pk, "ann", [1, 1], -1),
        LabelRatings(r6.pk, "bob", [1, 1], -1),
    ]
    assert report == agreement_report(by_hand)
    assert report.rollouts == 5
    assert (report.first_error.pairs, report.first_error.agreeing_pairs) == (5, 4)


def test_monte_carlo_values_of_each_step_follow_the_tree(labelled):
    _, rollouts = labelled
    r1, r2, r3, r4, _, _ = rollouts
    values = rollout_mc_values(steps_by_rollout={r1.pk: 3, r2.pk: 3, r3.pk: 2, r4.pk: 2})
    assert values == {
        r1.pk: [pytest.approx(1 / 3), 0.5, 1.0],
        r2.pk: [pytest.approx(1 / 3), 0.5, 0.0],
        r3.pk: [pytest.approx(1 / 3), 0.0],
    }
    assert rollout_mc_values(steps_by_rollout={r1.pk: 2}) == {}  # a path of another length is left out


def test_agreement_with_the_monte_carlo_values_and_the_judge_by_hand(labelled):
    scheme, _ = labelled
    rows = list(label_rows(prm_version=scheme.prm_version))
    mc, judged = scheme_comparisons(scheme=scheme, labels=rows, versions=["judge-v1"], mc=True)
    # 16 steps compared, 15 alike; ours right 11 / wrong 5, Monte-Carlo right 12 / wrong 4: p_e = 152 / 256.
    assert mc.source == MC_SOURCE
    assert (mc.rollouts, mc.comparisons, mc.steps.items) == (3, 6, 16)
    assert mc.steps.kappa == pytest.approx((15 / 16 - 152 / 256) / (1 - 152 / 256))
    assert (mc.first_error.pairs, mc.first_error.agreeing_pairs) == (6, 5)
    # The judge: r1 [T,T,T], r2 [T,F,F], r3 [T,F] against ann's and bob's labels.
    # 16 steps, 13 alike; ours right 11 / wrong 5, the judge right 10 / wrong 6: p_e = 140 / 256.
    assert (judged.rollouts, judged.comparisons, judged.steps.items) == (3, 6, 16)
    assert judged.steps.kappa == pytest.approx((13 / 16 - 140 / 256) / (1 - 140 / 256))
    assert (judged.first_error.pairs, judged.first_error.agreeing_pairs) == (6, 3)
    candidates = comparison_candidates(scheme=scheme)
    assert [(c.prm_version, c.rollouts, c.is_scheme) for c in candidates] == [("judge-v1", 3, True)]


def test_consensus_with_the_monte_carlo_values_keeps_agreed_prefixes_and_says_why_others_are_left_out(labelled):
    scheme, rollouts = labelled
    r1, r2, *_ = rollouts
    records, tally = consensus_records(scheme=scheme, options=ConsensusOptions(mc=True))
    assert [(r["rollout_id"], r["labels"]) for r in records] == [(r1.pk, [True] * 3), (r2.pk, [True, True, False])]
    assert records[1]["completions"] == ["a", "b", "d"]
    assert records[1]["first_error"] == 2
    assert records[1]["sources"] == ["human-v1", "mc"]
    assert records[1]["labellers"] == ["ann", "bob"]
    assert records[1]["forest"] == "arith" and records[1]["prompt"] == PROMPT
    assert records[1]["correct"] is False and records[0]["correct"] is True
    assert (tally.rollouts, tally.records, tally.steps) == (6, 2, 6)
    assert tally.skipped == {"disagree": 1, "too_few_labels": 1, "bad_problem": 1, "no_mc_values": 1}


def test_consensus_with_the_judge_by_either_rule(labelled):
    scheme, rollouts = labelled
    r1, r2, *_ = rollouts
    records, tally = consensus_records(scheme=scheme, options=ConsensusOptions(versions=("judge-v1",)))
    # r2: the judge calls step 2 wrong where the people call it right, so only step 1 is agreed.
    assert [(r["rollout_id"], r["labels"]) for r in records] == [(r1.pk, [True] * 3), (r2.pk, [True])]
    assert tally.skipped["missing_version"] == 1  # r6 has no judge label
    by_first_error, tally = consensus_records(
        scheme=scheme, options=ConsensusOptions(mc=True, versions=("judge-v1",), rule=RULE_FIRST_ERROR)
    )
    assert [r["rollout_id"] for r in by_first_error] == [r1.pk]
    assert tally.skipped["first_errors_differ"] == 2  # r2 (the judge), r3 (ann and bob)
    one_label, _ = consensus_records(scheme=scheme, options=ConsensusOptions(min_labels=1))
    assert len(one_label) == 4  # r1, r2, r4, r6 (r3 disagrees, r5 is a bad problem)


def test_the_staff_page_shows_progress_labellers_and_agreement(staff_client, labelled):
    scheme, _ = labelled
    response = staff_client.get(reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version}))
    html = response.content.decode()
    assert response.status_code == 200
    for text in ("Fleiss", "Cohen", "ann · bob", MC_SOURCE, "judge-v1", "Consensus export"):
        assert text in html, text
    only_judge = staff_client.get(
        reverse("labelling:stats", kwargs={"prm_version": scheme.prm_version}), {"compare": "judge-v1"}
    ).content.decode()
    table = only_judge.split('id="comparisons"')[1].split("</table>")[0]
    assert "judge-v1" in table and MC_SOURCE not in table


def test_the_consensus_preview_and_download(staff_client, labelled, tmp_path):
    import datasets  # deferred: datasets is heavy

    scheme, _ = labelled
    url = reverse("labelling:export", kwargs={"prm_version": scheme.prm_version})
    preview = staff_client.get(url, {"mc": "on", "rule": "steps", "format": "jsonl"})
    html = preview.content.decode()
    assert preview.status_code == 200
    assert "Records kept" in html and "download=1" in html
    download = staff_client.get(url, {"mc": "on", "rule": "steps", "format": "jsonl", "download": "1"})
    assert download.status_code == 200
    assert "human-v1-consensus.jsonl" in download["Content-Disposition"]
    path = tmp_path / "got.jsonl"
    path.write_bytes(b"".join(download.streaming_content))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row["labels"] for row in rows] == [[True, True, True], [True, True, False]]
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    assert loaded.column_names[:3] == ["prompt", "completions", "labels"]
    parquet = staff_client.get(url, {"rule": "first_error", "format": "parquet", "download": "1"})
    assert parquet["Content-Disposition"].endswith('.parquet"')
    bad = staff_client.get(url, {"rule": "majority"})
    assert bad.status_code == 400


def test_the_export_command_writes_the_consensus_set(labelled, tmp_path, capsys):
    import datasets  # deferred: datasets is heavy

    target = tmp_path / "consensus"
    call_command(
        "export_consensus", "--prm_version", "human-v1", "--output", str(target), "--format", "hf_disk", "--mc"
    )
    assert datasets.load_from_disk(str(target))["labels"] == [[True, True, True], [True, True, False]]
    out = capsys.readouterr().out
    assert "2 records (6 steps) of 6 labelled rollouts" in out and "left out: 1 (a labeller flagged" in out
    with pytest.raises(CommandError, match="No labelling scheme"):
        call_command("export_consensus", "--prm_version", "nope", "--output", str(tmp_path / "x.jsonl"))
    with pytest.raises(CommandError, match="nothing to export"):
        call_command(
            "export_consensus", "--prm_version", "human-v1", "--output", str(tmp_path / "x.jsonl"), "--versions", "v0"
        )
    assert not (tmp_path / "x.jsonl").exists()


def test_a_live_lease_counts_as_in_progress_until_it_expires(labelled):
    scheme, _ = labelled
    RolloutCheckout.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert scheme_progress(scheme=scheme, now=timezone.now()).in_progress == 0
