"""Virtual time for deterministic runs: a clock the test advances and timers without threads."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from actorflow._clock import Clock

__all__ = ["VIRTUAL_EPOCH", "VirtualClock", "VirtualTimers"]

VIRTUAL_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: timestamps in traces are reproducible


class VirtualClock(Clock):
    """Time that moves only when the runtime advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return VIRTUAL_EPOCH + self.now


class VirtualTimers:
    """The timer service of a deterministic runtime: callbacks fire when time is advanced."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._stopped = False

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        if not self._stopped:
            heapq.heappush(self._heap, (deadline, next(self._seq), callback))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def fire_due(self) -> int:
        """Run every callback whose deadline has come (in deadline order); returns how many."""
        fired = 0
        while self._heap and self._heap[0][0] <= self._clock.now:
            _, _, callback = heapq.heappop(self._heap)
            callback()
            fired += 1
        return fired

    def stop(self) -> None:
        self._stopped = True
        self._heap.clear()
