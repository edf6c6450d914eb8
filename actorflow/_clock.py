"""Clocks: the real one, and the seam where a virtual clock plugs in for deterministic runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

__all__ = ["Clock", "SystemClock", "iso_timestamp"]


class Clock:
    """Time source used by the runtime for timestamps, timers and timeouts."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for deadlines)."""
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch (for timestamps shown to people)."""
        return time.time()


class SystemClock(Clock):
    """The machine's clocks."""


def iso_timestamp(epoch_seconds: float) -> str:
    """Format epoch seconds as an ISO 8601 UTC timestamp with microseconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat()
