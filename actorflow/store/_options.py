"""Validation of the options and arguments shared by every backend."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, overload

from actorflow._durations import check_seconds
from actorflow.errors import ConfigurationError
from actorflow.store.errors import InvalidTTLError

EvictionCallback = Callable[[str, Any, str], object]
"""``on_evict(key, value, reason)``; ``reason`` is ``"capacity"``, ``"expired"`` or
``"deleted"``.  ``key`` is the full key (scope prefixes included)."""

Clock = Callable[[], float]

TTL = float | int | timedelta


def ttl_seconds(ttl: object, what: str = "ttl") -> float | None:
    """Convert a TTL (seconds or ``timedelta``) to seconds, or ``None``.

    Anything but a number or ``timedelta`` > 0 and at most ``threading.TIMEOUT_MAX`` raises
    :class:`InvalidTTLError` (an ``InvalidDurationError``), so no TTL reaches a reaper's
    wait or a Redis ``PX`` that it cannot take.
    """
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds: object = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = ttl
    else:
        raise InvalidTTLError(
            f"{what} must be a number of seconds or a timedelta, not {type(ttl).__name__}"
        )
    return check_seconds("store", what, seconds, allow_zero=False, error=InvalidTTLError)


def default_ttl_option(value: object) -> float | None:
    """Validate the ``default_ttl`` option (a bad value is an :class:`InvalidTTLError`,
    which is a ``ConfigurationError``)."""
    return ttl_seconds(value, "default_ttl")


@overload
def seconds_option(
    value: object, name: str, *, allow_none: Literal[False], allow_zero: bool = False
) -> float: ...


@overload
def seconds_option(
    value: object, name: str, *, allow_none: bool = True, allow_zero: bool = False
) -> float | None: ...


def seconds_option(
    value: object, name: str, *, allow_none: bool = True, allow_zero: bool = False
) -> float | None:
    """Validate an option given in seconds (a connection or busy timeout).

    Not a number: ``ConfigurationError``; not finite, negative, zero unless ``allow_zero``,
    or beyond ``threading.TIMEOUT_MAX``: ``InvalidDurationError`` (also a
    ``ConfigurationError``).
    """
    try:
        return check_seconds("store", name, value, allow_none=allow_none, allow_zero=allow_zero)
    except TypeError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None


def max_entries_option(value: object) -> int | None:
    """Validate the ``max_entries`` option."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"max_entries must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ConfigurationError(f"max_entries must be > 0, got {value}")
    return value


def callable_option(value: object, name: str) -> Any:
    """Validate an optional callable option such as ``on_evict`` or ``clock``."""
    if value is not None and not callable(value):
        raise ConfigurationError(f"{name} must be callable, got {value!r}")
    return value
