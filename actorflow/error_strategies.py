"""Error strategies: what happens to a job when a routine's logic raises.

* ``ErrorStrategy.STOP`` (default): the job fails with the error; the worker goes on.
* ``ErrorStrategy.CONTINUE``: the error is recorded (``job.errors`` and the trace) and the job
  goes on with its other branches; it can still end ``completed``.
* ``ErrorStrategy.SKIP``: the message is dropped (recorded in ``job.errors`` and as a dead
  letter) and the job goes on.
* ``ErrorStrategy.RETRY(max_retries, delay, backoff, retry_on)``: the logic runs again with the
  same input after ``delay * backoff**(attempt-1)`` seconds (at most ``threading.TIMEOUT_MAX``),
  without blocking the routine's other messages; after the last try the job fails with the last
  error and the number of tries. Exceptions not in ``retry_on`` fail the job at once.

Emits are all-or-nothing: what a logic call emitted is delivered only if the call returns, so a
failed or retried attempt never sends anything downstream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from actorflow._durations import MAX_SECONDS, check_seconds
from actorflow.errors import ConfigurationError, InvalidDurationError

__all__ = ["ErrorStrategy", "as_error_strategy"]


@dataclass(frozen=True)
class ErrorStrategy:
    """How a routine reacts to an exception from its logic (see module docs)."""

    kind: str
    max_retries: int = 0
    delay: float = 0.0
    backoff: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    STOP: ClassVar[ErrorStrategy]
    CONTINUE: ClassVar[ErrorStrategy]
    SKIP: ClassVar[ErrorStrategy]

    @staticmethod
    def RETRY(
        max_retries: int = 3,
        delay: float = 0.1,
        backoff: float = 2.0,
        retry_on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,),
    ) -> ErrorStrategy:
        """Retry up to ``max_retries`` times, waiting ``delay * backoff**(n-1)`` before try n+1.

        ``delay`` is a finite number of seconds >= 0 and at most ``threading.TIMEOUT_MAX``;
        ``backoff`` a finite factor >= 1. Other values raise ``InvalidDurationError``
        (``TypeError`` if they are no number). The computed wait is capped at
        ``threading.TIMEOUT_MAX``, however many tries.
        """
        if isinstance(max_retries, bool) or not isinstance(max_retries, int):
            raise TypeError(f"RETRY: max_retries must be an int, got {max_retries!r}")
        if max_retries < 1:
            raise ValueError(f"RETRY: max_retries must be >= 1, got {max_retries}")
        delay = check_seconds("RETRY", "delay", delay)
        if isinstance(backoff, bool) or not isinstance(backoff, int | float):
            raise TypeError(f"RETRY: backoff must be a number, got {backoff!r}")
        if not (1 <= backoff < math.inf):  # also refuses nan
            raise InvalidDurationError(
                f"RETRY: backoff must be a finite number >= 1, got {backoff!r}"
            )
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        if not isinstance(retry_on, tuple) or not retry_on:
            raise TypeError("RETRY: retry_on must be an exception type or a tuple of them")
        for exc_type in retry_on:
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                raise TypeError(f"RETRY: retry_on holds {exc_type!r}, not an Exception subclass")
        return ErrorStrategy("retry", max_retries, float(delay), float(backoff), retry_on)

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt 1 is the first try), at most
        ``threading.TIMEOUT_MAX`` (never an overflow, however large ``attempt``)."""
        delay, backoff = self.delay, self.backoff
        if delay <= 0 or backoff == 1 or attempt <= 1:
            return float(min(delay, MAX_SECONDS))
        # compare logarithms: delay * backoff**(attempt-1) may be far beyond any float
        if math.log(delay) + (attempt - 1) * math.log(backoff) >= math.log(MAX_SECONDS):
            return MAX_SECONDS
        return float(delay * backoff ** (attempt - 1))

    def __repr__(self) -> str:
        if self.kind == "retry":
            names = ", ".join(t.__name__ for t in self.retry_on)
            return (
                f"ErrorStrategy.RETRY(max_retries={self.max_retries}, delay={self.delay}, "
                f"backoff={self.backoff}, retry_on=({names},))"
            )
        return f"ErrorStrategy.{self.kind.upper()}"


ErrorStrategy.STOP = ErrorStrategy("stop")
ErrorStrategy.CONTINUE = ErrorStrategy("continue")
ErrorStrategy.SKIP = ErrorStrategy("skip")

_BY_NAME = {
    "stop": ErrorStrategy.STOP,
    "continue": ErrorStrategy.CONTINUE,
    "skip": ErrorStrategy.SKIP,
}


def as_error_strategy(strategy: Any, **retry_options: Any) -> ErrorStrategy:
    """Accept an ``ErrorStrategy`` or one of the names stop/continue/skip/retry."""
    if isinstance(strategy, ErrorStrategy):
        if retry_options:
            raise TypeError("retry options go to ErrorStrategy.RETRY(...), not next to a strategy")
        return strategy
    if isinstance(strategy, str):
        name = strategy.lower()
        if name == "retry":
            return ErrorStrategy.RETRY(**retry_options)
        if retry_options:
            raise TypeError(f"error strategy {strategy!r} takes no options")
        if name in _BY_NAME:
            return _BY_NAME[name]
        raise ConfigurationError(
            f"unknown error strategy {strategy!r} (choose stop, continue, skip or retry)"
        )
    raise TypeError(
        f"an error strategy must be an ErrorStrategy or a name, got {type(strategy).__name__}"
    )
