"""The export registry: every kind name finds its module, and the registry itself loads no heavy library."""

from __future__ import annotations

import subprocess
import sys

import pytest

from forests.metrics.export.names import KINDS
from forests.metrics.export.options import KIND_UNKNOWN, ExportOptions
from forests.metrics.export.registry import export_batches, features_of, kind_module
from forests.metrics.export.source import ExportTally
from tests.forests.export_forest import memory_source
from tests.servers import PROJECT_ROOT


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_name_finds_a_module_holding_its_schema_and_its_builder(name):
    module = kind_module(name)
    assert name == module.NAME
    assert callable(module.features) and callable(module.batches)
    assert list(features_of(ExportOptions(kind=name))) == list(module.features(ExportOptions(kind=name)))


def test_an_unknown_kind_is_refused_with_the_list_of_kinds():
    with pytest.raises(ValueError) as refused:
        kind_module("dpo")
    assert str(refused.value) == KIND_UNKNOWN.format(kinds=", ".join(KINDS), kind="dpo")


@pytest.mark.parametrize(("name", "records"), [("pairs", 5), ("stepwise", 7), ("tree", 3)])
def test_export_batches_counts_the_records_it_yields(name, records):
    tally = ExportTally()
    batches = list(export_batches(memory_source(), ExportOptions(kind=name), tally))
    assert tally.records == records == sum(len(next(iter(batch.values()))) for batch in batches)


def test_the_registry_options_and_writer_load_neither_pyarrow_nor_datasets():
    """The server imports them at start (admin, labelling pages) without exporting: the kinds load on first use."""
    check = (
        "import forests.metrics.export.registry, forests.metrics.export.options, prmsite.core.dataset_files; "
        "import sys; print(sorted(m for m in ('pyarrow', 'datasets', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
