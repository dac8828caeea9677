"""Asynchronous workers: pure clients of an OpenAI-compatible server and of this project's HTTP API.

The rollout worker (``python manage.py rollout_worker``) is :mod:`rollouts.worker.runner`. Its plumbing is generic,
for every worker that calls a model many times at once and stores results on the server (the AI step labeller,
``ai_label_worker``, reuses it):

- :mod:`~rollouts.worker.llm` — ``LLMClient.generate(prompt=, partial=, n=, params=)``: the openai async client
  (aiohttp transport), chat or completions API, continuation of a partial answer, retries, usage and latency;
- :mod:`~rollouts.worker.retry` — what is retried (timeouts, connection errors, 429, 5xx; tenacity, exponential
  back-off with jitter, Retry-After) and what stops a run (401, 403, 404);
- :mod:`~rollouts.worker.pool` — ``run_pool(source, handle, concurrency=, shutdown=, grace_s=)``: the in-flight
  loop over a ``JobSource`` (``next_job``, ``job_done``, ``release``), and ``Shutdown`` (SIGINT/SIGTERM: stop taking
  work, finish or release what is in flight);
- :mod:`~rollouts.worker.spool` — ``Spool`` (durable on-disk results until the server has them) and ``SpoolSender``
  (sends them in batches, backs off while the server is away, keeps refused ones aside);
- :mod:`~rollouts.worker.progress` — ``Progress`` (tqdm bar, ``--log_json`` lines, the one-line summary).

None of them imports Django.
"""
