"""Hosting a cell on a pykka thread actor (internal).

pykka gives each actor a thread, a mailbox, registration and life-cycle hooks. We change three
things at its seams: the mailbox is a ``queue.SimpleQueue`` made by the worker (so several
actors can share one, and a restarted actor takes over the mailbox of the one it replaces
without losing a message), the thread is named and kept so shutdown can join it, and the
message loop hands our messages straight to the cell and reports crashes to the supervisor.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any, Protocol

import pykka
from pykka._envelope import Envelope as PykkaEnvelope

from actorflow.engine.envelope import Envelope

__all__ = ["STOP", "WAKE", "ActorHost", "Cell", "new_mailbox", "start_host"]

_thread_ids = itertools.count(1)


class Cell(Protocol):
    def started(self) -> None: ...
    def stopped(self) -> None: ...
    def handle(self, message: Any) -> None: ...


class _Wake:
    """A no-op that wakes an idle actor so it notices a restart request (internal)."""

    __slots__ = ()


WAKE = _Wake()


class _Stop:
    """Stop after the messages queued before this one (internal)."""

    __slots__ = ()


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
        self.restart_requested = False
        super().__init__()

    # pykka seam: the inbox is the worker's mailbox.
    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return self._given_mailbox

    # pykka seam: a named thread we can join.
    def _start_actor_loop(self) -> None:
        thread = threading.Thread(target=self._actor_loop, name=self.thread_name, daemon=True)
        self.thread = thread
        thread.start()

    def _actor_loop_setup(self) -> None:
        # pykka seam: a failing start is a crash the supervisor handles, like one in a message.
        try:
            self.cell.started()
        except BaseException as exc:
            self.crashed(exc, None)

    def on_stop(self) -> None:
        self.cell.stopped()

    def _actor_loop_running(self) -> None:
        # pykka seam: our own loop, so a crash (any BaseException escaping the cell) is reported
        # to the worker's supervisor instead of stopping every actor in the process, and the
        # messages still queued stay in the mailbox for the restarted actor.
        inbox = self.actor_inbox
        handle = self.cell.handle
        batch = getattr(self.cell, "batch", None)
        if self.actor_stopped.is_set():  # on_start crashed
            return
        while True:  # every way out (stop, crash, restart) returns
            message: Any = inbox.get()
            if batch is not None and type(message) is Envelope:
                # a plain routine handles this envelope and those queued after it
                try:
                    message = batch(message, inbox, self)
                except BaseException as exc:  # a crash of this actor
                    self.crashed(exc, message)
                    return
                if self.restart_requested:
                    self._hand_over()
                    return
                if message is None:
                    continue
            if message is STOP:
                self._stop()
                return
            if type(message) is PykkaEnvelope:  # pykka's own stop and proxy calls
                self._pykka_message(message)
                continue
            try:
                handle(message)
            except BaseException as exc:  # a crash of this actor
                self.crashed(exc, message)
                return
            if self.restart_requested:
                self._hand_over()
                return

    def _pykka_message(self, envelope: PykkaEnvelope[Any]) -> None:
        try:
            response = self._handle_receive(envelope.message)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            return
        if envelope.reply_to is not None:
            envelope.reply_to.set(response)

    def _hand_over(self) -> None:
        """Stop at a message boundary so a successor takes over the mailbox (a restart)."""
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        hand_over = getattr(self.cell, "hand_over", None)
        if hand_over is not None:
            hand_over(self)

    def crashed(self, exc: BaseException, message: Any) -> None:
        """Leave the loop without touching the mailbox; the cell reports to its supervisor."""
        pykka.ActorRegistry.unregister(self.actor_ref)
        self.actor_stopped.set()
        on_crash = getattr(self.cell, "crashed", None)
        if on_crash is not None:
            on_crash(self, exc, message)

    def _actor_loop_teardown(self) -> None:
        # pykka drains the inbox here; the mailbox belongs to the worker and may be handed to
        # a restarted actor, so nothing is taken out of it.
        return


def start_host(mailbox: queue.SimpleQueue[Any], cell: Cell, name: str) -> ActorHost:
    """Start an actor thread that feeds ``mailbox`` to ``cell``; returns the actor."""
    made: list[ActorHost] = []
    ActorHost.start(mailbox, cell, name, made)
    return made[0]
