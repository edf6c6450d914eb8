"""Typed-store type rules and the smaller view APIs (memory backend; the contract covers all)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

import pytest

from actorflow.store import (
    AsyncStore,
    AsyncTypedStore,
    MemoryStore,
    ReadOnlyStoreError,
    TypedStore,
    WrongTypeError,
)


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Shape:
    name: str
    points: list[Point]
    colour: Literal["red", "blue"] = "red"
    meta: dict[str, int] | None = None
    computed: int = dataclasses.field(default=0, init=False)


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        (int, [0, -5, 2**40], [True, 1.0, "1", None]),
        (float, [0.5, -1.0], [1, True, "0.5"]),
        (bool, [True, False], [0, 1, None]),
        (str, ["", "x"], [b"x", 1]),
        (list[int], [[], [1, 2]], [[1, "2"], (1, 2), [True]]),
        (dict[str, int], [{}, {"a": 1}], [{"a": "1"}, {"a": True}, [("a", 1)]]),
        (int | None, [None, 3], ["3", 3.0]),
        (Literal["a", 1], ["a", 1], ["b", 2, True]),
        (tuple[int, ...], [(), (1, 2, 3)], [[1, 2], (1, "2")]),
        (Any, [1, "x", None, [1]], []),
    ],
)
def test_type_rules(type_: Any, good: list[Any], bad: list[Any]) -> None:
    with MemoryStore() as store:
        typed = TypedStore(store, type_)
        for i, value in enumerate(good):
            typed.put(f"g{i}", value)
            assert typed.get(f"g{i}") == value
        for i, value in enumerate(bad):
            with pytest.raises(WrongTypeError, match=f"'b{i}'"):
                typed.put(f"b{i}", value)
        assert not any(store.exists(f"b{i}") for i in range(len(bad)))


def test_nested_dataclasses_round_trip() -> None:
    with MemoryStore() as store:
        shapes = TypedStore(store, Shape)
        shape = Shape("tri", [Point(0, 0), Point(1, 0), Point(0, 1)], "blue", {"z": 1})
        shapes.put("t", shape)
        got = shapes.get("t")
        assert got == shape
        assert all(isinstance(p, Point) for p in got.points)
        assert store.get("t")["points"][1] == {"x": 1, "y": 0}
        assert "computed" not in store.get("t")  # not an init field
        store.put("u", {"name": "u", "points": [{"x": 1}]})
        with pytest.raises(WrongTypeError, match="'u'"):
            shapes.get("u")
        store.put("v", {"name": "v", "points": [], "unknown": 1})
        with pytest.raises(WrongTypeError, match="'v'"):
            shapes.get("v")
        store.put("w", {"name": "w", "points": [], "colour": "green"})
        with pytest.raises(WrongTypeError, match=r"'w'.*\.colour"):
            shapes.get("w")


def test_typed_views_scope_and_read_only() -> None:
    with MemoryStore() as store:
        points = TypedStore(store, Point).scope("p")
        points.put("a", Point(1, 2))
        assert store.get("p:a") == {"x": 1, "y": 2}
        reader = points.reader()
        assert reader.get("a") == Point(1, 2)
        assert reader.keys() == ["a"]
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            reader.put("b", Point(0, 0))
        with pytest.raises(TypeError, match="not support"):
            TypedStore(store, 42)  # type: ignore[arg-type]


def test_async_views_of_a_sync_store() -> None:
    store = MemoryStore()

    async def main() -> None:
        view = AsyncStore.from_store(store.scope("s"))
        await view.put("a", 1)
        assert await view.get("a") == 1
        typed = AsyncTypedStore(view, int)
        assert await typed.update("a", lambda v: (v or 0) + 1) == 2
        with pytest.raises(WrongTypeError):
            await typed.put("b", "x")
        read_only = typed.reader()
        assert await read_only.range_get("") == [("a", 2)]
        with pytest.raises(ReadOnlyStoreError):
            await read_only.delete("a")
        await view.close()  # a view: the store stays open

    asyncio.run(main())
    assert store.get("s:a") == 2
    assert not store.closed
    assert "prefix=''" in repr(store)
    store.close()
    assert "closed" in repr(store)
