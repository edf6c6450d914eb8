"""Checking the durations and TTLs a user passes (internal).

Every duration actorflow accepts (job timeouts, retry delays, batch and join timeouts, fault
delays, cache and store TTLs, supervision periods) is checked here, where the user passes it,
so that a value no timer can wait for (``nan``, ``inf``, ``1e300``, a negative number) is
refused with :class:`~actorflow.errors.InvalidDurationError` naming the allowed range, instead
of reaching a timer thread that would die or spin on it.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from actorflow.errors import InvalidDurationError

__all__ = ["MAX_SECONDS", "check_seconds"]

MAX_SECONDS: float = threading.TIMEOUT_MAX
"""The longest wait the platform's timers support (about 292 years on Linux)."""


def check_seconds(
    where: str,
    name: str,
    value: Any,
    *,
    allow_none: bool = False,
    allow_zero: bool = True,
    error: type[Exception] = InvalidDurationError,
) -> float | None:
    """Return ``value`` as float seconds, or raise.

    ``TypeError`` if it is not a number (``bool`` is not one); ``error`` (by default
    :class:`InvalidDurationError`) if it is not finite, negative, zero where ``allow_zero`` is
    False, or longer than :data:`MAX_SECONDS`. ``None`` passes through when ``allow_none``.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{where}: {name} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}: {name} must be a number of seconds, got {value!r}")
    lowest = ">= 0" if allow_zero else "> 0"
    if (
        value > MAX_SECONDS  # first: a huge int would overflow math.isfinite
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise error(
            f"{where}: {name} must be a finite number of seconds {lowest} and at most "
            f"{MAX_SECONDS:.0f}, got {value!r}"
        )
    return float(value)
