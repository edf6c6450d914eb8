"""``create_store`` / ``create_async_store``: build a store by backend name and options."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from actorflow.errors import ConfigurationError
from actorflow.store.aio import AsyncStore, ThreadedAsyncBackend
from actorflow.store.base import Store
from actorflow.store.memory import MemoryBackend, MemoryStore
from actorflow.store.sqlite import SqliteBackend, SqliteStore

__all__ = [
    "STORE_TYPES",
    "create_async_store",
    "create_store",
    "get_async_store_context",
    "get_store_context",
    "store_options",
]

_BOUNDS = ("max_entries", "default_ttl", "on_evict", "serializer", "clock")
_REDIS = (
    "url",
    "host",
    "port",
    "db",
    "password",
    "ssl",
    "key_prefix",
    "default_ttl",
    "serializer",
    "max_connections",
    "socket_timeout",
    "socket_connect_timeout",
)


def _sqlite_path(options: dict[str, Any]) -> Any:
    if "path" not in options:
        raise ConfigurationError("a 'sqlite' store needs the 'path' option (the database file)")
    return options.pop("path")


def _memory_sync(options: dict[str, Any]) -> Store:
    return MemoryStore(**options)


def _memory_async(options: dict[str, Any]) -> AsyncStore:
    return AsyncStore(ThreadedAsyncBackend(MemoryBackend(**options), offload=False))


def _sqlite_sync(options: dict[str, Any]) -> Store:
    return SqliteStore(_sqlite_path(options), **options)


def _sqlite_async(options: dict[str, Any]) -> AsyncStore:
    backend = SqliteBackend(_sqlite_path(options), **options)
    return AsyncStore(ThreadedAsyncBackend(backend, offload=True, own_thread=True))


def _redis_sync(options: dict[str, Any]) -> Store:
    from actorflow.store.redis import RedisStore  # noqa: PLC0415 - redis is optional

    return RedisStore(**options)


def _redis_async(options: dict[str, Any]) -> AsyncStore:
    from actorflow.store.redis_async import AsyncRedisStore  # noqa: PLC0415

    return AsyncRedisStore(**options)


@dataclass(frozen=True)
class _StoreType:
    options: tuple[str, ...]
    make: Callable[[dict[str, Any]], Store]
    make_async: Callable[[dict[str, Any]], AsyncStore]
    unsupported: dict[str, str] = field(default_factory=dict)


STORE_TYPES: dict[str, _StoreType] = {
    "memory": _StoreType(_BOUNDS, _memory_sync, _memory_async),
    "sqlite": _StoreType(
        ("path", *_BOUNDS, "synchronous", "busy_timeout"), _sqlite_sync, _sqlite_async
    ),
    "redis": _StoreType(
        _REDIS,
        _redis_sync,
        _redis_async,
        unsupported={
            "max_entries": "Redis bounds memory with its own maxmemory-policy, which the "
            "store cannot turn into an exact entry count",
            "on_evict": "Redis does not tell clients reliably when it expires or evicts a key",
            "clock": "Redis expires keys by the server's own clock",
        },
    ),
}
"""Every store type, with the options it accepts."""


def store_options(store_type: str) -> list[str]:
    """The option names ``create_store(store_type, ...)`` accepts, sorted."""
    return sorted(_lookup(store_type).options)


def _lookup(store_type: object) -> _StoreType:
    spec = STORE_TYPES.get(store_type) if isinstance(store_type, str) else None
    if spec is None:
        raise ConfigurationError(
            f"unknown store type {store_type!r}; valid store types: "
            + ", ".join(sorted(STORE_TYPES))
        )
    return spec


def _checked(store_type: str, options: dict[str, Any]) -> _StoreType:
    spec = _lookup(store_type)
    for name in options:
        if name in spec.unsupported:
            raise ConfigurationError(
                f"option {name!r} is not supported by a {store_type!r} store: "
                f"{spec.unsupported[name]}"
            )
        if name not in spec.options:
            raise ConfigurationError(
                f"unknown option {name!r} for a {store_type!r} store; valid options: "
                + ", ".join(sorted(spec.options))
            )
    return spec


def create_store(store_type: str = "memory", **options: Any) -> Store:
    """Create a synchronous store.

    ``store_type`` is ``"memory"``, ``"sqlite"`` or ``"redis"``; ``options`` are the
    keyword arguments of :class:`~actorflow.store.MemoryStore`,
    :class:`~actorflow.store.SqliteStore` or :class:`~actorflow.store.RedisStore`.
    An unknown type or option raises :class:`~actorflow.errors.ConfigurationError`
    naming it and listing the valid ones.
    """
    return _checked(store_type, options).make(dict(options))


def create_async_store(store_type: str = "memory", **options: Any) -> AsyncStore:
    """Create an :class:`~actorflow.store.AsyncStore`; types and options as in create_store."""
    return _checked(store_type, options).make_async(dict(options))


@contextmanager
def get_store_context(store_type: str = "memory", **options: Any) -> Iterator[Store]:
    """``with get_store_context("sqlite", path=...) as store:`` -- closed on exit."""
    store = create_store(store_type, **options)
    try:
        yield store
    finally:
        store.close()


@asynccontextmanager
async def get_async_store_context(
    store_type: str = "memory", **options: Any
) -> AsyncIterator[AsyncStore]:
    """``async with get_async_store_context("redis", url=...) as store:`` -- closed on exit."""
    store = create_async_store(store_type, **options)
    try:
        yield store
    finally:
        await store.close()
