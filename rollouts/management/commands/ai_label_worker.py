"""``python manage.py ai_label_worker``: an LLM judge grades every step of the rollouts of a labelling scheme's queue.

    ai_label_worker --labelling_scheme_version S --model_name M [--prompt_template PATH] --num_processes N

The command only parses flags; the worker is ``rollouts.worker.ai_labeller`` (a pure client: no database).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from prmsite.core.cli import add_output_json_flag, summary_write
from rollouts.worker.ai_labeller import run
from rollouts.worker.command_flags import (
    FlagError,
    add_judge_flags,
    add_pool_flags,
    labeller_options_from_flags,
    worker_logging,
)
from rollouts.worker.pool_worker import EXIT_OK


class Command(BaseCommand):
    help = (
        "The AI step labeller: claim rollouts of a labelling scheme (active learning: those the reference PRM gets "
        "wrong first), ask an LLM judge on an OpenAI-compatible server (OPENAI_API_BASE, OPENAI_API_KEY) to grade "
        "every step 0 (not preferred), 1 (preferred) or 2 (neutral) with a short explanation, and post the grades as "
        "process reward labels of the scheme to this project's server (WEBSERVER_API_BASE, WEBSERVER_API_TOKEN)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        what = parser.add_argument_group("what to label")
        what.add_argument(
            "--labelling_scheme_version",
            required=True,
            help="The scheme's prm_version: the queue claimed, and the prm_version of the labels posted.",
        )
        what.add_argument(
            "--reference_prm_version",
            default=None,
            help="Active learning: the PRM whose disagreement with the ground truth orders the queue (default: the "
            "server's newest adapter).",
        )
        what.add_argument("--no_active_learning", action="store_true", help="Claim the oldest rollouts first instead.")
        what.add_argument("--max_labels", type=int, default=None, help="Stop after this many labels.")
        what.add_argument(
            "--exit_when_idle", action="store_true", help="Stop when a claim comes back empty with nothing in flight."
        )
        what.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="Long-poll seconds of a claim when the queue is empty (default 10); a stop takes effect within it.",
        )

        add_judge_flags(parser.add_argument_group("the judge"))

        running = parser.add_argument_group("running")
        running.add_argument(
            "--num_processes", type=int, default=16, help="Judge requests in flight at once (default 16)."
        )
        running.add_argument("--worker_name", default=None, help="Stored with every label (default: HOST-judge).")
        add_pool_flags(
            running,
            what="labels",
            tool="ai_label_worker",
            restart="a restart with the same scheme and worker name sends what is left",
        )
        add_output_json_flag(running)

    def handle(self, *args: Any, **o: Any) -> None:
        try:
            options = labeller_options_from_flags(o)
        except FlagError as exc:
            raise CommandError(str(exc)) from exc
        # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
        streams = {"out": self.stdout, "err": getattr(self.stderr, "_out", sys.stderr)}
        with worker_logging(bar=options.show_bar and not options.log_json):
            code, summary = run(options, **streams)
        summary_write(summary, output_json=o["output_json"])
        if code != EXIT_OK:
            raise CommandError(f"ai_label_worker: {summary.get('error') or 'the worker failed'}")
