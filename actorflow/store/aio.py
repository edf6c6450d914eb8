"""The asynchronous store API: :class:`AsyncStore`, the same verbs awaited.

``scope()`` and ``reader()`` are plain (not awaited) calls returning async views;
``get_stats()`` and ``close()`` are awaited; ``async with`` closes the store.

How each backend runs:

* ``memory`` -- calls the synchronous backend directly on the event loop (its
  operations are in-memory and hold the lock only briefly);
* ``sqlite`` -- runs each call in a worker thread owned by the store (one thread:
  the connection serializes calls anyway), because commits wait for the disk;
* ``redis`` -- native ``redis.asyncio`` (:mod:`actorflow.store.redis_async`).

``update(key, fn)`` takes a plain function (not a coroutine function) everywhere.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, NoReturn

from actorflow.store._keys import (
    SCOPE_SEPARATOR,
    check_bound,
    check_key,
    check_limit,
    check_scope_name,
    key_range,
    prefix_end,
)
from actorflow.store._options import TTL, ttl_seconds
from actorflow.store.base import (
    ABSENT,
    WRITE_VERBS,
    Backend,
    Store,
    conditional_write,
    conditional_writes,
)
from actorflow.store.errors import DecodeError, ReadOnlyStoreError, StoreClosedError
from actorflow.store.serializers import Serializer, encode_value

__all__ = [
    "AsyncBackend",
    "AsyncReadOnlyStore",
    "AsyncStore",
    "AsyncStoreReader",
    "ThreadedAsyncBackend",
]


class AsyncBackend(ABC):
    """The async twin of :class:`~actorflow.store.base.Backend` (same contract, awaited)."""

    name: str
    serializer: Serializer
    default_ttl: float | None

    @property
    @abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""

    @abstractmethod
    async def put(self, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` under ``key``."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The bytes under ``key``, or ``None``."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live entry."""

    @abstractmethod
    async def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        """Entries with ``low <= key < high``, by key."""

    @abstractmethod
    async def keys(self, low: str, high: str | None) -> list[str]:
        """Keys with ``low <= key < high``, sorted."""

    @abstractmethod
    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        """Atomically replace the bytes under ``key`` with ``fn(old_or_None)``."""

    async def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        """Atomically write ``data`` (``None``: delete) under ``key`` if ``guard`` holds
        ``expected`` (see :meth:`~actorflow.store.base.Backend.write_if`)."""
        raise NotImplementedError(
            f"the {self.name!r} backend has no conditional write (write_if), which "
            "put_if and delete_if need"
        )

    async def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        """Atomically apply every write if ``guard`` holds ``expected``, or none (see
        :meth:`~actorflow.store.base.Backend.write_many_if`). The default handles one write
        with :meth:`write_if` and refuses more."""
        if len(writes) == 1:
            key, data = writes[0]
            return await self.write_if(guard, expected, key, data, ttl)
        raise NotImplementedError(
            f"the {self.name!r} backend has no atomic multi-key write (write_many_if), "
            "which put_many_if needs"
        )

    @abstractmethod
    async def stats(self) -> dict[str, Any]:
        """Backend statistics."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources."""


class ThreadedAsyncBackend(AsyncBackend):
    """Adapts a synchronous backend to the async API.

    ``offload=False`` calls it directly on the event loop.  ``offload=True`` runs
    each call in a worker thread: a single thread owned by this adapter when
    ``own_thread`` is true (the backend serializes its calls anyway, so one thread
    loses nothing and keeps calls in order), else ``asyncio.to_thread``.
    """

    def __init__(self, backend: Backend, *, offload: bool, own_thread: bool = False) -> None:
        self.sync = backend
        self.offload = offload
        self.name = backend.name
        self.serializer = backend.serializer
        self.default_ttl = backend.default_ttl
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix=f"actorflow-store-{backend.name}")
            if offload and own_thread
            else None
        )

    @property
    def closed(self) -> bool:
        """Whether the wrapped backend is closed."""
        return self.sync.closed

    async def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        if not self.offload:
            return method(*args)
        if self._executor is None:
            return await asyncio.to_thread(method, *args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, method, *args)

    async def put(self, key: str, data: bytes, ttl: float | None) -> None:
        await self._call(self.sync.put, key, data, ttl)

    async def get(self, key: str) -> bytes | None:
        return await self._call(self.sync.get, key)  # type: ignore[no-any-return]

    async def delete(self, key: str) -> bool:
        return await self._call(self.sync.delete, key)  # type: ignore[no-any-return]

    async def exists(self, key: str) -> bool:
        return await self._call(self.sync.exists, key)  # type: ignore[no-any-return]

    async def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        return await self._call(self.sync.range, low, high, limit)  # type: ignore[no-any-return]

    async def keys(self, low: str, high: str | None) -> list[str]:
        return await self._call(self.sync.keys, low, high)  # type: ignore[no-any-return]

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        await self._call(self.sync.update, key, fn, ttl)

    async def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        return await self._call(self.sync.write_if, guard, expected, key, data, ttl)  # type: ignore[no-any-return]

    async def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        return await self._call(self.sync.write_many_if, guard, expected, writes, ttl)  # type: ignore[no-any-return]

    async def stats(self) -> dict[str, Any]:
        return await self._call(self.sync.stats)  # type: ignore[no-any-return]

    async def close(self) -> None:
        try:
            await self._call(self.sync.close)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)


class AsyncStoreReader:
    """The read verbs shared by :class:`AsyncStore` and :class:`AsyncReadOnlyStore`."""

    __slots__ = ("_backend", "_closed", "_owner", "_prefix")

    def __init__(self, backend: AsyncBackend, *, prefix: str = "", owner: bool = True) -> None:
        """Wrap ``backend``; an ``owner`` view closes the backend when it is closed."""
        self._backend = backend
        self._prefix = prefix
        self._owner = owner
        self._closed = False

    @classmethod
    def _view(cls, backend: AsyncBackend, prefix: str) -> Any:
        view = cls.__new__(cls)
        AsyncStoreReader.__init__(view, backend, prefix=prefix, owner=False)
        return view

    @property
    def prefix(self) -> str:
        """The full-key prefix of this view."""
        return self._prefix

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
        """Whether this view (or its store) is closed."""
        return self._closed or self._backend.closed

    def _live(self) -> AsyncBackend:
        if self._closed or self._backend.closed:
            raise StoreClosedError(f"{self!r} is closed")
        return self._backend

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

    async def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` (see :meth:`Store.get`)."""
        full = self._full(key)
        data = await self._live().get(full)
        return default if data is None else self._decode(full, data)

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a value that has not expired."""
        return await self._live().exists(self._full(key))

    async def range_get(
        self, start: str, end: str | None = None, limit: int | None = None
    ) -> list[tuple[str, Any]]:
        """Pairs with ``start <= key < end`` (``end`` exclusive; ``None``: prefix ``start``)."""
        check_bound(start, "range start")
        if end is not None:
            check_bound(end, "range end")
        limit = check_limit(limit)
        backend = self._live()
        bounds = key_range(self._prefix, start, end)
        if bounds is None or limit == 0:
            return []
        rows = await backend.range(bounds[0], bounds[1], limit)
        return [(self._strip(key), self._decode(key, data)) for key, data in rows]

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (without the scope prefix)."""
        check_bound(prefix, "key prefix")
        low = self._prefix + prefix
        return [self._strip(key) for key in await self._live().keys(low, prefix_end(low))]

    async def get_stats(self) -> dict[str, Any]:
        """Statistics of the whole store (see :meth:`StoreReader.get_stats`)."""
        stats = await self._live().stats()
        stats["prefix"] = self._prefix
        return stats

    def _scope_prefix(self, name: str) -> str:
        return self._prefix + check_scope_name(name) + SCOPE_SEPARATOR

    def scope(self, name: str) -> AsyncStoreReader:
        """A view of the scope ``name`` (see :meth:`Store.scope`)."""
        return AsyncReadOnlyStore._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]

    def reader(self) -> AsyncReadOnlyStore:
        """A read-only view: it has no write methods at all."""
        return AsyncReadOnlyStore._view(self._live(), self._prefix)  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the store (or detach this view; see :meth:`StoreReader.close`)."""
        if self._owner and not self._backend.closed:
            await self._backend.close()
        self._closed = True

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return (
            f"<{type(self).__name__} backend={self._backend.name!r} prefix={self._prefix!r}{state}>"
        )


class AsyncStore(AsyncStoreReader):
    """An asynchronous key-value store; see :class:`~actorflow.store.Store` for semantics.

    Create one with :func:`actorflow.store.create_async_store`, or wrap an existing
    synchronous store with :meth:`from_store`.
    """

    __slots__ = ()

    @classmethod
    def from_store(cls, store: Store, *, offload: bool | None = None) -> AsyncStore:
        """An async store over the same backend as ``store`` (which keeps ownership).

        ``offload`` runs calls in worker threads; by default it is on for every
        backend except ``memory``.
        """
        backend = store.open_backend()
        threads = backend.name != "memory" if offload is None else offload
        return cls._view(ThreadedAsyncBackend(backend, offload=threads), store.prefix)  # type: ignore[no-any-return]

    def _ttl(self, ttl: TTL | None) -> float | None:
        seconds = ttl_seconds(ttl)
        return self._backend.default_ttl if seconds is None else seconds

    async def put(self, key: str, value: Any, ttl: TTL | None = None) -> None:
        """Store ``value`` under ``key`` (see :meth:`Store.put`)."""
        full = self._full(key)
        seconds = self._ttl(ttl)
        backend = self._live()
        await backend.put(full, encode_value(backend.serializer, value, key=full), seconds)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it held a live value."""
        return await self._live().delete(self._full(key))

    async def update(self, key: str, fn: Callable[[Any], Any], ttl: TTL | None = None) -> Any:
        """Atomically replace the value with ``fn(old)`` (see :meth:`Store.update`)."""
        full = self._full(key)
        seconds = self._ttl(ttl)
        backend = self._live()
        result: list[Any] = []

        def step(old: bytes | None) -> bytes:
            new = fn(None if old is None else self._decode(full, old))
            result[:] = [new]
            return encode_value(backend.serializer, new, key=full)

        await backend.update(full, step, seconds)
        return result[0]

    async def _write_if(
        self, key: str, value: Any, expected: Any, guard: str | None, ttl: TTL | None, put: bool
    ) -> bool:
        full = self._full(key)
        guard_full = full if guard is None else self._full(guard)
        seconds = self._ttl(ttl) if put else None
        backend = self._live()
        data, want = conditional_write(backend.serializer, full, value, put, guard_full, expected)
        return await backend.write_if(guard_full, want, full, data, seconds)

    async def put_if(
        self,
        key: str,
        value: Any,
        *,
        expected: Any = ABSENT,
        guard: str | None = None,
        ttl: TTL | None = None,
    ) -> bool:
        """Store ``value`` only if ``guard`` holds ``expected`` (see :meth:`Store.put_if`)."""
        return await self._write_if(key, value, expected, guard, ttl, True)

    async def delete_if(self, key: str, *, expected: Any, guard: str | None = None) -> bool:
        """Remove ``key`` only if ``guard`` holds ``expected`` (see :meth:`Store.delete_if`)."""
        return await self._write_if(key, None, expected, guard, None, False)

    async def put_many_if(
        self,
        items: Mapping[str, Any],
        *,
        guard: str,
        expected: Any = ABSENT,
        ttl: TTL | None = None,
    ) -> bool:
        """Write every ``key: value`` of ``items`` (``ABSENT``: delete) only if ``guard``
        holds ``expected``, all or none (see :meth:`Store.put_many_if`)."""
        guard_full = self._full(guard)
        seconds = self._ttl(ttl)
        backend = self._live()
        writes, want = conditional_writes(
            backend.serializer, self._full, items, guard_full, expected
        )
        return await backend.write_many_if(guard_full, want, writes, seconds)

    def scope(self, name: str) -> AsyncStore:
        """A view whose keys are prefixed with ``name:`` (see :meth:`Store.scope`)."""
        return AsyncStore._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]


class AsyncReadOnlyStore(AsyncStoreReader):
    """A read-only async view; ``put``/``delete``/``update`` raise ``ReadOnlyStoreError``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> NoReturn:
        if name in WRITE_VERBS:
            raise ReadOnlyStoreError(
                f"this store view is read-only: it has no {name}() "
                f"(obtained through reader(); write through the store itself)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def scope(self, name: str) -> AsyncReadOnlyStore:
        """A read-only view of the scope ``name``."""
        return AsyncReadOnlyStore._view(self._live(), self._scope_prefix(name))  # type: ignore[no-any-return]
