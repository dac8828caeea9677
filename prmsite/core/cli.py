"""The command-line plumbing every prmsite command shares: the ``--output_json`` flag, the JSON summary a command
writes (to that file, atomically, and as its last line of output), and the message of a count flag below 1."""

from __future__ import annotations

import json
from typing import IO, Any

from prmsite.core.files import json_write_atomic

OUTPUT_JSON_HELP = "Also write the JSON summary to this file."
FLAG_AT_LEAST_ONE = "--{flag} must be at least 1"  # a count flag of a command below 1


def add_output_json_flag(group: Any, *, help: str = OUTPUT_JSON_HELP) -> None:
    group.add_argument("--output_json", default=None, help=help)


def summary_write(summary: dict[str, Any], *, output_json: str | None, stdout: IO[str] | Any | None = None) -> None:
    """A command's JSON summary: to ``--output_json`` (written atomically) when given, and as the last line of
    ``stdout`` when given (``prm_label_worker``, ``train_prm``)."""
    if output_json:
        json_write_atomic(output_json, summary)
    if stdout is not None:
        stdout.write(json.dumps(summary, sort_keys=True))
