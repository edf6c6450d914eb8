"""One timer thread per runtime (internal): runs callbacks at monotonic deadlines.

The thread sleeps on a condition until the earliest deadline or a new, earlier timer; it is
started on first use and stopped at shutdown, so an idle runtime spends no CPU here.

Nothing a callback does can stop the thread: whatever it raises (any ``BaseException``,
``SystemExit`` and ``KeyboardInterrupt`` included) is logged and counted in
:attr:`TimerService.callback_errors`, and the next timer runs. A callback runs on this daemon
thread, where ``SystemExit`` would only end the thread (never the process) and where the
interpreter never delivers a ``KeyboardInterrupt`` (signals go to the main thread), so either
can only come from a callback raising it itself; letting it end the thread would silently stop
every later job timeout, retry, batch timeout and restart of the runtime. A deadline that is
not a finite number is refused by :meth:`TimerService.call_at`, in the caller; a finite one
however far away is waited for in steps of at most ``threading.TIMEOUT_MAX``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable

from loguru import logger

from actorflow._clock import Clock
from actorflow._durations import MAX_SECONDS, check_deadline

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
        self.callback_errors = 0
        """How many callbacks raised (each logged); written by the timer thread only."""

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the timer thread once the monotonic clock reaches ``deadline``.

        Raises ``InvalidDurationError`` (``TypeError`` for a non-number) here, in the caller,
        for a deadline that is not a finite number.
        """
        deadline = check_deadline("call_at", deadline)
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
                    if not delay > 0:  # due (or a clock that returned nan: run, never spin)
                        break
                    self._cond.wait(min(delay, MAX_SECONDS))
                if self._stopped:
                    return
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except BaseException as exc:  # see the module docstring
                self.callback_errors += 1
                logger.opt(exception=exc).error(
                    "timer callback failed ({}: {}); the timers go on", type(exc).__name__, exc
                )

    def stop(self) -> None:
        """Drop pending timers and end the thread."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
