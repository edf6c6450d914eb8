"""Redis specifics: key layout, the sorted-set index, and connection options."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
from _waiting import wait_until

from actorflow.store import AsyncStore, create_async_store, create_store
from actorflow.store.redis import RedisStore

pytestmark = pytest.mark.redis


def _prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}:"


def test_key_layout_and_index_stay_in_step(redis_url: str) -> None:
    prefix = _prefix()
    raw = redis.Redis.from_url(redis_url)
    with create_store("redis", url=redis_url, key_prefix=prefix) as store:
        store.scope("user").put("1", {"a": 1})
        assert raw.get(f"{prefix}v:user:1") == b'{"a":1}'
        assert raw.zrange(f"{prefix}index", 0, -1) == [b"user:1"]
        store.delete("user:1")
        assert raw.exists(f"{prefix}v:user:1") == 0
        assert raw.zcard(f"{prefix}index") == 0
        store.put("t", 1, ttl=5)
        assert 0 < raw.pttl(f"{prefix}v:t") <= 5000
    raw.close()


def test_expired_keys_leave_range_results_and_the_index(redis_url: str) -> None:
    prefix = _prefix()
    raw = redis.Redis.from_url(redis_url)
    with create_store("redis", url=redis_url, key_prefix=prefix) as store:
        for i in range(5):
            store.put(f"k{i}", i, ttl=0.1 if i % 2 else None)
        assert raw.zcard(f"{prefix}index") == 5
        expiring = [f"{prefix}v:k1", f"{prefix}v:k3"]
        wait_until(lambda: raw.exists(*expiring) == 0, "redis to expire k1 and k3")
        assert store.keys() == ["k0", "k2", "k4"]
        assert store.range_get("k", limit=2) == [("k0", 0), ("k2", 2)]
        assert raw.zcard(f"{prefix}index") == 3  # stale entries removed lazily
    raw.close()


def test_range_queries_never_scan_the_keyspace(redis_url: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    raw.config_resetstat()
    with create_store("redis", url=redis_url, key_prefix=_prefix()) as store:
        for i in range(600):  # more than one batch of the range script
            store.put(f"k{i:04d}", i)
        assert len(store.range_get("k")) == 600
        assert store.keys("k05") == [f"k05{i:02d}" for i in range(100)]
    stats = raw.info("commandstats")
    assert "cmdstat_scan" not in stats
    assert "cmdstat_keys" not in stats
    raw.close()


def test_two_stores_with_different_prefixes_do_not_see_each_other(redis_url: str) -> None:
    with (
        create_store("redis", url=redis_url, key_prefix=_prefix()) as one,
        create_store("redis", url=redis_url, key_prefix=_prefix()) as two,
    ):
        one.put("k", 1)
        assert two.get("k") is None
        assert two.keys() == []


def test_connection_options_reach_the_pool() -> None:
    store = RedisStore(
        host="127.0.0.1",
        port=6390,
        db=3,
        password="secret",
        ssl=True,
        max_connections=7,
        socket_timeout=1.5,
        socket_connect_timeout=0.5,
    )
    pool: Any = store._backend.client.connection_pool  # type: ignore[attr-defined]
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "127.0.0.1",
        6390,
        3,
        "secret",
    )
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.5, 0.5)
    assert pool.max_connections == 7
    assert pool.connection_class.__name__ == "SSLConnection"
    store.close()
    from_url = RedisStore(url="rediss://:pw@127.0.0.1:6391/2")
    kwargs = from_url._backend.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert (kwargs["port"], kwargs["db"], kwargs["password"]) == (6391, 2, "pw")
    from_url.close()


def test_unreachable_server_fails_within_the_connect_timeout() -> None:
    store = create_store("redis", host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        store.get("k")
    assert time.monotonic() - started < 5
    store.close()


def test_async_store_uses_redis_asyncio(redis_url: str) -> None:
    async def main() -> None:
        store: AsyncStore = create_async_store("redis", url=redis_url, key_prefix=_prefix())
        async with store:
            await asyncio.gather(*(store.put(f"k{i}", i) for i in range(20)))
            assert [k for k, _ in await store.range_get("k1")] == ["k1"] + [
                f"k1{i}" for i in range(10)
            ]
            results = await asyncio.gather(
                *(store.update("n", lambda v: (v or 0) + 1) for _ in range(50))
            )
            assert sorted(results) == list(range(1, 51))
            assert type(store._backend).__module__ == "actorflow.store.redis_async"

    asyncio.run(main())
