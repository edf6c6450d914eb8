"""A one-shot reply slot for request/response messages to an actor (internal).

Lighter than a Condition-based future: the waiter blocks on a lock the replier releases.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Reply"]


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
