"""An event loop on virtual time, turned by the deterministic scheduler (internal).

Async routines of a deterministic runtime run their tasks here. The loop never runs by
itself: the scheduler turns it (one pass over the callbacks that are ready) as one of its
seeded steps, on the calling thread. Its clock is the runtime's virtual clock, and each timer
it schedules (``asyncio.sleep``, ``wait_for``...) is mirrored as a virtual timer, so waiting or
``advance`` moves virtual time to it instead of sleeping: the same seed gives the same run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from actorflow._clock import Clock

__all__ = ["VirtualLoop"]


def _wake() -> None:
    """A virtual timer's callback: time has reached a timer of the loop, which the scheduler's
    next step runs."""


class VirtualLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose time is virtual and that runs one turn at a time."""

    def __init__(self, clock: Clock, call_at: Callable[[float, Callable[[], None]], None]) -> None:
        super().__init__()
        self._virtual_clock = clock
        self._virtual_call_at = call_at

    def time(self) -> float:
        return self._virtual_clock.monotonic()

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        self._virtual_call_at(when, _wake)
        return handle

    def has_ready(self) -> bool:
        """Whether a turn would run something now (a callback, or a timer that is due)."""
        # asyncio seams: the ready queue and the timer heap of BaseEventLoop
        if self._ready:  # type: ignore[attr-defined]
            return True
        scheduled = self._scheduled  # type: ignore[attr-defined]
        return bool(scheduled) and scheduled[0].when() <= self.time()

    def turn(self) -> None:
        """Run the callbacks ready now (and the timers due), once, without waiting."""
        self.stop()  # stop() before run_forever(): one pass with a zero timeout
        self.run_forever()

    def shut(self) -> None:
        """Cancel what is left, let it end, and close the loop."""
        if self.is_closed():
            return
        pending = asyncio.all_tasks(self)
        for task in pending:
            task.cancel()
        for _ in range(100):
            if not self.has_ready():
                break
            self.turn()
        self.close()
