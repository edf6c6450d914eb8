"""A one-shot reply slot for request/response messages to an actor (internal).

Lighter than a Condition-based future: the waiter blocks on a lock the replier releases.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["LoopReply", "Reply"]


class Reply:
    __slots__ = ("_error", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        self._value = value
        self._lock.release()

    def set_error(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()

    def get(self, timeout: float | None = None) -> Any:
        """The value, or raise the error; ``TimeoutError`` if nothing came within ``timeout``."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError(f"no reply within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value


class LoopReply:
    """A reply slot an event loop awaits: the replier resolves ``future`` on that loop."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self._loop = loop
        self._future = future

    def set(self, value: Any) -> None:
        self._loop.call_soon_threadsafe(self._settle, value, None)

    def set_error(self, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._settle, None, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        if self._future.done():  # the waiter gave up (its timeout)
            return
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(value)
