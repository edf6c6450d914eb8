"""How a worker's actors run (internal): the seam between the job path and its execution.

A dispatcher makes mailboxes, starts the actor that feeds a mailbox to a routine cell, stops a
group of actors, and carries messages to the worker's supervisor. The thread dispatcher runs
each actor on a pykka thread; the deterministic dispatcher (``actorflow.testing``) delivers
every message from one seeded scheduler; a Ray dispatcher replaces the same four steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from actorflow.engine.actor_host import STOP, ActorHost, new_mailbox, start_host
from actorflow.engine.loop_host import LoopHost, LoopMailbox

__all__ = ["Dispatcher", "Host", "Mailbox", "ThreadDispatcher"]


class Mailbox(Protocol):
    def put(self, message: Any) -> None: ...
    def get_nowait(self) -> Any: ...
    def qsize(self) -> int: ...


class Host(Protocol):
    cell: Any
    restart_requested: bool

    def alive(self) -> bool: ...


class Dispatcher(Protocol):
    inline: bool

    def mailbox(self, owner: Any, routine_id: str | None) -> Mailbox: ...
    def start(self, mailbox: Mailbox, cell: Any, name: str) -> Any: ...
    def stop_hosts(self, mailbox: Mailbox, hosts: Callable[[], list[Any]]) -> None: ...


class ThreadDispatcher:
    """Every actor on its own pykka thread (the default); an async routine's actor on its
    worker's event loop thread instead (see ``actorflow.engine.loop_host``)."""

    inline = False

    def mailbox(self, owner: Any, routine_id: str | None) -> Mailbox:
        if routine_id is not None and owner.routines[routine_id].is_async:
            return LoopMailbox(owner.event_loop)
        return new_mailbox()

    def start(self, mailbox: Mailbox, cell: Any, name: str) -> ActorHost | LoopHost:
        if isinstance(mailbox, LoopMailbox):
            return LoopHost(mailbox, cell, name)
        return start_host(mailbox, cell, name)  # type: ignore[arg-type]

    def stop_hosts(self, mailbox: Mailbox, hosts: Callable[[], list[Any]]) -> None:
        """Queue one stop per actor (after the messages already queued), then join them all,
        including successors a restart may start meanwhile."""
        for _ in hosts():
            mailbox.put(STOP)
        while True:
            alive = [
                h
                for h in hosts()
                if (h.alive() if isinstance(h, LoopHost) else h.thread and h.thread.is_alive())
            ]
            if not alive:
                return
            for host in alive:
                if isinstance(host, LoopHost):
                    host.join()
                else:
                    host.thread.join()
