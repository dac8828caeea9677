"""Asynchronous workers: pure clients of an OpenAI-compatible server and of this project's HTTP API.

Two workers share one set of plumbing: the rollout worker (``python manage.py rollout_worker``,
:mod:`rollouts.worker.runner`) and the AI step labeller (``python manage.py ai_label_worker``,
:mod:`rollouts.worker.labeller`, with :mod:`~rollouts.worker.judge_prompt` and :mod:`~rollouts.worker.verdicts`).
The plumbing, for every worker that calls a model many times at once and stores results on the server:

- :mod:`~rollouts.worker.base` — ``PoolWorker``: a worker's life (spool, clients, sender, pool, drain, close), with
  hooks for what is specific (its job source, a job, how results are sent, its summary);
- :mod:`~rollouts.worker.llm` — ``LLMClient.generate(prompt=|messages=, partial=, n=, params=)``: the openai async
  client (aiohttp transport), chat or completions API, continuation of a partial answer, retries, usage and latency;
- :mod:`~rollouts.worker.retry` — what is retried (timeouts, connection errors, 429, 5xx; tenacity, exponential
  back-off with jitter, Retry-After) and what stops a run (401, 403, 404);
- :mod:`~rollouts.worker.pool` — ``run_pool(source, handle, concurrency=, shutdown=, grace_s=)``: the in-flight
  loop over a ``JobSource`` (``next_job``, ``job_done``, ``release``), and ``Shutdown`` (SIGINT/SIGTERM: stop taking
  work, finish or release what is in flight);
- :mod:`~rollouts.worker.sources` — the job sources: a dataset, a forest's growth scheduler, a labelling queue
  (``ClaimSource``: rollouts leased from ``GET /rollout``);
- :mod:`~rollouts.worker.spool` — ``Spool`` (durable on-disk results until the server has them) and ``SpoolSender``
  (sends them in batches, backs off while the server is away, keeps refused ones aside, drops skipped ones);
- :mod:`~rollouts.worker.progress` — ``Progress`` (tqdm bar, ``--log_json`` lines, the one-line summary).

None of them imports Django.
"""
