"""Clocks: the real one, and the seam where a virtual clock plugs in for deterministic runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["Clock", "SystemClock", "iso_timestamp"]


class Clock:
    """Time source used by the runtime for timestamps, timers and timeouts.

    ``monotonic()`` gives seconds on a clock that never goes backwards (for deadlines) and
    ``wall()`` seconds since the epoch (for timestamps shown to people). The real clock binds
    them straight to :func:`time.monotonic` and :func:`time.time` (they are read on every job);
    a virtual clock overrides both.
    """

    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class SystemClock(Clock):
    """The machine's clocks."""


def iso_timestamp(epoch_seconds: float) -> str:
    """Format epoch seconds as an ISO 8601 UTC timestamp with microseconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()
