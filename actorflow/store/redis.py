"""The networked backend: redis-py with a blocking connection pool.

* TTL is Redis's own (``SET ... PX``); expired keys are never returned, and
  their index entries are removed lazily by range queries;
* ``range_get``/``keys`` walk a sorted-set index with ``ZRANGEBYLEX`` in one Lua
  script (never a ``SCAN`` of the keyspace);
* ``update`` is a ``WATCH``/``MULTI``/``EXEC`` retry loop, atomic against every
  other client of the server (two round trips per attempt);
* ``max_entries`` and ``on_evict`` are not offered: Redis evicts by its own
  ``maxmemory-policy`` and does not tell clients reliably when a key expires.

See :mod:`actorflow.store._redis_common` for the key layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from redis.connection import SSLConnection

from actorflow.store._options import TTL
from actorflow.store._redis_common import (
    DEFAULT_KEY_PREFIX,
    MAX_UPDATE_ATTEMPTS,
    RANGE_SCRIPT,
    WRITE_IF_SCRIPT,
    WRITE_MANY_IF_SCRIPT,
    Layout,
    RedisOptions,
    backoff,
    exec_succeeded,
    pairs,
    redis_options,
    server_stats,
    ttl_milliseconds,
    watch_commands,
    write_commands,
    write_if_call,
    write_many_if_call,
)
from actorflow.store.base import Backend, Store
from actorflow.store.errors import ConcurrentUpdateError
from actorflow.store.serializers import Serializer

__all__ = ["RedisBackend", "RedisStore"]


class RedisBackend(Backend):
    """Bytes in Redis under ``key_prefix`` (see the module docstring)."""

    name = "redis"

    def __init__(self, options: RedisOptions, *, serializer: str | Serializer = "json") -> None:
        super().__init__(serializer=serializer, default_ttl=options.default_ttl)
        self.options = options
        self.layout = Layout(options.key_prefix)
        kwargs = options.pool_kwargs(SSLConnection)
        if options.url is not None:
            pool = redis.BlockingConnectionPool.from_url(options.url, **kwargs)
        else:
            pool = redis.BlockingConnectionPool(**kwargs)  # type: ignore[no-untyped-call]
        self.client = redis.Redis(connection_pool=pool)
        self._range_script = self.client.register_script(RANGE_SCRIPT)
        self._write_if_script = self.client.register_script(WRITE_IF_SCRIPT)
        self._write_many_if_script = self.client.register_script(WRITE_MANY_IF_SCRIPT)
        self._counts = dict.fromkeys(
            ("hits", "misses", "puts", "deletes", "evicted_capacity", "evicted_expired"), 0
        )

    def _write(self, pipe: Any, key: str, data: bytes, ttl: float | None) -> None:
        pipe.set(self.layout.value_key(key), data, px=ttl_milliseconds(ttl))
        pipe.zadd(self.layout.index, {self.layout.member(key): 0})

    def put(self, key: str, data: bytes, ttl: float | None) -> None:
        with self.lock:
            pipe = self.client.pipeline(transaction=True)
            self._write(pipe, key, data, ttl)
            pipe.execute()
            self._counts["puts"] += 1

    def get(self, key: str) -> bytes | None:
        with self.lock:
            data = self.client.get(self.layout.value_key(key))
            self._counts["misses" if data is None else "hits"] += 1
            return None if data is None else cast(bytes, data)

    def delete(self, key: str) -> bool:
        with self.lock:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.layout.value_key(key))
            pipe.zrem(self.layout.index, self.layout.member(key))
            removed, _ = pipe.execute()
            if removed:
                self._counts["deletes"] += 1
            return bool(removed)

    def exists(self, key: str) -> bool:
        with self.lock:
            return bool(self.client.exists(self.layout.value_key(key)))

    def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        with self.lock:
            args = self.layout.range_args(low, high, limit, with_values=True)
            return pairs(self._range_script(keys=[self.layout.index], args=args))

    def keys(self, low: str, high: str | None) -> list[str]:
        with self.lock:
            args = self.layout.range_args(low, high, None, with_values=False)
            flat = self._range_script(keys=[self.layout.index], args=args)
            return [member.decode() for member in flat]

    def update(self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None) -> None:
        value_key = self.layout.value_key(key)
        pool: Any = self.client.connection_pool  # connection-level API (untyped)
        with self.lock:
            for attempt in range(MAX_UPDATE_ATTEMPTS):
                connection = pool.get_connection()
                try:
                    connection.send_packed_command(
                        connection.pack_commands(watch_commands(value_key))
                    )
                    connection.read_response()
                    old = connection.read_response()
                    try:
                        data = fn(None if old is None else cast(bytes, old))
                    except BaseException:
                        connection.send_command("UNWATCH")
                        connection.read_response()
                        raise
                    commands = write_commands(self.layout, key, data, ttl)
                    connection.send_packed_command(connection.pack_commands(commands))
                    replies = [connection.read_response() for _ in commands]
                except (redis.RedisError, OSError):
                    connection.disconnect()
                    raise
                finally:
                    pool.release(connection)
                if exec_succeeded(replies[-1]):
                    self._counts["puts"] += 1
                    return
                time.sleep(backoff(attempt))
        raise ConcurrentUpdateError(
            f"update of {key!r} lost {MAX_UPDATE_ATTEMPTS} races with other clients in a row"
        )

    def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        keys, args = write_if_call(self.layout, guard, expected, key, data, ttl)
        with self.lock:
            outcome = int(self._write_if_script(keys=keys, args=args))
            if data is not None and outcome:
                self._counts["puts"] += 1
            elif outcome == 2:
                self._counts["deletes"] += 1
            return outcome > 0

    def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        keys, args = write_many_if_call(self.layout, guard, expected, writes, ttl)
        with self.lock:
            outcome = int(self._write_many_if_script(keys=keys, args=args))
            if outcome:
                self._counts["puts"] += sum(1 for _, data in writes if data is not None)
                self._counts["deletes"] += outcome - 1
            return outcome > 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            entries = self.client.zcard(self.layout.index)
            info = self.client.info()
            return {
                "backend": self.name,
                "serializer": self.serializer.name,
                "entries": int(entries),
                "max_entries": None,
                "default_ttl": self.default_ttl,
                "key_prefix": self.options.key_prefix,
                **server_stats(info),
                **self._counts,
            }

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self.client.close()
            self.client.connection_pool.disconnect()


class RedisStore(Store):
    """A :class:`~actorflow.store.Store` in a Redis server (redis-py 5 or later).

    :param url: ``redis://[:password@]host:port/db`` (or ``rediss://`` for TLS);
        excludes ``host``, ``port``, ``db``, ``password`` and ``ssl``.
    :param host, port, db, password, ssl: where and how to connect (defaults
        ``localhost``, ``6379``, ``0``, none, ``False``).
    :param key_prefix: namespace of every redis key this store uses.
    :param default_ttl, serializer: as for :class:`~actorflow.store.MemoryStore`.
    :param max_connections: size of the blocking connection pool.
    :param socket_timeout, socket_connect_timeout: seconds (``None``: no timeout).

    ``entries`` in :meth:`get_stats` counts index entries, which may include keys
    that expired but have not been reclaimed by a range query yet.
    """

    __slots__ = ()

    def __init__(
        self,
        *,
        url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        db: int | None = None,
        password: str | None = None,
        ssl: bool | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        default_ttl: TTL | None = None,
        serializer: str | Serializer = "json",
        max_connections: int = 10,
        socket_timeout: float | None = 10.0,
        socket_connect_timeout: float | None = 5.0,
    ) -> None:
        options = redis_options(
            url=url,
            host=host,
            port=port,
            db=db,
            password=password,
            ssl=ssl,
            key_prefix=key_prefix,
            default_ttl=default_ttl,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
        )
        super().__init__(RedisBackend(options, serializer=serializer))
