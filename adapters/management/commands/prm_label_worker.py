"""python manage.py prm_label_worker --prm_version V [--device cpu|cuda] [--batch_size B] [--exit_when_idle]"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from adapters.prm.errors import PRMError
from adapters.prm.inference_worker import LabelWorkerSettings, default_worker_name, prm_label_worker_run
from prmsite.core.cli import add_output_json_flag, summary_write
from prmsite.core.client import PrmsiteAPIError, PrmsiteClient


class Command(BaseCommand):
    help = (
        "The PRM inference controller: download the adapter of --prm_version (checked against its listed sha256), "
        "load it on its base model, claim unlabelled rollouts, score every step and post one reward per step. Runs "
        "until stopped (SIGINT/SIGTERM: finishes the batch in hand, releases the rest, exits 0) or, with "
        "--exit_when_idle, until a claim comes back empty. The last line of output is a JSON summary."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prm_version", required=True, help="The PRM version to label with (an uploaded one).")
        parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N.")
        parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16.")
        parser.add_argument("--batch_size", type=int, default=8, help="Rollouts per forward pass.")
        parser.add_argument(
            "--claim_size", type=int, default=None, help="Rollouts per claim (GET /rollout limit); default batch_size."
        )
        parser.add_argument(
            "--wait", type=float, default=10.0, help="Long-poll seconds of a claim; a stop takes effect within it."
        )
        parser.add_argument(
            "--base_model", default=None, help="Load this base model instead of the one the adapter was uploaded with."
        )
        parser.add_argument("--exit_when_idle", action="store_true", help="Stop when a claim comes back empty.")
        parser.add_argument("--worker", default=None, help="Worker name on the labels (default: HOST-prm).")
        parser.add_argument("--post_threads", type=int, default=4, help="Labels posted concurrently.")
        add_output_json_flag(parser)

    def handle(self, *args, **options: Any) -> None:
        settings = LabelWorkerSettings(
            prm_version=options["prm_version"],
            base_model=options["base_model"],
            device=options["device"],
            dtype=options["dtype"],
            batch_size=options["batch_size"],
            claim_size=options["claim_size"],
            wait=options["wait"],
            exit_when_idle=options["exit_when_idle"],
            worker=options["worker"] or default_worker_name(),
            post_threads=options["post_threads"],
        )
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if stop.is_set():  # a second signal: stop now, leases of unposted rollouts expire on the server
                raise KeyboardInterrupt
            stop.set()
            self.stderr.write(
                f"{signal.Signals(signum).name}: stopping after the batch in hand (again to stop at once)"
            )

        # Handlers can only be set from the main thread; code that runs the worker in a thread calls
        # adapters.prm.inference_worker.prm_label_worker_run itself, with a stop event of its own.
        in_main_thread = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
        previous = {sig: signal.signal(sig, on_signal) for sig in signals}
        try:
            with PrmsiteClient() as client:
                summary = prm_label_worker_run(
                    settings,
                    client=client,
                    client_factory=PrmsiteClient,
                    stop=stop,
                    # tqdm redraws with "\r": give it the raw stream, not Django's line-ending OutputWrapper.
                    progress_file=getattr(self.stderr, "_out", sys.stderr),
                    log=self.stderr.write,
                )
        except (PRMError, ValueError) as exc:
            raise CommandError(f"prm_label_worker: {exc}") from exc
        except PrmsiteAPIError as exc:
            raise CommandError(f"prm_label_worker: the server refused: {exc}") from exc
        except OSError as exc:  # requests' connection errors, after the client's retries
            raise CommandError(f"prm_label_worker: cannot reach the server: {exc}") from exc
        except KeyboardInterrupt as exc:
            raise CommandError(
                "prm_label_worker: stopped at once; unposted rollouts come back when their lease ends"
            ) from exc
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stderr.write(self.style.SUCCESS(summary.line()))
        summary_write(summary.as_dict(), output_json=options["output_json"], stdout=self.stdout)
