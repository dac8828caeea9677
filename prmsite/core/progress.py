"""Progress bars of the commands: tqdm on the command's raw stderr (tqdm redraws with "\r", which Django's
line-ending OutputWrapper would break); off when stderr is not a terminal unless asked for."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm


class Bars:
    """Lazily opened bars, one per stage; ``callback(desc, unit, total)`` gives an ``update(done)`` function."""

    def __init__(self, stderr) -> None:
        self.stream = getattr(stderr, "_out", sys.stderr)
        self.bars: list[tqdm] = []

    def callback(self, desc: str, unit: str, total: int | None = None) -> Callable[..., None]:
        bar: tqdm | None = None

        def update(done: int, total_now: int | None = None) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total_now or total, unit=unit, desc=desc, file=self.stream, disable=None)
                self.bars.append(bar)
            bar.update(done - bar.n)

        return update

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        self.bars.clear()
