"""The time Python's cyclic garbage collector takes while a benchmark measures."""

from __future__ import annotations

import gc
import time
from types import TracebackType


class CollectorTime:
    """Sum the seconds of the collector's passes between entering and leaving (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, _: dict[str, int]) -> None:
        """Note a pass's start or add its duration."""
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.seconds += now - self._started

    def __enter__(self) -> CollectorTime:
        gc.callbacks.append(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        gc.callbacks.remove(self)
