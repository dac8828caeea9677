"""Asynchronous workers: pure clients of an OpenAI-compatible server and of this project's HTTP API.

Two workers share one set of plumbing: the rollout worker (``python manage.py rollout_worker``,
:mod:`~rollouts.worker.rollout_worker`, run in one or several OS processes by :mod:`~rollouts.worker.rollout_processes`)
and the AI step labeller (``python manage.py ai_label_worker``, :mod:`~rollouts.worker.ai_labeller`, with
:mod:`~rollouts.worker.judge_prompt`, :mod:`~rollouts.worker.verdicts` and :mod:`~rollouts.worker.label_progress`).
The plumbing, for every worker that calls a model many times at once and stores results on the server:

- :mod:`~rollouts.worker.pool_worker` — ``PoolWorkerOptions`` (the options every worker's options extend) and
  ``PoolWorker``: a worker's life (spool, clients, sender, pool, drain, close), with hooks for what is specific (its
  job source, a job, how results are sent, its summary);
- :mod:`~rollouts.worker.llm` — ``LLMClient.generate(prompt=|messages=, partial=, n=, params=)``: the openai async
  client (aiohttp transport), chat or completions API, continuation of a partial answer, retries, usage and latency;
- :mod:`~rollouts.worker.retry` — what is retried (timeouts, connection errors, 429, 5xx; tenacity, exponential
  back-off with jitter, Retry-After) and what stops a run (401, 403, 404; a refusal of this project's server that
  retrying will not change);
- :mod:`~rollouts.worker.pool` — ``run_pool(source, handle, concurrency=, shutdown=, grace_s=)``: the in-flight
  loop over a ``JobSource`` (``next_job``, ``job_done``, ``release``), and ``Shutdown`` (SIGINT/SIGTERM: stop taking
  work, finish or release what is in flight);
- the job sources: :mod:`~rollouts.worker.dataset_source` (a dataset split), :mod:`~rollouts.worker.forest_source`
  (a forest's growth scheduler), both handing out :mod:`~rollouts.worker.generation_job` requests, and
  :mod:`~rollouts.worker.claim_source` (a labelling queue: rollouts leased from ``GET /rollout``);
- :mod:`~rollouts.worker.spool` — ``Spool``: durable on-disk results until the server has them;
  :mod:`~rollouts.worker.spool_sender` — ``SpoolSender``: sends them in batches, backs off while the server is away,
  keeps refused ones aside, drops skipped ones;
- :mod:`~rollouts.worker.progress` — ``Progress`` (tqdm bar, ``--log_json`` lines, the one-line summary);
- :mod:`~rollouts.worker.command_flags` — the flags, environment, options, logging and JSON summary that the worker
  commands (``rollout_worker``, ``ai_label_worker``, ``prm_label_worker``, ``train_prm``, ``export_preferences``,
  ``al_round``) share.

None of them imports Django or a model.
"""
