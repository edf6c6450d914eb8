"""Hosting a cell on a pykka thread actor (internal).

pykka gives each actor a thread and a mailbox. We keep its actor loop and change three things
at its documented seams: the mailbox is a ``queue.SimpleQueue`` made by the worker (so several
actors can share one, and a restarted actor takes over the mailbox of the one it replaces
without losing a message), the thread is named and kept so shutdown can join it, and our own
message types skip pykka's proxy dispatch.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Protocol

import pykka

from actorflow._envelope import Envelope

__all__ = ["STOP", "ActorHost", "Cell", "new_mailbox", "start_host"]

_thread_ids = itertools.count(1)


class Cell(Protocol):
    def started(self) -> None: ...
    def stopped(self) -> None: ...
    def handle(self, message: Any) -> None: ...


class _Stop:
    """Stop after the messages queued before this one (internal)."""

    __slots__ = ()
    reply_to = None

    @property
    def message(self) -> _Stop:
        return self


STOP = _Stop()


def new_mailbox() -> queue.SimpleQueue[Any]:
    """A mailbox: unbounded, lock-free for the producer, shareable by several actors."""
    return queue.SimpleQueue()


class ActorHost(pykka.ThreadingActor):
    """A pykka actor that feeds every message of its (given) mailbox to a cell."""

    use_daemon_thread = True

    def __init__(
        self, mailbox: queue.SimpleQueue[Any], cell: Cell, name: str, made: list[ActorHost]
    ) -> None:
        made.append(self)
        self._given_mailbox = mailbox
        self.cell = cell
        self.thread_name = f"actorflow-{name}-{next(_thread_ids)}"
        self.thread: threading.Thread | None = None
        super().__init__()

    # pykka seam: the inbox is the worker's mailbox.
    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return self._given_mailbox

    # pykka seam: a named thread we can join.
    def _start_actor_loop(self) -> None:
        thread = threading.Thread(target=self._actor_loop, name=self.thread_name, daemon=True)
        self.thread = thread
        thread.start()

    def on_start(self) -> None:
        self.cell.started()

    def on_stop(self) -> None:
        self.cell.stopped()

    def _handle_receive(self, message: Any) -> Any:
        cls = type(message)
        if cls is Envelope:
            return self.cell.handle(message)
        if message is STOP:
            self._stop()
            return None
        if cls.__module__.startswith("pykka"):  # pykka's own stop and proxy messages
            return super()._handle_receive(message)
        return self.cell.handle(message)

    def _actor_loop_teardown(self) -> None:
        # pykka drains the inbox here; the mailbox belongs to the worker and may be handed to
        # a restarted actor, so nothing is taken out of it.
        return


def start_host(mailbox: queue.SimpleQueue[Any], cell: Cell, name: str) -> ActorHost:
    """Start an actor thread that feeds ``mailbox`` to ``cell``; returns the actor."""
    made: list[ActorHost] = []
    ActorHost.start(mailbox, cell, name, made)
    return made[0]
