"""Validation of the options and arguments shared by every backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from actorflow.errors import ConfigurationError
from actorflow.store.errors import InvalidTTLError

EvictionCallback = Callable[[str, Any, str], object]
"""``on_evict(key, value, reason)``; ``reason`` is ``"capacity"``, ``"expired"`` or
``"deleted"``.  ``key`` is the full key (scope prefixes included)."""

Clock = Callable[[], float]

TTL = float | int | timedelta


def ttl_seconds(ttl: object, what: str = "ttl") -> float | None:
    """Convert a TTL (seconds or ``timedelta``) to positive finite seconds, or ``None``."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise InvalidTTLError(
            f"{what} must be a number of seconds or a timedelta, not {type(ttl).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidTTLError(f"{what} must be positive and finite, got {ttl!r}")
    return seconds


def default_ttl_option(value: object) -> float | None:
    """Validate the ``default_ttl`` option (a bad value is a ``ConfigurationError``)."""
    try:
        return ttl_seconds(value, "default_ttl")
    except InvalidTTLError as exc:
        raise ConfigurationError(str(exc)) from None


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
