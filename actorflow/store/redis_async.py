"""The redis backend on ``redis.asyncio`` (same layout and semantics as the sync one).

``update`` calls made through one store object are queued behind each other (an
``asyncio.Lock``), since they would only lose ``WATCH`` races to one another; the
``WATCH``/``MULTI``/``EXEC`` loop keeps them atomic against every other client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import SSLConnection

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
from actorflow.store.aio import AsyncBackend, AsyncStore
from actorflow.store.errors import ConcurrentUpdateError
from actorflow.store.serializers import Serializer, get_serializer

__all__ = ["AsyncRedisBackend", "AsyncRedisStore"]


class AsyncRedisBackend(AsyncBackend):
    """Bytes in Redis through ``redis.asyncio``."""

    name = "redis"

    def __init__(self, options: RedisOptions, *, serializer: str | Serializer = "json") -> None:
        self.serializer = get_serializer(serializer)
        self.default_ttl = options.default_ttl
        self._closed = False
        self.options = options
        self.layout = Layout(options.key_prefix)
        kwargs = options.pool_kwargs(SSLConnection)
        if options.url is not None:
            pool = aredis.BlockingConnectionPool.from_url(options.url, **kwargs)
        else:
            pool = aredis.BlockingConnectionPool(**kwargs)
        self.client = aredis.Redis(connection_pool=pool)
        self._range_script = self.client.register_script(RANGE_SCRIPT)
        self._write_if_script = self.client.register_script(WRITE_IF_SCRIPT)
        self._write_many_if_script = self.client.register_script(WRITE_MANY_IF_SCRIPT)
        self._update_lock = asyncio.Lock()
        self._counts = dict.fromkeys(
            ("hits", "misses", "puts", "deletes", "evicted_capacity", "evicted_expired"), 0
        )

    def _write(self, pipe: Any, key: str, data: bytes, ttl: float | None) -> None:
        pipe.set(self.layout.value_key(key), data, px=ttl_milliseconds(ttl))
        pipe.zadd(self.layout.index, {self.layout.member(key): 0})

    async def put(self, key: str, data: bytes, ttl: float | None) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            self._write(pipe, key, data, ttl)
            await pipe.execute()
        self._counts["puts"] += 1

    async def get(self, key: str) -> bytes | None:
        data = await self.client.get(self.layout.value_key(key))
        self._counts["misses" if data is None else "hits"] += 1
        return None if data is None else cast(bytes, data)

    async def delete(self, key: str) -> bool:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.layout.value_key(key))
            pipe.zrem(self.layout.index, self.layout.member(key))
            removed, _ = await pipe.execute()
        if removed:
            self._counts["deletes"] += 1
        return bool(removed)

    async def exists(self, key: str) -> bool:
        return bool(await self.client.exists(self.layout.value_key(key)))

    async def range(self, low: str, high: str | None, limit: int | None) -> list[tuple[str, bytes]]:
        args = self.layout.range_args(low, high, limit, with_values=True)
        return pairs(await self._range_script(keys=[self.layout.index], args=args))

    async def keys(self, low: str, high: str | None) -> list[str]:
        args = self.layout.range_args(low, high, None, with_values=False)
        flat = await self._range_script(keys=[self.layout.index], args=args)
        return [member.decode() for member in flat]

    async def update(
        self, key: str, fn: Callable[[bytes | None], bytes], ttl: float | None
    ) -> None:
        value_key = self.layout.value_key(key)
        pool: Any = self.client.connection_pool  # connection-level API (untyped)
        async with self._update_lock:
            for attempt in range(MAX_UPDATE_ATTEMPTS):
                connection = await pool.get_connection()
                try:
                    await connection.send_packed_command(
                        connection.pack_commands(watch_commands(value_key))
                    )
                    await connection.read_response()
                    old = await connection.read_response()
                    try:
                        data = fn(None if old is None else cast(bytes, old))
                    except BaseException:
                        await connection.send_command("UNWATCH")
                        await connection.read_response()
                        raise
                    commands = write_commands(self.layout, key, data, ttl)
                    await connection.send_packed_command(connection.pack_commands(commands))
                    replies = [await connection.read_response() for _ in commands]
                except (redis.RedisError, OSError):
                    await connection.disconnect()
                    raise
                finally:
                    await pool.release(connection)
                if exec_succeeded(replies[-1]):
                    self._counts["puts"] += 1
                    return
                await asyncio.sleep(backoff(attempt))
        raise ConcurrentUpdateError(
            f"update of {key!r} lost {MAX_UPDATE_ATTEMPTS} races with other clients in a row"
        )

    async def write_if(
        self, guard: str, expected: bytes | None, key: str, data: bytes | None, ttl: float | None
    ) -> bool:
        keys, args = write_if_call(self.layout, guard, expected, key, data, ttl)
        outcome = int(await self._write_if_script(keys=keys, args=args))
        if data is not None and outcome:
            self._counts["puts"] += 1
        elif outcome == 2:
            self._counts["deletes"] += 1
        return outcome > 0

    async def write_many_if(
        self,
        guard: str,
        expected: bytes | None,
        writes: Sequence[tuple[str, bytes | None]],
        ttl: float | None,
    ) -> bool:
        keys, args = write_many_if_call(self.layout, guard, expected, writes, ttl)
        outcome = int(await self._write_many_if_script(keys=keys, args=args))
        if outcome:
            self._counts["puts"] += sum(1 for _, data in writes if data is not None)
            self._counts["deletes"] += outcome - 1
        return outcome > 0

    async def stats(self) -> dict[str, Any]:
        entries = await self.client.zcard(self.layout.index)
        info = await self.client.info()
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


class AsyncRedisStore(AsyncStore):
    """An :class:`~actorflow.store.AsyncStore` in Redis; options as :class:`RedisStore`."""

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
        super().__init__(AsyncRedisBackend(options, serializer=serializer))
