"""Virtual time for deterministic runs: a clock the test advances and timers without threads.

The virtual timers treat a failing callback as the timer thread does (see
``actorflow.engine.timers``): what it raises is logged and counted in
:attr:`VirtualTimers.callback_errors`, and the later timers still run. The one difference:
these callbacks run on the caller's own thread (inside ``advance``, ``run_until_idle`` or a
deterministic wait), where ``KeyboardInterrupt`` (Ctrl-C) and ``SystemExit`` must stop the
caller; those two propagate, and the timers queued behind the callback run at the next
``advance``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from loguru import logger

from actorflow._clock import Clock
from actorflow._durations import check_deadline

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
        self.callback_errors = 0
        """How many callbacks raised (each logged)."""

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` once virtual time reaches ``deadline`` (refused, in the caller, if
        the deadline is not a finite number)."""
        deadline = check_deadline("call_at", deadline)
        if not self._stopped:
            heapq.heappush(self._heap, (deadline, next(self._seq), callback))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def fire_due(self) -> int:
        """Run every callback whose deadline has come (in deadline order); returns how many."""
        fired = 0
        while self._heap and self._heap[0][0] <= self._clock.now:
            _, _, callback = heapq.heappop(self._heap)
            fired += 1
            try:
                callback()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # see the module docstring
                self.callback_errors += 1
                logger.opt(exception=exc).error(
                    "timer callback failed ({}: {}); the timers go on", type(exc).__name__, exc
                )
        return fired

    def stop(self) -> None:
        self._stopped = True
        self._heap.clear()
