"""The deterministic dispatcher: one seeded scheduler delivers every message (internal).

No actor thread runs. Mailboxes are plain deques; :meth:`DeterministicDispatcher.step` picks the
next non-empty mailbox with a seeded RNG and hands its oldest message to the routine's cell on
the calling thread. With the same seed, the same posts and the same virtual-time advances, the
delivery order is the same, and so are the traces and the final state.
"""

from __future__ import annotations

import queue
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from actorflow._clock import Clock
from actorflow.engine.actor_host import STOP, WAKE
from actorflow.engine.envelope import Envelope
from actorflow.job import CURRENT_ACTIVATION
from actorflow.testing._virtual_loop import VirtualLoop
from actorflow.testing._virtual_time import VirtualTimers

__all__ = ["DeterministicDispatcher"]


class InlineMailbox:
    """A mailbox the scheduler reads (internal)."""

    __slots__ = ("items", "owner", "routine_id")

    def __init__(self, owner: Any, routine_id: str | None) -> None:
        self.items: deque[Any] = deque()
        self.owner = owner
        self.routine_id = routine_id

    def put(self, message: Any) -> None:
        self.items.append(message)

    def get_nowait(self) -> Any:
        try:
            return self.items.popleft()
        except IndexError:
            raise queue.Empty from None

    def qsize(self) -> int:
        return len(self.items)


class InlineHost:
    """An actor run by the scheduler: started lazily, before its first message."""

    def __init__(self, mailbox: InlineMailbox, cell: Any, name: str) -> None:
        self.mailbox = mailbox
        self.cell = cell
        self.name = name
        self.started = False
        self.stopped = False
        self.restart_requested = False
        self.actor_stopped = threading.Event()
        self.thread = None
        if cell.is_async:  # a task of its logic crashed (on a turn of the virtual loop)
            cell.crash_handler = lambda exc: self.crash(exc, None)

    def alive(self) -> bool:
        return not self.stopped

    def _activate(self, fn: Callable[[], Any]) -> Any:
        token = CURRENT_ACTIVATION.set(self.cell)
        try:
            return fn()
        finally:
            CURRENT_ACTIVATION.reset(token)

    def ensure_started(self) -> bool:
        """Run ``on_start`` once; False if it crashed (the supervisor was told)."""
        if self.started:
            return True
        self.started = True
        try:
            self._activate(self.cell.routine.on_start)
        except BaseException as exc:
            self.crash(exc, None)
            return False
        return True

    def deliver(self, message: Any) -> None:
        try:
            self._activate(lambda: self.cell.handle(message))
        except BaseException as exc:
            self.crash(exc, message)
            return
        self.restart_if_requested()

    def restart_if_requested(self) -> None:
        """A supervisor asked this healthy actor to restart: hand over to a successor."""
        if self.restart_requested and not self.stopped:
            self.stopped = True
            self.actor_stopped.set()
            self._activate(lambda: self.cell.hand_over(self))

    def crash(self, exc: BaseException, message: Any) -> None:
        self.stopped = True
        self.actor_stopped.set()
        self.cell.crashed(self, exc, message)

    def stop_now(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.actor_stopped.set()
        if self.cell.is_async:  # its tasks end first (their jobs have ended)
            self.cell.cancel_tasks()
            loop = self.cell.core.event_loop()
            while self.cell.occupied and loop.has_ready():
                loop.turn()
        if self.started:
            self._activate(self.cell.stopped)
        else:
            self.cell.cancel_queued("routine stopped")


class DeterministicDispatcher:
    """Runs every actor of a runtime from one seeded scheduler."""

    inline = True

    def __init__(self, seed: int, clock: Clock, timers: VirtualTimers) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self._mailboxes: list[InlineMailbox] = []
        self.deliveries: list[tuple[str, str, str | None, str | None]] = []
        self.record = True
        self._clock = clock
        self._timers = timers
        self._loop: VirtualLoop | None = None

    def event_loop(self) -> VirtualLoop:
        """The loop of every async routine of the runtime (made on first use)."""
        if self._loop is None:
            self._loop = VirtualLoop(self._clock, self._timers.call_at)
        return self._loop

    def close(self) -> None:
        """Close the virtual loop (at shutdown), cancelling what is left on it."""
        if self._loop is not None:
            self._loop.shut()

    def mailbox(self, owner: Any, routine_id: str | None) -> InlineMailbox:
        box = InlineMailbox(owner, routine_id)
        if routine_id is not None:
            self._mailboxes.append(box)
        return box

    def start(self, mailbox: InlineMailbox, cell: Any, name: str) -> InlineHost:
        return InlineHost(mailbox, cell, name)

    def stop_hosts(self, mailbox: Any, hosts: Callable[[], list[Any]]) -> None:
        for host in hosts():
            host.stop_now()

    # -- scheduling --------------------------------------------------------------------
    @staticmethod
    def _deliverable(box: InlineMailbox) -> bool:
        assert box.routine_id is not None
        worker, routine_id = box.owner, box.routine_id
        if _waiting_for_restart(worker, routine_id):
            return False
        # an async routine takes a message only while it has room for another task
        for host in worker.hosts.get(routine_id, ()):
            if host.alive():
                cell = host.cell
                return not cell.is_async or cell.occupied < cell.limit
        return True

    def step(self) -> bool:
        """Deliver one message; False when no mailbox has one that can be delivered now.

        A routine whose actor is waiting for its restart (a supervision backoff) keeps its
        messages until the successor starts, as its mailbox does on threads.
        """
        ready: list[Any] = [box for box in self._mailboxes if box.items and self._deliverable(box)]
        loop = self._loop
        if loop is not None and loop.has_ready():
            ready.append(loop)  # a turn of the async routines' loop is a step like a delivery
        if not ready:
            return False
        box = ready[self.rng.randrange(len(ready))] if len(ready) > 1 else ready[0]
        if box is loop:
            loop.turn()
            return True
        message = box.items.popleft()
        worker = box.owner
        routine_id = box.routine_id
        assert routine_id is not None
        if message is WAKE:  # restart the healthy actors a supervisor asked to restart
            for other in list(worker.hosts.get(routine_id, ())):
                other.restart_if_requested()
            return True
        if message is STOP:
            return True
        host = next((h for h in worker.hosts.get(routine_id, ()) if h.alive()), None)
        if host is None:
            if type(message) is Envelope:
                reason = f"worker {worker.status}"
                worker.dead_letter(message.job_id, routine_id, message.slot, reason)
            return True
        if self.record and type(message) is Envelope:
            self.deliveries.append((worker.worker_id, routine_id, message.slot, message.job_id))
        if host.ensure_started():
            host.deliver(message)
        else:
            box.items.appendleft(message)  # the successor takes it, in order
        return True


def _waiting_for_restart(worker: Any, routine_id: str) -> bool:
    """The worker runs, but none of the routine's actors is alive: a restart is pending."""
    if worker.status != "running":
        return False
    return not any(host.alive() for host in worker.hosts.get(routine_id, ()))
