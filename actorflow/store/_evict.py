"""Delivery of ``on_evict`` callbacks and the background reaper of expired entries."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from actorflow._durations import MAX_SECONDS
from actorflow.store._options import Clock, EvictionCallback
from actorflow.store.serializers import Serializer

logger = logging.getLogger("actorflow.store")

Event = tuple[str, bytes, str]
"""``(full_key, stored_bytes, reason)`` of one removed entry."""


class EvictionNotifier:
    """Decodes removed entries and calls the user's ``on_evict`` outside the store lock."""

    def __init__(self, callback: EvictionCallback | None, serializer: Serializer) -> None:
        self.callback = callback
        self.serializer = serializer

    @property
    def active(self) -> bool:
        """Whether anyone listens (backends skip collecting values otherwise)."""
        return self.callback is not None

    def fire(self, events: list[Event]) -> None:
        """Call the callback once per event; a failing callback is logged, not raised."""
        callback = self.callback
        if callback is None:
            return
        for key, data, reason in events:
            try:
                value = self.serializer.loads(data)
            except Exception:
                logger.exception("on_evict: could not decode the value of %r", key)
                continue
            try:
                callback(key, value, reason)
            except Exception:
                logger.exception("on_evict callback failed for %r (%s)", key, reason)


class Reaper:
    """A daemon thread that reclaims expired entries when the next one is due.

    It sleeps on ``condition`` (whose lock is the store lock) until the earliest
    expiry reported by ``next_expiry`` -- or indefinitely when nothing expires --
    and is woken early by :meth:`schedule` when an earlier expiry appears, and by
    :meth:`stop`.  It never polls on a fixed period.

    Nothing stops it but :meth:`stop`: whatever an iteration raises (a backend error,
    an ``on_evict`` callback raising any ``BaseException``) is logged, counted in
    :attr:`errors` and followed by a pause of :attr:`ERROR_PAUSE` seconds.
    ``SystemExit`` and ``KeyboardInterrupt`` included: on this daemon thread they could
    only come from a callback, and would only end the thread, never the process.  An
    expiry however far away is waited for in steps of at most ``threading.TIMEOUT_MAX``.
    """

    MIN_WAIT = 0.005
    ERROR_PAUSE = 1.0

    def __init__(
        self,
        name: str,
        condition: threading.Condition,
        clock: Clock,
        next_expiry: Callable[[], float | None],
        reap: Callable[[], None],
    ) -> None:
        self._name = name
        self._condition = condition
        self._clock = clock
        self._next_expiry = next_expiry
        self._reap = reap
        self._due: float | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.errors = 0
        """How many times an iteration failed (each logged); written by the reaper only."""

    def schedule(self, expires_at: float) -> None:
        """Note a new expiry time; call with the store lock held."""
        if self._stopping:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        elif self._due is None or expires_at < self._due:
            self._condition.notify_all()

    def stop(self) -> None:
        """Stop the thread and wait for it to end.

        It is not waited for when called from the reaper itself (an ``on_evict``
        callback closing the store) or by a thread holding the store lock (the
        reaper may be waiting for that lock; it ends as soon as it gets it).
        """
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        held = getattr(self._condition, "_is_owned", lambda: False)()
        if not held:
            thread.join()

    @property
    def thread(self) -> threading.Thread | None:
        """The reaper thread, once started."""
        return self._thread

    def _run(self) -> None:
        while True:
            try:
                with self._condition:
                    if self._stopping:
                        return
                    due = self._next_expiry()
                    self._due = due
                    if due is None:
                        self._condition.wait()
                        continue
                    delay = due - self._clock()
                    if delay > 0:
                        self._condition.wait(min(max(delay, self.MIN_WAIT), MAX_SECONDS))
                        continue
                    if math.isnan(delay):  # a clock or an expiry that is no number
                        raise ValueError(f"cannot wait for the expiry {due!r}: {delay!r} s away")
                self._reap()
            except BaseException:  # see the class docstring
                self.errors += 1
                logger.exception("reclaiming expired store entries failed; the reaper goes on")
                with self._condition:
                    if not self._stopping:
                        self._condition.wait(self.ERROR_PAUSE)
