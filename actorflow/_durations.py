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
from typing import Any, Literal, overload

from actorflow.errors import InvalidDurationError

__all__ = ["MAX_SECONDS", "check_deadline", "check_seconds"]

MAX_SECONDS: float = threading.TIMEOUT_MAX
"""The longest wait the platform's timers support (about 292 years on Linux)."""


@overload
def check_seconds(
    where: str,
    name: str,
    value: Any,
    *,
    allow_none: Literal[False] = False,
    allow_zero: bool = True,
    error: type[Exception] = InvalidDurationError,
) -> float: ...


@overload
def check_seconds(
    where: str,
    name: str,
    value: Any,
    *,
    allow_none: bool,
    allow_zero: bool = True,
    error: type[Exception] = InvalidDurationError,
) -> float | None: ...


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
    Messages start with ``"{where}: {name}"`` (just ``name`` when ``where`` is empty).
    """
    where = f"{where}: {name}" if where else name
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{where} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where} must be a number of seconds, got {value!r}")
    lowest = ">= 0" if allow_zero else "> 0"
    if (
        value > MAX_SECONDS  # first: a huge int would overflow math.isfinite
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise error(
            f"{where} must be a finite number of seconds {lowest} and at most "
            f"{int(MAX_SECONDS)}, got {value!r}"
        )
    return float(value)


def check_deadline(where: str, deadline: Any) -> float:
    """Return ``deadline`` (a point on a monotonic clock) as a float, or raise.

    The timers call this before queueing a callback, so a deadline computed from a value that
    escaped :func:`check_seconds` fails the code that scheduled it and never reaches the timer
    thread: ``TypeError`` if it is not a number, :class:`InvalidDurationError` if it is not
    finite. A finite deadline however far away is accepted (the timers wait for it in steps
    of at most :data:`MAX_SECONDS`).
    """
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        raise TypeError(f"{where}: a timer deadline must be a number, got {deadline!r}")
    try:
        seconds = float(deadline)
    except OverflowError:  # an int beyond any float
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidDurationError(
            f"{where}: a timer deadline must be a finite number of seconds, got {deadline!r}"
        )
    return seconds
