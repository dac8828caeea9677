"""What ``train_prm`` does from end to end: load the examples (a stepwise export or the server's labels of a labelling
scheme), check the new prm_version is free, train (:mod:`adapters.prm.training`), and upload the adapter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TextIO

from adapters.prm.errors import PRMError
from adapters.prm.examples import ExampleSet, examples_from_api, examples_from_stepwise, stepwise_dataset_read
from adapters.prm.training import TrainSettings, prm_train

logger = logging.getLogger("adapters.prm.training")  # the training's log, as before the split

CONFIDENCE_NEEDS_DATASET = (
    "--weight_by_confidence reads the completions and intervals of a stepwise export (--dataset); the labels of a "
    "labelling scheme carry none (every step would weigh 1)"
)


def examples_load(
    *,
    dataset: str | None = None,
    dataset_split: str | None = None,
    labelling_scheme_version: str | None = None,
    client: Any = None,
    neutral_weight: float = 0.0,
    weight_by_confidence: bool = False,
) -> ExampleSet:
    """Training examples from a ``stepwise`` export (``dataset``) or the server's labels of a labelling scheme; with
    ``weight_by_confidence``, the export's per-step confidences too (a labelling scheme's labels carry none)."""
    if (dataset is None) == (labelling_scheme_version is None):
        raise PRMError("pass exactly one of --dataset and --labelling_scheme_version")
    if dataset is not None:
        try:
            rows = stepwise_dataset_read(dataset, split=dataset_split, confidence=weight_by_confidence)
        except ValueError as exc:
            raise PRMError(str(exc)) from exc
        return examples_from_stepwise(rows, neutral_weight=neutral_weight, weight_by_confidence=weight_by_confidence)
    if weight_by_confidence:
        raise PRMError(CONFIDENCE_NEEDS_DATASET)
    if client is None:
        raise PRMError("--labelling_scheme_version needs the server (WEBSERVER_API_BASE, WEBSERVER_API_TOKEN)")
    return examples_from_api(client, labelling_scheme_version, neutral_weight=neutral_weight)


def train_prm_run(
    settings: TrainSettings,
    *,
    dataset: str | None = None,
    dataset_split: str | None = None,
    labelling_scheme_version: str | None = None,
    client: Any = None,
    upload: bool = True,
    worker: str = "train_prm",
    progress_file: TextIO | None = None,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """What ``train_prm`` does: load examples, train, save, zip and (unless ``upload`` is false) upload the adapter.

    The prm_version is checked to be free on the server before any training, so hours of training never end in a
    409. Answers the summary (JSON-ready): paths, sha256, the data counts, the training and held-out metrics, and the
    server's path of the upload (``server_path``, None when not uploaded).
    """
    settings.check()
    if upload:
        if client is None:
            raise PRMError("uploading needs the server (WEBSERVER_API_BASE, WEBSERVER_API_TOKEN); or pass --no_upload")
        taken = {a["prm_version"] for a in client.list_prm_adapters()}
        if settings.prm_version in taken:
            raise PRMError(
                f"prm_version {settings.prm_version!r} already has an adapter on the server; choose a new one"
            )
    example_set = examples_load(
        dataset=dataset,
        dataset_split=dataset_split,
        labelling_scheme_version=labelling_scheme_version,
        client=client,
        neutral_weight=settings.neutral_weight,
        weight_by_confidence=settings.weight_by_confidence,
    )
    source = f"dataset {dataset}" if dataset is not None else f"labelling_scheme_version {labelling_scheme_version}"
    counts = example_set.summary()
    log(f"{source}: {counts['examples']} examples, {counts['steps']} steps ({counts['trained_steps']} trained)")
    for reason, count in sorted(example_set.skipped.items()):
        log(f"skipped {count} example(s): {reason}")
    if not example_set.examples:
        raise PRMError(f"{source} holds no usable example")
    result = prm_train(settings, example_set.examples, progress_file=progress_file, log=log)
    server_path = None
    if upload:
        server_path = client.upload_prm_adapter(
            settings.prm_version, base_model=settings.base_model, worker=worker, data=result.zip_path
        )
    summary = result.summary()
    summary["data"] = {"source": source, **counts, **summary["data"]}
    summary["uploaded"] = server_path is not None
    summary["server_path"] = server_path
    return summary
