"""One timer thread per runtime (internal): runs callbacks at monotonic deadlines.

The thread sleeps on a condition until the earliest deadline or a new, earlier timer; it is
started on first use and stopped at shutdown, so an idle runtime spends no CPU here.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

from loguru import logger

from actorflow._clock import Clock

__all__ = ["TimerService"]


class TimerService:
    def __init__(self, clock: Clock, name: str = "actorflow-timers") -> None:
        self._clock = clock
        self._name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._stopped = False

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the timer thread once the monotonic clock reaches ``deadline``."""
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (deadline, next(self._seq), callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][0] == deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - self._clock.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(delay)
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # a timer must never take the thread down
                logger.exception("timer callback failed")

    def stop(self) -> None:
        """Drop pending timers and end the thread."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
