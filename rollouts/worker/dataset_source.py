"""Dataset mode's job source: every item of a dataset split x ``num_repeats``, in requests of up to ``n`` answers.

A unit (item, request) whose rollouts are in the spool (sent or not) is done: a restarted worker skips it. With
several OS processes, process ``i`` of ``P`` takes the items whose index is ``i`` modulo ``P``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rollouts.worker.generation_job import GenerationJob, request_sizes

logger = logging.getLogger("rollouts.worker")


@dataclass(frozen=True)
class DatasetItem:
    index: int
    prompt: str
    ground_truth: int


class DatasetSource:
    """Items x repeats of one split, skipping the units a previous run on the same spool finished."""

    def __init__(
        self,
        items: Iterable[DatasetItem | Exception],
        *,
        num_repeats: int,
        n: int,
        done: set[tuple[int, int]],
        fields_of: Callable[[DatasetItem], dict[str, Any]] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.num_repeats = num_repeats
        self.n = max(1, n)
        self.done = done
        self.fields_of = fields_of
        self.shard = shard
        self.skipped_units = 0
        self.bad_items: list[str] = []
        self._jobs = self._generate(items)

    def _generate(self, items: Iterable[DatasetItem | Exception]) -> Iterator[GenerationJob]:
        index, count = self.shard
        sizes = request_sizes(self.num_repeats, self.n)
        for position, item in enumerate(items):
            if position % count != index:
                continue
            if isinstance(item, Exception):
                self.bad_items.append(f"item #{position}: {item}")
                logger.error("item #%d cannot be used: %s", position, item)
                continue
            extra = self.fields_of(item) if self.fields_of else {}
            first = 0
            for chunk, size in enumerate(sizes):
                if (item.index, chunk) in self.done:
                    self.skipped_units += 1
                else:
                    yield GenerationJob(
                        key=f"{item.index}:{chunk}",
                        prompt=item.prompt,
                        ground_truth=item.ground_truth,
                        n=size,
                        meta=[item.index, chunk],
                        extra=extra,
                        first_index=first,
                    )
                first += size

    async def next_job(self) -> GenerationJob | None:
        return next(self._jobs, None)

    def job_done(self, job: GenerationJob, ok: bool) -> None:
        pass

    async def release(self, jobs: list[GenerationJob]) -> None:
        # Nothing to give back: a unit without results in the spool is generated again by the next run.
        logger.info("%d request(s) unfinished; the next run with the same flags does them", len(jobs))


def done_units(metas: Iterable[Any]) -> set[tuple[int, int]]:
    """The (item, request) units recorded in a spool's metas."""
    units = set()
    for meta in metas:
        if isinstance(meta, list) and len(meta) == 2 and all(isinstance(x, int) for x in meta):
            units.add((meta[0], meta[1]))
    return units


def total_requests(items: int | None, num_repeats: int, n: int) -> int | None:
    return None if items is None else items * math.ceil(num_repeats / max(1, n))
