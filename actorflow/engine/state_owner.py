"""The worker's supervisor: the one owner of its WorkerState (internal).

Every read and write of a worker's state is a message handled here, one at a time, so a
read-modify-write can never interleave with another. "One at a time" is the supervisor's
*turn* (a lock): its actor thread holds it for each state call it takes from the mailbox, and
a routine actor whose call finds the supervisor idle takes the turn and applies its call
itself (:meth:`call_inline`), which saves two thread hand-offs per call and changes nothing
else: the call still runs alone, on the supervisor's state, with the supervisor's code.

Values are stored encoded, so a reader always gets a fresh copy and no caller can mutate the
stored state behind its back. With a durable store, each change is written through to the store
before it is acknowledged, and only while this runtime holds the worker's lease (see
``actorflow._lease``).

A call with an id (every call on Ray; none on threads) is applied once: the supervisor
remembers the ids it applied with their results, and answers a call whose id it knows with the
first result. With a durable store, a call that changes the state writes its id and result in
the same atomic write as the change, and a supervisor that restored the state reads them back
before it applies its first call with an id (so a restore without ids, on threads, reads the
store as before), so a call retried after the supervisor's process died is not applied twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from cachetools import Cache, LRUCache, TTLCache
from loguru import logger

from actorflow._lease import WorkerStore
from actorflow._state_codec import StateCodec
from actorflow.engine.reply import Reply
from actorflow.errors import ConfigurationError, StateFunctionError, StateLimitError
from actorflow.state_limits import StateLimits

__all__ = ["BUSY", "StateCall", "SupervisorCore"]

BUSY: Any = object()
"""What :meth:`SupervisorCore.call_inline` returns when the supervisor is not idle."""


def _function_error(op: str, key: Any, exc: BaseException) -> StateFunctionError:
    """The error a state call's caller gets for a ``BaseException`` that is not an
    ``Exception`` (``exc`` becomes its cause)."""
    raised = f"raised {type(exc).__name__}: {exc}"
    if op == "modify":
        message = (
            f"the function given to modify_routine_state({key!r}) {raised} (the state is unchanged)"
        )
    else:
        message = f"the state call {op!r} on {key!r} {raised}"
    error = StateFunctionError(message)
    error.__cause__ = exc
    return error


class StateCall:
    """A request to the supervisor (internal).

    ``op_id``, when given, makes the call idempotent: a call with an id the supervisor has
    applied already (Ray retrying a call, a message handled again after a restart) gets the
    first call's result and changes nothing.
    """

    __slots__ = ("arg", "extra", "key", "op", "op_id", "reply")

    def __init__(
        self,
        op: str,
        key: Any,
        arg: Any,
        extra: Any,
        reply: Reply | None,
        op_id: str | None = None,
    ) -> None:
        self.op = op
        self.key = key
        self.arg = arg
        self.extra = extra
        self.reply = reply
        self.op_id = op_id


APPLIED_CALLS = 100_000
"""How many ids of applied calls a supervisor remembers in memory (with their results); with a
durable store, the last ``actorflow._lease.STORED_CALLS`` that changed the state are also
kept in the store."""


class SupervisorCore:
    """Owns the state of one worker and applies state calls in mailbox order."""

    def __init__(
        self,
        worker_id: str,
        limits: StateLimits | None = None,
        store: WorkerStore | None = None,
        monotonic: Callable[[], float] | None = None,
        serializer: Any = "json",
    ) -> None:
        self.worker_id = worker_id
        self.codec = codec = StateCodec(serializer)
        self._encode = codec.encode
        self._decode = codec.decode
        self._number_fits = codec.number_fits
        self.control_handler: Callable[[Any], None] | None = None  # crashes and restarts
        self.turn = threading.Lock()  # held while a state call is applied
        self._limits = limits or StateLimits()
        self._store = store  # the worker's keys in the runtime's state store, or None
        self._monotonic = monotonic
        self._blobs: dict[str, bytes] = {}
        self._total = 0
        # Keys whose value increments changed and nobody read since: the live dict, encoded
        # when it is next needed (see _increment). Only without limits or a store.
        self._unencoded: dict[str, dict[str, Any]] = {}
        self._lazy = (
            codec.trusts_numbers
            and store is None
            and self._limits.max_key_bytes is None
            and self._limits.max_total_bytes is None
        )
        self._caches: dict[str, tuple[tuple[int, float | None], Cache[str, bytes]]] = {}
        self._applied: OrderedDict[str, Any] = OrderedDict()  # op id -> result
        self._op_id: str | None = None  # of the call being applied, with a store only
        self._ids_unread = False  # restored: the store may hold ids of applied calls
        self._ops: dict[str, Callable[[Any, Any, Any], Any]] = {
            "get": self._get,
            "put": self._put,
            "delete": self._delete,
            "modify": self._modify,
            "increment": self._increment,
            "snapshot": self._snapshot,
            "cache_open": self._cache_open,
            "cache_get": self._cache_get,
            "cache_put": self._cache_put,
            "cache_delete": self._cache_delete,
            "cache_len": self._cache_len,
        }

    def open_store(
        self,
        *,
        restore: bool = False,
        discard: bool = False,
        take_over: bool = False,
        call_at: Callable[[float, Callable[[], None]], None] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> int:
        """Take the worker's lease in the store, then load its stored state (``restore``),
        delete it (``discard``) or, if there is some, refuse to start; returns how many keys
        were loaded. With ``call_at`` (a timer service's) the lease is renewed until
        :meth:`close_store`.

        Raises ``WorkerLeaseHeldError`` (another runtime owns the worker) or
        ``WorkerStateExistsError`` (state is stored and neither ``restore`` nor ``discard``
        was given); nothing is changed in the store then.
        """
        store = self._store
        if store is None:
            return 0
        store.on_lost = self._lease_lost
        store.acquire(take_over)
        try:
            if restore:
                for key, value in store.load():
                    blob = self._encode(key, value)
                    self._blobs[key] = blob
                    self._total += len(blob)
                self._ids_unread = True  # read at the first call with an id (_apply)
            else:
                store.refuse_or_discard(discard)
        except BaseException:
            store.release()
            raise
        if call_at is not None:
            store.keep(call_at, monotonic or time.monotonic)
        return len(self._blobs)

    def close_store(self) -> None:
        """Release the worker's lease (the worker stopped): another runtime may start it."""
        if self._store is not None:
            self._store.release()

    def _lease_lost(self, error: Exception) -> None:
        """Another runtime took the worker over: every state call is refused from now on."""

        def refuse(key: Any, arg: Any, extra: Any) -> Any:
            raise type(error)(str(error))

        self._ops = dict.fromkeys(self._ops, refuse)

    # -- actor hooks -------------------------------------------------------------------
    def started(self) -> None:
        """Nothing to prepare: the state lives in this object."""

    def stopped(self) -> None:
        """Nothing to release (the store belongs to the runtime's owner)."""

    def handle(self, call: Any) -> None:
        """Apply one message from the mailbox (on the supervisor's actor thread).

        Nothing a message raises leaves this method, so the supervisor's thread outlives
        every call: a state call's caller gets the error (a ``BaseException`` that is not an
        ``Exception`` as :class:`StateFunctionError`), and a failure while handling a crash
        report is logged.
        """
        if type(call) is not StateCall:  # crashes and restarts: the hosts, not the state
            if self.control_handler is not None:
                try:
                    self.control_handler(call)
                except BaseException as exc:  # the supervisor must go on
                    logger.opt(exception=exc).error(
                        "supervisor of worker {} failed to handle {}",
                        self.worker_id,
                        type(call).__name__,
                    )
            return
        with self.turn:
            reply = call.reply
            assert reply is not None  # only inline calls come without one
            try:
                result = self._apply(call)
            except Exception as exc:
                reply.set_error(exc)
            except BaseException as exc:  # e.g. ActorCrash from a modify fn
                reply.set_error(_function_error(call.op, call.key, exc))
            else:
                reply.set(result)

    def call_inline(self, call: StateCall) -> Any:
        """Apply ``call`` on the calling thread if the supervisor is idle; its result (an
        error raises), or :data:`BUSY` (nothing done) if the turn is taken.

        Errors are those :meth:`handle` would give the caller, so where a call runs never
        changes what it raises; only a ``KeyboardInterrupt`` (Ctrl-C landing on this thread)
        goes on as itself.
        """
        if not self.turn.acquire(False):
            return BUSY
        try:
            return self._apply(call)
        except (Exception, KeyboardInterrupt):
            raise
        except BaseException as exc:
            raise _function_error(call.op, call.key, exc) from exc
        finally:
            self.turn.release()

    def apply_now(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """:meth:`call_inline` for a call without an id, with no :class:`StateCall` made:
        the way every in-process WorkerState call is tried first."""
        turn = self.turn
        if not turn.acquire(False):  # positional: a keyword argument costs more than the lock
            return BUSY
        try:
            return self._ops[op](key, arg, extra)
        except (Exception, KeyboardInterrupt):
            raise
        except BaseException as exc:
            raise _function_error(op, key, exc) from exc
        finally:
            turn.release()

    def _apply(self, call: StateCall) -> Any:
        """Run one call (under the turn); a call whose id was applied gets its result."""
        op_id = call.op_id
        if op_id is None:
            return self._ops[call.op](call.key, call.arg, call.extra)
        applied = self._applied
        if op_id in applied:
            return applied[op_id]
        if self._store is None:
            result = self._ops[call.op](call.key, call.arg, call.extra)
        else:  # a change writes the id and its result with it (_store_blob, _delete)
            if self._ids_unread:
                for stored_id, stored in self._store.load_applied():
                    self._remember(stored_id, stored)
                self._ids_unread = False
                if op_id in applied:
                    return applied[op_id]
            self._op_id = op_id
            try:
                result = self._ops[call.op](call.key, call.arg, call.extra)
            finally:
                self._op_id = None
        self._remember(op_id, result)
        return result

    def _remember(self, op_id: str, result: Any) -> None:
        applied = self._applied
        applied[op_id] = result
        if len(applied) > APPLIED_CALLS:
            applied.popitem(last=False)

    # -- storing -----------------------------------------------------------------------
    def _blob(self, key: str) -> bytes | None:
        """The encoded value under ``key`` (encoding what increments left unencoded)."""
        if self._unencoded:
            value = self._unencoded.pop(key, None)
            if value is not None:
                self._keep(key, self.codec.encode_trusted(value))
        return self._blobs.get(key)

    def _encode_all(self) -> None:
        for key in list(self._unencoded):
            self._blob(key)

    def _keep(self, key: str, blob: bytes) -> None:
        old = self._blobs.get(key)
        self._total += len(blob) - (0 if old is None else len(old))
        self._blobs[key] = blob

    def _store_blob(self, key: str, blob: bytes, result: Any = None) -> None:
        """Check limits, write through to the durable store (with the call's id and
        ``result``, if it has an id), then keep the blob."""
        size = len(blob)
        limits = self._limits
        if limits.max_key_bytes is not None and size > limits.max_key_bytes:
            raise StateLimitError(
                f"worker state {key!r} would take {size} bytes; the limit per key is "
                f"{limits.max_key_bytes}"
            )
        old = self._blobs.get(key)
        total = self._total - (0 if old is None else len(old)) + size
        if limits.max_total_bytes is not None and total > limits.max_total_bytes:
            raise StateLimitError(
                f"worker state would take {total} bytes with {key!r}; the limit for the worker "
                f"is {limits.max_total_bytes}"
            )
        if self._store is not None:
            op_id = self._op_id
            applied = None if op_id is None else (op_id, result)
            self._store.put(key, self._decode(blob), applied)
        self._blobs[key] = blob
        self._total = total

    # -- operations --------------------------------------------------------------------
    def _get(self, key: Any, arg: Any, extra: Any) -> Any:
        blob = self._blob(key)
        return None if blob is None else self._decode(blob)

    def _put(self, key: Any, arg: Any, extra: Any) -> None:
        blob = self._encode(key, arg)
        self._unencoded.pop(key, None)
        self._store_blob(key, blob)

    def _delete(self, key: Any, arg: Any, extra: Any) -> bool:
        blob = self._blob(key)
        if blob is None:
            return False
        if self._store is not None:
            op_id = self._op_id
            self._store.delete(key, None if op_id is None else (op_id, True))
        del self._blobs[key]
        self._total -= len(blob)
        return True

    def _modify(self, key: Any, arg: Any, extra: Any) -> Any:
        blob = self._blob(key)
        old = None if blob is None else self._decode(blob)
        encoded = self._encode(key, arg(old))
        result = self._decode(encoded)
        self._store_blob(key, encoded, result)
        return result

    def _increment(self, key: Any, arg: Any, extra: Any) -> int | float:
        """Add to a number in a dict. Without limits or a store, and with strict JSON, the
        dict is kept decoded and encoded only when next read (``_blob``): an increment then
        decodes and encodes nothing."""
        field, by = arg, extra
        live = self._unencoded.get(key) if self._unencoded else None
        if live is not None:
            now = live.get(field, 0)
            kind = type(now)  # a decoded or incremented number is a plain int or float
            if kind is int or kind is float:
                added: int | float = now + by
                if self._number_fits(field, added):
                    live[field] = added
                    return added
            self._blob(key)  # encode it and take the checked way below
        blob = self._blobs.get(key)
        state = {} if blob is None else self._decode(blob)
        if not isinstance(state, dict):
            raise TypeError(
                f"increment needs the state under {key!r} to be a dict, "
                f"found {type(state).__name__}"
            )
        current = state.get(field, 0)
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise TypeError(
                f"increment: {key!r}[{field!r}] is a {type(current).__name__}, not a number"
            )
        value: int | float = current + by
        state[field] = value
        if self._lazy and self.codec.number_fits(field, value):
            if blob is None:  # a new key keeps its place in the order keys were first written
                self._blobs[key] = b""
            self._unencoded[key] = state
            return value
        self._store_blob(key, self.codec.encode_number_set(key, state, field), value)
        return value

    def _snapshot(self, key: Any, arg: Any, extra: Any) -> dict[str, Any]:
        visible: Callable[[str], bool] | None = arg
        self._encode_all()
        return {
            key: self._decode(blob)
            for key, blob in self._blobs.items()
            if visible is None or visible(key)
        }

    # -- bounded caches ----------------------------------------------------------------
    def _cache_open(self, key: Any, arg: Any, extra: Any) -> None:
        max_entries, ttl = arg, extra
        existing = self._caches.get(key)
        if existing is not None:
            if existing[0] != (max_entries, ttl):
                raise ConfigurationError(
                    f"cache {key!r} already exists with max_entries={existing[0][0]}, "
                    f"ttl={existing[0][1]}"
                )
            return
        cache: Cache[str, bytes]
        if ttl is None:
            cache = LRUCache[str, bytes](maxsize=max_entries)
        elif self._monotonic is not None:
            cache = TTLCache[str, bytes](maxsize=max_entries, ttl=ttl, timer=self._monotonic)
        else:
            cache = TTLCache[str, bytes](maxsize=max_entries, ttl=ttl)
        self._caches[key] = ((max_entries, ttl), cache)

    def _cache(self, name: str) -> Cache[str, bytes]:
        return self._caches[name][1]

    def _cache_get(self, key: Any, arg: Any, extra: Any) -> Any:
        blob = self._cache(key).get(arg)
        return extra if blob is None else self._decode(blob)

    def _cache_put(self, key: Any, arg: Any, extra: Any) -> None:
        self._cache(key)[arg] = self._encode(f"cache {key}[{arg!r}]", extra)

    def _cache_delete(self, key: Any, arg: Any, extra: Any) -> bool:
        return self._cache(key).pop(arg, None) is not None

    def _cache_len(self, key: Any, arg: Any, extra: Any) -> int:
        cache = self._cache(key)
        if isinstance(cache, TTLCache):
            cache.expire()
        return len(cache)
