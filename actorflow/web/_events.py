"""``/api/events``: server-sent events that carry the monitor's snapshot when it changed.

Each client's stream is an async generator on the server's event loop (no thread per client).
The snapshot is computed at most every ``interval`` seconds (4 Hz by default) and shared by all
clients of the app; a client is sent it only when it differs from the last one it got, with a
comment line now and then to keep idle connections open. A stream ends when its client goes
away, when the app is closed, or (after one last snapshot) when the runtime shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from actorflow.web._responses import json_body

__all__ = ["DEFAULT_INTERVAL", "Closing", "SharedSnapshot", "event_stream"]

DEFAULT_INTERVAL = 0.25
"""Seconds between two looks at the runtime for the event stream (at most 4 per second)."""

KEEPALIVE = 15.0
"""Seconds of silence after which a stream sends a comment line."""


class Closing:
    """Set once the app closes; streams on any event loop wait on it between two looks."""

    def __init__(self) -> None:
        self._closed = False
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Wake and end every stream (from any thread)."""
        with self._lock:
            self._closed = True
            waiters = list(self._waiters.items())
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`close`; True once closed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                return True
            event = self._waiters.get(loop)
            if event is None:
                event = self._waiters[loop] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return self._closed


class SharedSnapshot:
    """The latest snapshot and its number; made anew at most every ``interval`` seconds."""

    def __init__(self, make: Callable[[], Any], interval: float = DEFAULT_INTERVAL) -> None:
        self._make = make
        self._interval = interval
        self._at = -math.inf
        self._text = ""
        self._number = 0
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        """Seconds between two snapshots."""
        return self._interval

    def current(self) -> tuple[int, str]:
        """``(number, JSON text)``; the number grows each time the text changes."""
        with self._lock:
            now = time.monotonic()
            if now - self._at >= self._interval:
                self._at = now
                text = json_body(self._make()).decode("utf-8")
                if text != self._text:
                    self._text = text
                    self._number += 1
            return self._number, self._text


async def event_stream(
    snapshot: SharedSnapshot, closing: Closing, runtime_closed: Callable[[], bool]
) -> AsyncIterator[str]:
    """The text of one client's ``text/event-stream``: ``event: snapshot`` messages."""
    yield f"retry: {int(snapshot.interval * 4000)}\n\n"
    sent = 0
    quiet_since = time.monotonic()
    while True:
        ending = runtime_closed()
        number, text = snapshot.current()
        if number != sent:
            sent = number
            quiet_since = time.monotonic()
            yield f"event: snapshot\nid: {number}\ndata: {text}\n\n"
        elif time.monotonic() - quiet_since >= KEEPALIVE:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if ending or await closing.wait(snapshot.interval):
            return
