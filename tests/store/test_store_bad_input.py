"""The factory and the constructors refuse bad input with errors that say what is wrong."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from actorflow.errors import ActorflowError, ConfigurationError
from actorflow.store import (
    STORE_TYPES,
    AsyncStore,
    InvalidKeyError,
    InvalidTTLError,
    MemoryStore,
    SqliteStore,
    Store,
    create_async_store,
    create_store,
    get_async_store_context,
    get_store_context,
    store_options,
)


def test_unknown_store_type_lists_the_valid_ones() -> None:
    for bad in ("postgres", "", None, 3):
        with pytest.raises(ConfigurationError, match="memory, redis, sqlite"):
            create_store(bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="unknown store type"):
            create_async_store(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("store_type", sorted(STORE_TYPES))
def test_unknown_option_is_named_with_the_valid_ones(store_type: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        create_store(store_type, max_entires=10)
    message = str(caught.value)
    assert "'max_entires'" in message
    assert ", ".join(store_options(store_type)) in message
    with pytest.raises(ConfigurationError, match="'max_entires'"):
        create_async_store(store_type, max_entires=10)


def test_redis_refuses_options_it_cannot_honour_and_says_why() -> None:
    for option, why in (
        ("max_entries", "maxmemory-policy"),
        ("on_evict", "does not tell clients"),
        ("clock", "server's own clock"),
    ):
        with pytest.raises(ConfigurationError, match=f"'{option}' is not supported.*{why}"):
            create_store("redis", **{option: 1})


def test_redis_options_are_checked_before_connecting() -> None:
    with pytest.raises(ConfigurationError, match="either url or host, port"):
        create_store("redis", url="redis://127.0.0.1:1/0", host="h", port=2)
    with pytest.raises(ConfigurationError, match="url must start"):
        create_store("redis", url="http://example")
    with pytest.raises(ConfigurationError, match="port"):
        create_store("redis", port=70000)
    with pytest.raises(ConfigurationError, match="max_connections"):
        create_store("redis", max_connections=0)
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        create_store("redis", socket_timeout=-1)


def test_sqlite_needs_a_path_and_valid_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'path'"):
        create_store("sqlite")
    with pytest.raises(ConfigurationError, match="synchronous"):
        create_store("sqlite", path=str(tmp_path / "x.db"), synchronous="off")
    with pytest.raises(ConfigurationError, match="cannot open"):
        create_store("sqlite", path=str(tmp_path / "missing-dir" / "x.db"))


@pytest.mark.parametrize("bad", [0, -1, -100, 2.5, "10", True])
def test_max_entries_must_be_a_positive_int(bad: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        create_store("memory", max_entries=bad)
    with pytest.raises(ConfigurationError, match="max_entries"):
        create_store("sqlite", path=str(tmp_path / "x.db"), max_entries=bad)


@pytest.mark.parametrize("bad", [-1, 0, -0.5, float("nan"), "1", datetime.timedelta(0)])
def test_negative_or_zero_ttls_are_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="default_ttl"):
        create_store("memory", default_ttl=bad)
    with MemoryStore() as store:
        with pytest.raises(InvalidTTLError, match="ttl"):
            store.put("k", 1, ttl=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidTTLError):
            store.update("k", lambda v: 1, ttl=bad)  # type: ignore[arg-type]
        assert store.keys() == []


@pytest.mark.parametrize("bad", [1, 1.5, None, b"key", ("a",), ["a"]])
def test_non_str_keys_are_a_type_error(bad: object) -> None:
    with MemoryStore() as store:
        for call in (
            lambda: store.put(bad, 1),  # type: ignore[arg-type]
            lambda: store.get(bad),  # type: ignore[arg-type]
            lambda: store.delete(bad),  # type: ignore[arg-type]
            lambda: store.exists(bad),  # type: ignore[arg-type]
            lambda: store.update(bad, lambda v: 1),  # type: ignore[arg-type]
            lambda: store.scope(bad),  # type: ignore[arg-type]
            lambda: store.keys(bad),  # type: ignore[arg-type]
        ):
            with pytest.raises(TypeError, match="must be str") as caught:
                call()
            assert isinstance(caught.value, InvalidKeyError)
            assert isinstance(caught.value, ActorflowError)


def test_store_errors_are_actorflow_errors() -> None:
    with pytest.raises(ActorflowError):
        create_store("nope")
    with MemoryStore() as store, pytest.raises(ActorflowError):
        store.put("", 1)


def test_context_helpers_close_the_store(tmp_path: Path) -> None:
    with get_store_context("sqlite", path=str(tmp_path / "c.db")) as store:
        assert isinstance(store, Store)
        assert isinstance(store, SqliteStore)
        store.put("a", 1)
    assert store.closed

    async def main() -> AsyncStore:
        async with get_async_store_context("memory") as astore:
            await astore.put("a", 1)
            assert await astore.get("a") == 1
        return astore

    assert asyncio.run(main()).closed
