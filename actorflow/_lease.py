"""A worker's keys in a state store, and the lease that says which runtime owns them (internal).

Layout, under the store's ``worker`` scope (``quote_scope_name`` keeps ``:`` and ``%`` of a
worker id out of the key, so no two ids share a key):

* ``worker:<quoted id>:<key>`` -- the worker's state, one key per state key;
* ``worker:<quoted id>`` -- its lease: ``{"owner": <runtime>, "expires_at": <epoch seconds>}``;
* ``worker:<quoted id>%applied:<n>`` -- the ids of the last :data:`STORED_CALLS` state calls
  that carried an id and changed the state, with their results: ``[<sequence number>, <call
  id>, <result>]`` in slot ``n = sequence number % STORED_CALLS``, written in the same atomic
  write as the change (``put_many_if``), and deleted with the lease when the worker stops
  (no call of its runtime can come again) and at a start without restore. A quoted id never
  holds ``%a`` (``%`` is quoted as ``%25``), so these keys are no worker's lease and no
  worker's state: they lie outside every state scope ``worker:<quoted id>:``, and loading,
  listing or snapshotting the state never sees them.

A runtime takes the lease before it touches the state (one ``put_if``: atomic against every
other runtime on the store), renews it every third of its duration, and deletes it when the
worker stops. Every write of the state is fenced by the lease: ``put_if(..., guard=<lease>,
expected=<the lease as last written>)``, so once another runtime has taken the lease over, no
write of the old owner can land. Expiry is wall-clock time, because runtimes in several
processes (and hosts: keep their clocks in sync) compare it.

A state call with an id (on Ray: every call) that changes the state writes its id with the
change, so a supervisor that restarts from the store still knows which calls it applied and
answers a call Ray retries with the first result instead of applying it again.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from loguru import logger

from actorflow.errors import WorkerLeaseHeldError, WorkerLeaseLostError, WorkerStateExistsError
from actorflow.store import ABSENT, quote_scope_name

__all__ = ["DEFAULT_LEASE_SECONDS", "STORED_CALLS", "WorkerStore", "new_owner_id"]

DEFAULT_LEASE_SECONDS = 15.0
"""How long a worker's lease lasts without renewal (``Runtime(lease_seconds=...)``)."""

STORED_CALLS = 1024
"""How many ids of applied state-changing calls a durable worker keeps in its store."""

_APPLIED = "%applied"  # suffix of the quoted id naming the scope of the stored call ids

_TAKE_ATTEMPTS = 20  # lost races with other runtimes taking the same lease at the same time


def new_owner_id() -> str:
    """A lease owner id unique to one runtime: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse(lease: Any) -> tuple[str, float]:
    """(owner, expires_at) of a stored lease; something else under the key never expires."""
    if isinstance(lease, dict):
        owner, expires_at = lease.get("owner"), lease.get("expires_at")
        if isinstance(owner, str) and isinstance(expires_at, int | float):
            return owner, float(expires_at)
    return f"<not a lease: {lease!r}>", math.inf


class WorkerStore:
    """One worker's state in a state store, written only while this runtime holds its lease.

    ``store`` is the runtime's state store, ``owner`` the runtime's owner id; ``stored_calls``
    bounds the ids of applied calls kept in the store. Thread-safe: the renewal (on a timer
    thread) and the supervisor's writes take turns on one lock.
    """

    def __init__(
        self,
        store: Any,
        worker_id: str,
        owner: str,
        lease_seconds: float,
        *,
        wall: Callable[[], float] = time.time,
        stored_calls: int = STORED_CALLS,
    ) -> None:
        self.worker_id = worker_id
        self.owner = owner
        self.lease_seconds = lease_seconds
        name = quote_scope_name(worker_id)
        self._root = store.scope("worker")
        self._state = self._root.scope(name)
        self._state_prefix = self._state.prefix[len(self._root.prefix) :]  # "<quoted id>:"
        self._applied = self._root.scope(name + _APPLIED)
        self._applied_prefix = self._applied.prefix[len(self._root.prefix) :]
        self._stored_calls = stored_calls
        self._sequence = 0  # of the next applied call written
        self._has_applied = False  # ids were written or loaded: delete them at release
        self._lease_key = name
        self._wall = wall
        self._lock = threading.Lock()
        self._held: dict[str, Any] | None = None  # the lease exactly as this runtime wrote it
        self._lost = False
        self.on_lost: Callable[[WorkerLeaseLostError], None] | None = None

    # -- the lease -----------------------------------------------------------------------
    def _new_lease(self) -> dict[str, Any]:
        return {"owner": self.owner, "expires_at": self._wall() + self.lease_seconds}

    def acquire(self, take_over: bool = False) -> None:
        """Take the lease: free, expired or this runtime's (or anyone's, with ``take_over``).

        Raises :class:`WorkerLeaseHeldError` when another runtime holds a lease that has not
        expired.
        """
        with self._lock:
            for _ in range(_TAKE_ATTEMPTS):
                current = self._root.get(self._lease_key, ABSENT)
                if current is not ABSENT:
                    owner, expires_at = _parse(current)
                    now = self._wall()
                    if owner != self.owner and expires_at > now and not take_over:
                        raise WorkerLeaseHeldError(self._held_message(owner, expires_at, now))
                mine = self._new_lease()
                if self._root.put_if(self._lease_key, mine, expected=current):
                    self._held = mine
                    self._lost = False
                    return
        raise WorkerLeaseHeldError(
            f"worker {self.worker_id!r}: other runtimes kept taking its lease at the same "
            f"time ({_TAKE_ATTEMPTS} attempts); start it again"
        )

    def _held_message(self, owner: str, expires_at: float, now: float) -> str:
        ends = (
            "it never expires (remove that key or take the worker over)"
            if expires_at == math.inf
            else f"it ends in {expires_at - now:.1f} s, at {_when(expires_at)}, unless renewed"
        )
        return (
            f"worker {self.worker_id!r} is owned by runtime {owner!r}: that runtime holds the "
            f"worker's lease in the state store ({ends}). A runtime releases the lease when "
            "it stops the worker and renews it while the worker runs. If that runtime is "
            "gone, wait for the lease to end, or start with exec(..., take_over=True) to take "
            "the worker now (a runtime that still runs it then has its state calls refused "
            "with WorkerLeaseLostError)"
        )

    def renew(self) -> bool:
        """Extend the lease by its duration; False (and the lease is lost) if it was taken."""
        with self._lock:
            if self._held is None or self._lost:
                return False
            for _ in range(2):
                renewed = self._new_lease()
                try:
                    ok = self._root.put_if(self._lease_key, renewed, expected=self._held)
                except Exception:
                    self._adopt()  # the write may have landed before the error
                    raise
                if ok:
                    self._held = renewed
                    return True
                if not self._adopt():
                    break
            self._lose()
            return False

    def _adopt(self) -> bool:
        """The stored lease is still this runtime's (a write whose reply was lost changed
        it): take it as the one held. False if another runtime has it, or nobody."""
        try:
            current = self._root.get(self._lease_key, ABSENT)
        except Exception:
            return False
        if current is not ABSENT and _parse(current)[0] == self.owner:
            self._held = current
            return True
        return False

    def _lose(self) -> None:
        """Another runtime took the lease: refuse every further write (the lock is held)."""
        if self._lost:
            return
        self._lost = True
        error = self._lost_error()
        logger.error(str(error))
        if self.on_lost is not None:
            self.on_lost(error)

    def _lost_error(self) -> WorkerLeaseLostError:
        try:
            current = self._root.get(self._lease_key, ABSENT)
        except Exception:
            current = ABSENT
        holder = (
            "nobody holds it now"
            if current is ABSENT
            else f"runtime {_parse(current)[0]!r} holds it now"
        )
        return WorkerLeaseLostError(
            f"worker {self.worker_id!r} lost its lease in the state store ({holder}): "
            "another runtime took the worker over, so this runtime no longer reads or writes "
            "its state. Stop this worker; the new owner continues from the stored state"
        )

    @property
    def lost(self) -> bool:
        """Whether another runtime took the lease from this one."""
        return self._lost

    def release(self) -> None:
        """Delete the lease if this runtime still holds it (the worker stopped), with the
        stored ids of applied calls, in one atomic write: no call of this runtime can come
        again."""
        with self._lock:
            held, self._held = self._held, None
            if held is None or self._lost:
                return
            if not self._has_applied:
                self._root.delete_if(self._lease_key, expected=held)
                return
            items = dict.fromkeys(self._applied_keys(), ABSENT)
            items[self._lease_key] = ABSENT
            self._root.put_many_if(items, guard=self._lease_key, expected=held)
            self._has_applied = False

    def keep(self, call_at: Callable[[float, Callable[[], None]], None], monotonic: Any) -> None:
        """Renew the lease every third of its duration with ``call_at(deadline, callback)``
        (a timer service's), until it is released or lost."""
        interval = self.lease_seconds / 3

        def tick() -> None:
            try:
                if not self.renew():
                    return
            except Exception as exc:  # the store failed: try again at the next turn
                logger.warning("worker {}: renewing its lease failed: {}", self.worker_id, exc)
                if self._held is None or self._lost:
                    return
            call_at(monotonic() + interval, tick)

        call_at(monotonic() + interval, tick)

    # -- the state -----------------------------------------------------------------------
    def _fenced(self, write: Callable[[dict[str, Any]], bool]) -> None:
        """Run ``write(lease)`` (a put_if/delete_if guarded by the lease) while holding it."""
        with self._lock:
            if self._lost or self._held is None:
                raise self._lost_error()
            if write(self._held):
                return
            if self._adopt() and write(self._held):
                return
            self._lose()
            raise self._lost_error()

    def put(self, key: str, value: Any, applied: tuple[str, Any] | None = None) -> None:
        """Write ``value`` under the state key ``key``, only while holding the lease; with
        ``applied`` (the call's id and result), write that too, in the same atomic step."""
        full = self._state_prefix + key
        guard = self._lease_key
        if applied is None:
            self._fenced(lambda lease: self._root.put_if(full, value, guard=guard, expected=lease))
        else:
            self._write_applied({full: value}, applied)

    def delete(self, key: str, applied: tuple[str, Any] | None = None) -> None:
        """Delete the state key ``key``, only while holding the lease (``applied`` as for
        :meth:`put`)."""
        full = self._state_prefix + key
        guard = self._lease_key
        if applied is None:
            self._fenced(lambda lease: self._root.delete_if(full, guard=guard, expected=lease))
        else:
            self._write_applied({full: ABSENT}, applied)

    def _write_applied(self, items: dict[str, Any], applied: tuple[str, Any]) -> None:
        """Write ``items`` and the applied call in one ``put_many_if`` fenced by the lease."""
        sequence = self._sequence
        op_id, result = applied
        slot = self._applied_prefix + str(sequence % self._stored_calls)
        items[slot] = [sequence, op_id, result]
        guard = self._lease_key
        self._fenced(lambda lease: self._root.put_many_if(items, guard=guard, expected=lease))
        self._sequence = sequence + 1
        self._has_applied = True

    def load_applied(self) -> list[tuple[str, Any]]:
        """The stored ids of applied calls with their results, oldest first (the next one
        written follows the newest)."""
        entries: list[tuple[int, str, Any]] = []
        for _slot, entry in self._applied.range_get(""):
            if (
                isinstance(entry, list | tuple)
                and len(entry) == 3
                and isinstance(entry[0], int)
                and isinstance(entry[1], str)
            ):
                entries.append((entry[0], entry[1], entry[2]))
        entries.sort(key=lambda entry: entry[0])
        self._sequence = entries[-1][0] + 1 if entries else 0
        self._has_applied = bool(entries)
        return [(op_id, result) for _, op_id, result in entries]

    def stored_keys(self) -> list[str]:
        """Every state key stored for the worker (never the ids of applied calls)."""
        keys: list[str] = self._state.keys()
        return keys

    def load(self) -> list[tuple[str, Any]]:
        """Every stored (key, value) of the worker, by key."""
        rows: list[tuple[str, Any]] = self._state.range_get("")
        return rows

    def refuse_or_discard(self, discard: bool) -> None:
        """A start without restore: delete the stored state (``discard``), or refuse. The
        ids of applied calls a previous run stored are not state: they are deleted either
        way, unless the start is refused."""
        keys = self.stored_keys()
        if not keys:
            self._forget_applied()
            return
        if not discard:
            shown = ", ".join(repr(key) for key in keys[:5]) + (", ..." if len(keys) > 5 else "")
            raise WorkerStateExistsError(
                f"worker {self.worker_id!r} has state in the state store ({len(keys)} "
                f"key{'s' if len(keys) != 1 else ''}: {shown}), and a start without restore "
                "would hide it. Pass exec(..., restore=True) to continue from it, or "
                "exec(..., discard_stored=True) to delete it and start empty"
            )
        for key in keys:
            self.delete(key)
        self._forget_applied()

    def _applied_keys(self) -> list[str]:
        slots: list[str] = self._applied.keys()  # a store view's keys, not a dict's
        return [self._applied_prefix + slot for slot in slots]

    def _forget_applied(self) -> None:
        """Delete the stored ids of applied calls (one atomic write), fenced by the lease."""
        self._sequence = 0
        self._has_applied = False
        keys = self._applied_keys()
        if keys:
            items = dict.fromkeys(keys, ABSENT)
            guard = self._lease_key
            self._fenced(lambda lease: self._root.put_many_if(items, guard=guard, expected=lease))
