"""The synchronous store API: :class:`Store`, its read-only view, and the backend contract.

A :class:`Store` is a *view* on a :class:`Backend`: it owns the key rules, scope
prefixes, TTL defaults and (de)serialization, while the backend only stores bytes
under full keys.  ``store.scope("user")`` and ``store.reader()`` are further views
on the same backend, so they share its data and its lock.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, NoReturn

from actorflow.store._evict import EvictionNotifier
from actorflow.store._keys import (
    SCOPE_SEPARATOR,
    check_bound,
    check_key,
    check_limit,
    check_scope_name,
    key_range,
    prefix_end,
)
from actorflow.store._options import (
    TTL,
    EvictionCallback,
    callable_option,
    default_ttl_option,
    ttl_seconds,
)
from actorflow.store.errors import DecodeError, ReadOnlyStoreError, StoreClosedError
from actorflow.store.serializers import Serializer, encode_value, get_serializer

__all__ = [
    "ABSENT",
    "WRITE_VERBS",
    "Backend",
    "ReadOnlyStore",
    "Store",
    "StoreReader",
    "conditional_write",
    "conditional_writes",
]

WRITE_VERBS = frozenset({"put", "delete", "update", "put_if", "delete_if", "put_many_if"})
"""The verbs a read-only view does not have."""


class _Absent:
    """The type of :data:`ABSENT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"  # unpickles as the module's singleton


ABSENT: Any = _Absent()
"""``expected=ABSENT`` in :meth:`Store.put_if` / :meth:`Store.delete_if` /
:meth:`Store.put_many_if`: the guard key holds no live value (it was never written, was
deleted or expired). As a value in :meth:`Store.put_many_if`: the key is deleted."""


class Backend(ABC):
    """Stores bytes under full keys.  Subclass this to add a backend.

    Every method is called with validated full keys; ``ttl`` is already resolved
    to seconds (``None`` = never expires).  Implementations must be thread-safe and
    must never return an expired entry.
    """

    name: ClassVar[str] = "backend"

    def __init__(
        self,
        *,
        serializer: str | Serializer = "json",
        default_ttl: TTL | None = None,
        on_evict: EvictionCallback | None = None,
    ) -> None:
        self.serializer = get_serializer(serializer)
        self.default_ttl = default_ttl_option(default_ttl)
        self.lock = threading.RLock()
        self.closed = False
        self.evictions = EvictionNotifier(callable_option(on_evict, "on_evict"), self.serializer)

    @abstractmethod
    def put(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` under ``key``."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or ``None``."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live entry."""

    @abstractmethod
    def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        """Entries with ``low <= key < high`` (``high=None``: unbounded), by key."""

    @abstractmethod
    def keys(self, low: str, high: str | None) -> list[str]:
        """Keys with ``low <= key < high``, sorted."""

    @abstractmethod
    def update(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        """Atomically replace the bytes under ``key`` with ``fn(old_or_None)``."""

    def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        """Atomically: if the live bytes under ``guard`` equal ``expected`` (``None``: no live
        entry), store ``data`` under ``key`` (``None``: delete ``key``) and return True; else
        change nothing and return False.

        Atomic against every other writer of the backend, in this process and in others.
        A backend that cannot offer this keeps this default, which refuses.
        """
        raise NotImplementedError(
            f"the {self.name!r} backend has no conditional write (write_if), which "
            "put_if, delete_if and durable workers need"
        )

    def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        """Atomically: if the live bytes under ``guard`` equal ``expected`` (``None``: no live
        entry), apply every ``(key, data)`` of ``writes`` in order (``data`` ``None``: delete
        ``key``; ``ttl`` for every stored entry) and return True; else change nothing and
        return False.

        All writes happen or none, atomic against every other writer of the backend, in
        this process and in others. The default handles one write with :meth:`write_if`
        and refuses more.
        """
        if len(writes) == 1:
            key, data = writes[0]
            return self.write_if(guard, expected, key, data, ttl)
        raise NotImplementedError(
            f"the {self.name!r} backend has no atomic multi-key write (write_many_if), "
            "which put_many_if and durable workers on Ray need"
        )

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Backend statistics (see :meth:`StoreReader.get_stats`)."""

    @abstractmethod
    def close(self) -> None:
        """Release resources; further calls are not allowed."""


def conditional_write(
    serializer: Serializer, key: str, value: Any, put: bool, guard: str, expected: Any
) -> tuple[bytes | None, bytes | None]:
    """The bytes to write (``None``: delete) and to expect under ``guard`` (``None``: no live
    value) for ``put_if``/``delete_if`` (shared by the sync and async stores)."""
    if put and value is ABSENT:
        raise TypeError(f"put_if({key!r}, ABSENT): ABSENT is not a value; use delete_if")
    data = encode_value(serializer, value, key=key) if put else None
    want = None if expected is ABSENT else encode_value(serializer, expected, key=guard)
    return data, want


def conditional_writes(
    serializer: Serializer,
    full: Callable[[object], str],
    items: Mapping[str, Any],
    guard: str,
    expected: Any,
) -> tuple[list[tuple[str, bytes | None]], bytes | None]:
    """The ``(full key, bytes or None: delete)`` pairs and the bytes to expect under
    ``guard`` for ``put_many_if`` (shared by the sync and async stores). Every key is
    checked and every value encoded before anything is written."""
    if not isinstance(items, Mapping):
        raise TypeError(
            f"put_many_if takes a mapping of keys to values, not {type(items).__name__}"
        )
    writes: list[tuple[str, bytes | None]] = []
    for key, value in items.items():
        full_key = full(key)
        data = None if value is ABSENT else encode_value(serializer, value, key=full_key)
        writes.append((full_key, data))
    want = None if expected is ABSENT else encode_value(serializer, expected, key=guard)
    return writes, want


class StoreReader:
    """The read verbs shared by :class:`Store` and :class:`ReadOnlyStore`."""

    __slots__ = ("_backend", "_closed", "_owner", "_prefix")

    def __init__(self, backend: Backend, *, prefix: str = "", owner: bool = True) -> None:
        """Wrap ``backend``; an ``owner`` view closes the backend when it is closed."""
        self._backend = backend
        self._prefix = prefix
        self._owner = owner
        self._closed = False

    @classmethod
    def _view(cls, backend: Backend, prefix: str) -> Any:
        view = cls.__new__(cls)
        StoreReader.__init__(view, backend, prefix=prefix, owner=False)
        return view

    # ---------------------------------------------------------------- properties

    @property
    def prefix(self) -> str:
        """The full-key prefix of this view (``""`` at the root, ``"user:"`` in a scope)."""
        return self._prefix

    @property
    def lock(self) -> threading.RLock:
        """The re-entrant lock every operation of this store takes (shared by all views).

        Hold it to make several calls atomic with respect to other threads using
        this store object.  It does not lock out other processes.
        """
        return self._backend.lock

    @property
    def serializer(self) -> Serializer:
        """The serializer values go through."""
        return self._backend.serializer

    @property
    def backend_name(self) -> str:
        """``"memory"``, ``"sqlite"`` or ``"redis"``."""
        return self._backend.name

    @property
    def closed(self) -> bool:
        """Whether this view (or the store it belongs to) is closed."""
        return self._closed or self._backend.closed

    # ----------------------------------------------------------------- helpers

    def _live(self) -> Backend:
        if self._closed or self._backend.closed:
            raise StoreClosedError(f"{self!r} is closed")
        return self._backend

    def open_backend(self) -> Backend:
        """The backend this store works on (``StoreClosedError`` if the store is closed): for
        an adapter that shares it, such as ``AsyncStore.from_store``."""
        return self._live()

    def _full(self, key: object) -> str:
        return self._prefix + check_key(key)

    def _decode(self, key: str, data: bytes) -> Any:
        try:
            return self._backend.serializer.loads(data)
        except Exception as exc:
            raise DecodeError(
                f"the value stored under {key!r} cannot be decoded by the "
                f"{self._backend.serializer.name!r} serializer: {exc}"
            ) from exc

    def _strip(self, key: str) -> str:
        return key[len(self._prefix) :]

    # ------------------------------------------------------------------- reads

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` if there is none (or it expired)."""
        full = self._full(key)
        data = self._live().get(full)
        return default if data is None else self._decode(full, data)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value that has not expired."""
        return self._live().exists(self._full(key))

    def range_get(
        self, start: str, end: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """``(key, value)`` pairs ordered by key, with ``start <= key < end``.

        ``end`` is **exclusive**.  ``end=None`` selects every key that starts with
        ``start``.  At most ``limit`` pairs are returned.  Keys are compared by
        code point and returned without this view's scope prefix.
        """
        check_bound(start, "range start")
        if end is not None:
            check_bound(end, "range end")
        limit = check_limit(limit)
        backend = self._live()
        bounds = key_range(self._prefix, start, end)
        if bounds is None or limit == 0:
            return []
        rows = backend.range(bounds[0], bounds[1], limit)
        return [(self._strip(key), self._decode(key, data)) for key, data in rows]

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (without this view's scope prefix)."""
        check_bound(prefix, "key prefix")
        low = self._prefix + prefix
        return [self._strip(key) for key in self._live().keys(low, prefix_end(low))]

    def get_stats(self) -> dict[str, Any]:
        """Statistics of the whole store (not only this scope).

        Every backend reports ``backend``, ``serializer``, ``entries``, ``hits``,
        ``misses``, ``puts``, ``deletes``, ``evicted_capacity``, ``evicted_expired``,
        ``max_entries`` and ``default_ttl``; ``prefix`` is this view's prefix.
        Counters count operations made through this store object since it opened.
        """
        stats = self._live().stats()
        stats["prefix"] = self._prefix
        return stats

    # ------------------------------------------------------------------- views

    def _scope_prefix(self, name: str) -> str:
        return self._prefix + check_scope_name(name) + SCOPE_SEPARATOR

    def scope(self, name: str) -> StoreReader:
        """A view whose keys are prefixed with ``name:`` (see :meth:`Store.scope`)."""
        return ReadOnlyStore._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]

    def reader(self) -> ReadOnlyStore:
        """A read-only view of this store or scope: it has no write methods at all."""
        return ReadOnlyStore._view(self._live(), self._prefix)  # type: ignore[no-any-return]

    # --------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the store.

        Closing the store returned by a constructor or factory releases the backend
        (connections, files, the reaper thread) and closes every view on it.  Closing
        a scope or read-only view only detaches that view.  Closing twice is harmless.
        """
        if self._owner and not self._backend.closed:
            self._backend.close()
        self._closed = True

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return (
            f"<{type(self).__name__} backend={self._backend.name!r} prefix={self._prefix!r}{state}>"
        )


class Store(StoreReader):
    """A key-value store: the read verbs plus ``put``, ``delete`` and ``update``.

    Create one with :func:`actorflow.store.create_store` or a backend class such
    as :class:`~actorflow.store.MemoryStore`.  Keys are non-empty ``str``; values
    are anything the store's serializer accepts and are copied in and out (the
    store never holds a reference to the caller's objects).
    """

    __slots__ = ()

    def _ttl(self, ttl: TTL | None) -> float | None:
        seconds = ttl_seconds(ttl)
        return self._backend.default_ttl if seconds is None else seconds

    def put(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key``.

        ``ttl`` (seconds or ``timedelta``) overrides the store's ``default_ttl``;
        an unencodable value raises ``UnencodableValueError`` (a
        ``SerializationError``) and nothing is written.
        """
        full = self._full(key)
        seconds = self._ttl(ttl)
        backend = self._live()
        backend.put(full, encode_value(backend.serializer, value, key=full), seconds)

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it held a live value."""
        return self._live().delete(self._full(key))

    def update(self, key: str, fn: Callable[[Any], Any], ttl: TTL | None = None) -> Any:
        """Atomically replace the value under ``key`` with ``fn(old)`` and return it.

        ``old`` is ``None`` when the key is missing.  No other write to the key can
        happen between the read and the write.  ``fn`` must be a plain function
        without side effects that does not use the store itself: the redis
        backend may call it more than once when another client changes the key
        concurrently, and the sqlite backend runs it inside a write transaction.
        If ``fn`` raises, or its result cannot be encoded, nothing is written.
        The new value gets ``ttl`` (or the ``default_ttl``), as with :meth:`put`.
        """
        full = self._full(key)
        seconds = self._ttl(ttl)
        backend = self._live()
        result: list[Any] = []

        def step(old: bytes | None) -> bytes:
            new = fn(None if old is None else self._decode(full, old))
            result[:] = [new]
            return encode_value(backend.serializer, new, key=full)

        backend.update(full, step, seconds)
        return result[0]

    def _write_if(
        self, key: str, value: Any, expected: Any, guard: str | None, ttl: TTL | None, put: bool
    ) -> bool:
        full = self._full(key)
        guard_full = full if guard is None else self._full(guard)
        seconds = self._ttl(ttl) if put else None
        backend = self._live()
        data, want = conditional_write(backend.serializer, full, value, put, guard_full, expected)
        return backend.write_if(guard_full, want, full, data, seconds)

    def put_if(
        self,
        key: str,
        value: Any,
        *,
        expected: Any = ABSENT,
        guard: str | None = None,
        ttl: TTL | None = None,
    ) -> bool:
        """Store ``value`` under ``key`` only if ``guard`` holds ``expected``; whether it did.

        ``guard`` is a key of this view, by default ``key`` itself; ``expected`` is the
        value it must hold, compared by its encoding (the bytes the store's serializer
        makes of it), or :data:`ABSENT` (the default: no live value). The test and the
        write are one atomic step against every other writer of the store, in this
        process or another (a lock in memory, a transaction in SQLite, a Lua script in
        Redis). With the default guard it is a compare-and-set, or a put-if-absent; with
        another key, a write fenced by it, such as a lease the writer must still hold.
        Nothing is written when the test fails. ``ttl`` as for :meth:`put`.
        """
        return self._write_if(key, value, expected, guard, ttl, True)

    def delete_if(self, key: str, *, expected: Any, guard: str | None = None) -> bool:
        """Remove ``key`` only if ``guard`` (default: ``key``) holds ``expected``.

        Returns whether the test held (``key`` was then removed, if it was there). The
        test and the delete are one atomic step, as in :meth:`put_if`.
        """
        return self._write_if(key, None, expected, guard, None, False)

    def put_many_if(
        self,
        items: Mapping[str, Any],
        *,
        guard: str,
        expected: Any = ABSENT,
        ttl: TTL | None = None,
    ) -> bool:
        """Write every ``key: value`` of ``items`` only if ``guard`` holds ``expected``;
        whether it did.

        All writes happen or none: the test and every write are one atomic step against
        every other writer of the store, in this process or another (the store lock in
        memory, one transaction in SQLite, one Lua script in Redis), and no reader sees
        some of them without the others. A value :data:`ABSENT` deletes its key. ``guard``
        and ``expected`` are those of :meth:`put_if` (the guard may be one of the keys
        written: a compare-and-set that writes other keys with it). Keys are checked and
        values encoded before anything is written, so a bad key or an unencodable value
        raises and writes nothing. ``ttl`` (or the ``default_ttl``) applies to every value
        stored.
        """
        guard_full = self._full(guard)
        seconds = self._ttl(ttl)
        backend = self._live()
        writes, want = conditional_writes(
            backend.serializer, self._full, items, guard_full, expected
        )
        return backend.write_many_if(guard_full, want, writes, seconds)

    def scope(self, name: str) -> Store:
        """A view whose keys are prefixed with ``name:``; scopes nest.

        The scope shares this store's data and lock.  ``store.scope("user")`` puts
        ``"1"`` at ``"user:1"``, and ``scope("user").scope("admin")`` uses the
        prefix ``"user:admin:"``.  ``keys()`` and ``range_get()`` in a scope return
        keys without the prefix, and nothing done in one scope touches keys
        outside it. ``scope("a:b")`` is ``scope("a").scope("b")``: to name a scope
        after a text from outside (an id), use ``scope(quote_scope_name(text))``, so
        that two texts never share keys.
        """
        return Store._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]


class ReadOnlyStore(StoreReader):
    """A read-only view: ``get``, ``exists``, ``range_get``, ``keys``, ``get_stats``.

    It has no write methods; touching ``put``, ``delete`` or ``update`` raises
    :class:`~actorflow.store.errors.ReadOnlyStoreError` (an ``AttributeError``).
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> NoReturn:
        if name in WRITE_VERBS:
            raise ReadOnlyStoreError(
                f"this store view is read-only: it has no {name}() "
                f"(obtained through reader(); write through the store itself)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def scope(self, name: str) -> ReadOnlyStore:
        """A read-only view of the scope ``name`` (see :meth:`Store.scope`)."""
        return ReadOnlyStore._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]
