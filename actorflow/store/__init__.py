"""Key-value stores with one API over three backends: memory, SQLite and Redis.

>>> from actorflow.store import create_store
>>> with create_store("memory") as store:
...     store.put("user:1", {"name": "Ada"})
...     store.scope("user").get("1")
{'name': 'Ada'}

See ``docs/stores.md`` for the guide.  The redis backend needs the ``redis``
package (the ``actorflow[redis]`` extra); it is imported only when a redis store
is created or ``RedisStore`` / ``AsyncRedisStore`` is first looked up, which is
why those two are not in ``__all__`` (``import *`` works without redis).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actorflow.errors import ConfigurationError, SerializationError
from actorflow.store._keys import quote_scope_name
from actorflow.store.aio import AsyncReadOnlyStore, AsyncStore, AsyncStoreReader
from actorflow.store.base import ABSENT, Backend, ReadOnlyStore, Store, StoreReader
from actorflow.store.errors import (
    ConcurrentUpdateError,
    DecodeError,
    InvalidKeyError,
    InvalidTTLError,
    ReadOnlyStoreError,
    StoreClosedError,
    StoreError,
    UnencodableValueError,
)
from actorflow.store.factory import (
    STORE_TYPES,
    create_async_store,
    create_store,
    get_async_store_context,
    get_store_context,
    store_options,
)
from actorflow.store.memory import MemoryStore
from actorflow.store.serializers import (
    Serializer,
    find_unencodable,
    get_serializer,
)
from actorflow.store.sqlite import SqliteStore
from actorflow.store.typed import AsyncTypedStore, TypedStore, WrongTypeError

if TYPE_CHECKING:
    from actorflow.store.redis import RedisStore as RedisStore
    from actorflow.store.redis_async import AsyncRedisStore as AsyncRedisStore

__all__ = [
    "ABSENT",
    "STORE_TYPES",
    "AsyncReadOnlyStore",
    "AsyncStore",
    "AsyncStoreReader",
    "AsyncTypedStore",
    "Backend",
    "ConcurrentUpdateError",
    "ConfigurationError",
    "DecodeError",
    "InvalidKeyError",
    "InvalidTTLError",
    "MemoryStore",
    "ReadOnlyStore",
    "ReadOnlyStoreError",
    "SerializationError",
    "Serializer",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreReader",
    "TypedStore",
    "UnencodableValueError",
    "WrongTypeError",
    "create_async_store",
    "create_store",
    "find_unencodable",
    "get_async_store_context",
    "get_serializer",
    "get_store_context",
    "quote_scope_name",
    "store_options",
]


def __getattr__(name: str) -> Any:
    """Import the redis classes on first use (the ``redis`` package is optional)."""
    if name == "RedisStore":
        from actorflow.store.redis import RedisStore  # noqa: PLC0415

        return RedisStore
    if name == "AsyncRedisStore":
        from actorflow.store.redis_async import AsyncRedisStore  # noqa: PLC0415

        return AsyncRedisStore
    raise AttributeError(f"module 'actorflow.store' has no attribute {name!r}")
