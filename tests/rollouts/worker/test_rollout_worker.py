"""The rollout worker end to end, against the stub OpenAI server and a live server of this project."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter

from forests.growth.policies import TreeSnapshot
from forests.growth.selectors import tree_snapshot
from forests.models import ErrorSearch, Expansion, GrowthPlan, Node
from forests.services import forest_seed
from prmsite.core.client import PrmsiteClient
from prmsite.core.configs.loader import config_load
from prmsite.core.steps import split_steps
from rollouts.models import Rollout
from rollouts.worker.llm import SamplingParams
from rollouts.worker.rollout_worker import DatasetSpec, RolloutWorker, WorkerOptions
from tests.forests.conftest import write_jsonl
from tests.forests.test_configs import MATH_ROWS
from tests.rollouts.worker.scripted import DELIMITER, idempotency_key_of, planted_reply, seeded_forest, verdict_reply
from tests.stub_openai import StubRequest


def options(server, token, stub, tmp_path, **kwargs) -> WorkerOptions:
    values = {
        "openai_base_url": stub.base_url,
        "openai_api_key": "test",
        "webserver_url": server.url,
        "webserver_token": token,
        "model": "stub-model",
        "worker_name": "test-worker",
        "spool_dir": str(tmp_path / "spool"),
        "show_bar": False,
        "concurrency": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    values.update(kwargs)
    return WorkerOptions(**values)


def run_worker(opts: WorkerOptions) -> dict:
    return asyncio.run(RolloutWorker(opts).run())


def test_dataset_mode_posts_every_item_times_repeat_once(live_api_server, worker_token, stub, dataset, tmp_path):
    stub.reply = verdict_reply
    stub.fail_next(500, 429)  # retried
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        dataset=DatasetSpec(template_json=str(dataset)),
        num_repeats=3,
        n=2,
        sampling=SamplingParams(temperature=0.5, max_tokens=50, seed=3),
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["results"] == 18 and summary["sent"] == 18
    assert summary["retries"] == 2 and summary["requests_done"] == 12  # 6 items x 2 requests (2 + 1 answers)
    rollouts = list(Rollout.objects.all())
    assert Counter((r.attributes["dataset_item"], r.attributes["repeat"]) for r in rollouts) == Counter(
        {(i, k): 1 for i in range(6) for k in range(3)}
    )
    for r in rollouts:
        item = r.attributes["dataset_item"]
        answer = verdict_reply(StubRequest("chat", {"messages": [{"role": "user", "content": r.example}]}, 0, {}))
        assert r.example == f"Judge this. Statement #{item} holds."
        assert "".join(r.reasoning) == answer and r.reasoning == split_steps(answer, DELIMITER)
        assert r.ground_truth == item % 2 and r.prediction == int(answer[-1])
        assert r.model == "stub-model" and r.worker == "test-worker"
        assert r.attributes["finish_reason"] == "stop" and r.attributes["latency_s"] >= 0
        assert r.attributes["usage"]["total_tokens"] > 0 and idempotency_key_of(r)
        assert r.attributes["rollout_config_version"] == "test-v1"
    seeds = [req["body"]["seed"] for req in stub.requests if req["body"].get("seed") is not None]
    assert len(set(seeds)) == 12  # one per request, each different
    # Run again with the same flags: everything is done, nothing is generated or stored twice.
    again = run_worker(opts)
    assert again["results"] == 0 and again["skipped_done_requests"] == 12 and Rollout.objects.count() == 18


def test_forest_mode_repeats_then_mc_gives_every_step_its_completions(live_api_server, worker_token, stub, tmp_path):
    forest, roots = seeded_forest("mc-forest", roots=2)
    stub.reply = planted_reply
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        forest_name=forest.name,
        growth={"policy": "mc", "num_repeats": 2, "completions_per_step": 3},
        n=2,
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["unsent"] == 0 and summary["refused"] == 0
    assert not Expansion.objects.exists()
    for root in roots:
        snapshot: TreeSnapshot = tree_snapshot(root_id=root.pk)
        through = snapshot.through()
        # The two base paths (the first two rollouts): 9 of their nodes have children (the root, the shared
        # "Step 1", "Step 2", then 2 + 4 steps before each verdict); each has at least 3 rollouts through it.
        base = {node_id for r in snapshot.rollouts[:2] for node_id in snapshot.path(r.leaf_id)}
        branched = [node_id for node_id in base if snapshot.children(node_id)]
        assert len(branched) == 9
        assert all(through[node_id][0] >= 3 for node_id in branched)
    rollouts = Rollout.objects.filter(forest=forest)
    assert all(r.attributes.get("usage") for r in rollouts)
    assert set(rollouts.values_list("growth__stage", flat=True)) == {"repeats", "mc"}


def test_forest_mode_omega_finds_the_planted_first_error(live_api_server, worker_token, stub, tmp_path):
    forest, _roots = seeded_forest("omega-forest", roots=2)
    stub.reply = planted_reply
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        forest_name=forest.name,
        growth={"policy": "omega", "num_repeats": 2, "completions_per_step": 2},
        n=2,
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed"
    searches = list(ErrorSearch.objects.filter(forest=forest))
    assert len(searches) == 2 and {s.status for s in searches} == {"found"}
    for search in searches:
        node = Node.objects.get(pk=search.first_error_id)
        assert node.text == "Step 3: WRONG turn. " and node.depth == 3
    # Steps 1 and 2 are known good (the right answer shares them): only depths 3..6 are probed, 2 answers each.
    omega = Rollout.objects.filter(forest=forest, growth__stage="omega").count()
    assert 0 < omega <= 2 * 2 * 3


def test_forest_mode_repeats_only_and_the_plan_is_kept(live_api_server, worker_token, stub, tmp_path):
    forest, roots = seeded_forest("repeats-forest", roots=3)
    stub.reply = planted_reply
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        forest_name=forest.name,
        growth={"policy": "repeats", "num_repeats": 3},
    )
    assert run_worker(opts)["results"] == 9
    assert Counter(Rollout.objects.filter(forest=forest).values_list("node__tree_id", flat=True)) == {
        r.pk: 3 for r in roots
    }
    refused = run_worker(
        options(live_api_server, worker_token, stub, tmp_path, forest_name=forest.name, growth={"num_repeats": 5})
    )
    assert refused["status"] == "failed" and "409" in refused["error"]
    assert GrowthPlan.objects.get(forest=forest).options["num_repeats"] == 3


def test_two_claimers_never_get_the_same_lease(live_api_server, worker_token):
    forest, _ = seeded_forest("lease-forest", roots=40)
    with PrmsiteClient(live_api_server.url, worker_token) as api:
        api.put_growth_plan(forest.name, {"policy": "repeats", "num_repeats": 1})
    seen: list[int] = []
    lock = threading.Lock()

    def claimer():
        with PrmsiteClient(live_api_server.url, worker_token) as api:
            while True:
                got = api.claim_expansions(forest.name, limit=3)["expansions"]
                if not got:
                    return
                with lock:
                    seen.extend(e["id"] for e in got)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 40 and len(set(seen)) == 40


def test_forest_mode_continues_partial_paths_through_the_completions_api_and_the_models_chat_template(
    live_api_server, worker_token, stub, tmp_path, tokenizer_dir
):
    forest, _roots = seeded_forest("completions-forest", roots=1)
    stub.reply = lambda request: (
        " Step 9: and so. Verdict: code: 1"
        if "<|assistant|>\nStep" in request.user_prompt
        else "Step 1: a. Verdict: code: 0"
    )
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        forest_name=forest.name,
        growth={"policy": "mc", "num_repeats": 1, "completions_per_step": 2},
        api="completions",
        tokenizer=str(tokenizer_dir),
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["refused"] == 0
    prompts = [r["body"]["prompt"] for r in stub.requests]
    assert all(r["kind"] == "completions" for r in stub.requests)
    # The first answer starts a fresh assistant turn; continuations leave the turn open after the partial path.
    assert prompts[0] == "<|user|>\nQuestion #0?<|end|>\n<|assistant|>\n"
    assert "<|user|>\nQuestion #0?<|end|>\n<|assistant|>\nStep 1: a. " in prompts
    mc = sorted(r.reasoning for r in Rollout.objects.filter(forest=forest, growth__stage="mc"))
    # From the root: a fresh answer. From "Step 1: a. ": the prefix step as it was, then what the model added, split
    # on its own (its leading white space joins the step it opens).
    assert mc == [["Step 1: a. ", " Step 9: and so. ", "Verdict: code: 1"], ["Step 1: a. ", "Verdict: code: 0"]]


def math_reply(request: StubRequest) -> str:
    """Two paragraphs of reasoning and a boxed answer: right (in another form than the reference) for the first two
    problems, wrong for the third; the second choice of a request boxes nothing."""
    if request.index == 1:
        return "I am not sure.\n\nLet me stop here."
    prompt = request.user_prompt
    if "frac{1}{2} + " in prompt:
        boxed = "0.75"  # the reference is \\frac{3}{4}
    elif "polar" in prompt:
        boxed = "(3, \\frac{\\pi}{2})"  # the reference is \\left( 3, \\frac{\\pi}{2} \\right)
    else:
        boxed = "5"  # the reference is 4
    return f"First we work it out.\n\nIt comes to {boxed}.\n\nThe answer is $\\boxed{{{boxed}}}$."


def test_forest_mode_posts_the_boxed_answer_of_a_math_forest_and_the_server_grades_it(
    live_api_server, worker_token, stub, tmp_path, monkeypatch
):
    monkeypatch.delenv("MATH_DATASET", raising=False)
    data = write_jsonl(tmp_path / "math" / "test.jsonl", MATH_ROWS)
    forest = forest_seed(
        config=config_load("math", dataset_name=str(data)), dataset_split="test", forest_name_suffix="w"
    ).forest
    stub.reply = math_reply
    opts = options(
        live_api_server,
        worker_token,
        stub,
        tmp_path,
        forest_name=forest.name,
        growth={"policy": "repeats", "num_repeats": 2},
        n=2,
    )
    summary = run_worker(opts)
    assert summary["status"] == "completed" and summary["sent"] == 6 and summary["refused"] == 0
    rollouts = list(Rollout.objects.filter(forest=forest).select_related("node__tree"))
    assert len(rollouts) == 6
    by_answer = Counter((r.answer, r.correct) for r in rollouts)
    assert by_answer == {
        ("0.75", True): 1,
        ("(3, \\frac{\\pi}{2})", True): 1,
        ("5", False): 1,
        ("", False): 3,  # no \\boxed{}: posted as an empty answer, graded "no answer"
    }
    for r in rollouts:
        assert r.prediction is None and r.ground_truth is None
        assert "".join(r.reasoning) == math_reply(
            StubRequest("chat", {"messages": [{"role": "user", "content": r.example}]}, 0 if r.answer else 1, {})
        )
        assert r.example.endswith(f"Problem: {r.node.tree.serialized_item['problem']}\n\n")
    assert {r.verdict_reason for r in rollouts if not r.answer} == {"no answer"}
    assert {r.verdict_reason for r in rollouts if r.answer} == {""}
    # The leaves keep the answer and the stored verdict; their values read it.
    leaves = {r.node_id: r for r in rollouts}
    for node in Node.objects.filter(pk__in=leaves):
        assert (node.answer, node.correct) == (leaves[node.pk].answer, leaves[node.pk].correct)


def test_dataset_mode_refuses_an_answer_kind_that_needs_a_forest(live_api_server, worker_token, stub, tmp_path):
    data = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    template = tmp_path / "math_template.json"
    template.write_text(
        json.dumps(
            {
                "rollout_config_version": "m1",
                "template": "{problem}",
                "reasoning_delimiter_pattern": "\\n\\n",
                "answer_kind": "math",
                "label_field": "answer",
                "dataset_name": str(data),
            }
        )
    )
    opts = options(live_api_server, worker_token, stub, tmp_path, dataset=DatasetSpec(template_json=str(template)))
    summary = run_worker(opts)
    assert summary["status"] == "failed"
    assert "answer_kind is 'math'" in summary["error"] and "--forest_name" in summary["error"]
    assert "\n" not in summary["error"]
    assert not stub.requests and not Rollout.objects.exists()
