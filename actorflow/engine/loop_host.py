"""Hosting async routines on a worker's event loop (internal).

A worker with async routines owns one event loop thread (``actorflow-loop-<worker>``), started
when the first one needs it and stopped when the worker stops. Each async routine has one
host on that loop, whatever its concurrency: its mailbox wakes the loop when a message comes,
and the host hands messages to the routine's cell while fewer than the routine's concurrency
are in flight; the cell starts a task per message and runs the same second half as for called
logic when it ends. Everything a cell does happens on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from actorflow.engine.actor_host import STOP, WAKE
from actorflow.job import CURRENT_ACTIVATION

__all__ = ["LoopHost", "LoopMailbox", "LoopThread"]


class LoopThread:
    """An event loop on its own thread, started on first use, stopped once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop (started now if it was not); ``RuntimeError`` once stopped."""
        with self._lock:
            if self._loop is None:
                if self._stopped:
                    raise RuntimeError(f"event loop {self.name} has stopped")
                loop = asyncio.new_event_loop()
                ready = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(loop, ready), name=self.name, daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            # tasks still pending (a stop without a shutdown before it) end cancelled
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # asyncio.to_thread's
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop the loop and join its thread (nothing if it never started)."""
        with self._lock:
            self._stopped = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            loop.stop()  # stopping from a task of its own: the thread ends after this turn
            return
        with suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join()


class LoopMailbox:
    """An async routine's mailbox: a deque whose ``put`` (from any thread) wakes the loop."""

    __slots__ = ("_items", "_loop", "_loop_of", "_waking", "host")

    def __init__(self, loop_of: Callable[[], asyncio.AbstractEventLoop]) -> None:
        self._items: deque[Any] = deque()
        self._loop_of = loop_of
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waking = False
        self.host: LoopHost | None = None  # the host taking messages now (None: none yet)

    def put(self, message: Any) -> None:
        self._items.append(message)
        if not self._waking:
            self._waking = True
            try:
                loop = self._loop
                if loop is None:
                    loop = self._loop = self._loop_of()
                loop.call_soon_threadsafe(self.pump)
            except RuntimeError:  # the loop has stopped: the message stays (a dead letter)
                self._waking = False

    def get_nowait(self) -> Any:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def qsize(self) -> int:
        return len(self._items)

    def pump(self) -> None:
        """(On the loop.) Let the current host take what it can."""
        self._waking = False
        host = self.host
        if host is not None:
            host.pump()

    def wake_later(self, later: bool) -> None:
        """(On the loop.) ``later``: the host is full and pumps again when a task ends, so a
        ``put`` need not wake the loop meanwhile; else every ``put`` wakes it."""
        self._waking = later


class LoopHost:
    """The actor of one async routine: takes its messages on the loop, up to its concurrency."""

    def __init__(self, mailbox: LoopMailbox, cell: Any, name: str) -> None:
        self.mailbox = mailbox
        self.cell = cell
        self.name = name
        self.restart_requested = False
        self.actor_stopped = threading.Event()
        self.thread = None
        self._stopping = False
        self._done = threading.Event()
        self._context = contextvars.Context()
        self._context.run(CURRENT_ACTIVATION.set, cell)
        cell.crash_handler = self._task_crashed
        cell.task_done_hook = self._slot_freed
        loop = cell.core.event_loop()
        loop.call_soon_threadsafe(self._start)

    def alive(self) -> bool:
        return not self.actor_stopped.is_set()

    def join(self) -> None:
        """Wait until this host has stopped (after the messages queued before its stop, and
        its tasks), crashed or handed over."""
        self._done.wait()

    # -- on the loop ---------------------------------------------------------------------
    def _start(self) -> None:
        try:
            self._context.run(self.cell.started)
        except BaseException as exc:
            self.crash(exc, None)
            return
        self.mailbox.host = self
        self.pump()

    def pump(self) -> None:
        """Hand messages to the cell while it has room for another task."""
        cell = self.cell
        mailbox = self.mailbox
        run = self._context.run
        mailbox.wake_later(False)
        while not self._stopping and self.alive():
            if cell.occupied >= cell.limit:
                mailbox.wake_later(True)  # the next task to end pumps again
                return
            try:
                message = mailbox.get_nowait()
            except queue.Empty:
                return
            if message is STOP:  # the runtime ended every job first: their tasks end too
                self._stopping = True
                cell.cancel_tasks()
                self._slot_freed()
                return
            if message is not WAKE:
                try:
                    run(cell.handle, message)
                except BaseException as exc:  # a crash of this actor
                    self.crash(exc, message)
                    return
            if self.restart_requested:
                self._leave()
                run(cell.hand_over, self)
                return

    def _slot_freed(self) -> None:
        if self._stopping:
            if self.cell.occupied == 0 and self.alive():
                try:
                    self._context.run(self.cell.stopped)
                finally:
                    self._leave()
            return
        self.pump()

    def _task_crashed(self, exc: BaseException) -> None:
        self.crash(exc, None)

    def crash(self, exc: BaseException, message: Any) -> None:
        """Stop taking messages (they stay for the successor); the cell tells the supervisor."""
        if not self.alive():
            return
        self._leave()
        self._context.run(self.cell.crashed, self, exc, message)

    def _leave(self) -> None:
        self.actor_stopped.set()
        if self.mailbox.host is self:
            self.mailbox.host = None
        self._done.set()
