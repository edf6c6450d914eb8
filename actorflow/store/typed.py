"""Typed views: every value is checked against one type on the way in and out.

``TypedStore(store, User)`` refuses to store anything that is not a ``User`` and
raises :class:`WrongTypeError` (a ``TypeError`` naming the key) when the data
under a key does not have that shape.  Nothing is ever cast silently: an ``int``
is not a ``float``, a ``bool`` is not an ``int``.

Supported types: plain classes (``isinstance``), dataclasses (stored as a dict of
their ``init`` fields, rebuilt on the way out, nesting allowed), ``list[X]``,
``tuple[X, ...]``/``tuple[X, Y]`` (tuples come back as tuples even through JSON),
``dict[K, V]``, ``X | None`` and other unions, ``Literal[...]`` and ``Any``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from actorflow.store._options import TTL
from actorflow.store.aio import AsyncStoreReader
from actorflow.store.base import StoreReader
from actorflow.store.errors import StoreError

__all__ = ["AsyncTypedStore", "TypedStore", "WrongTypeError"]

T = TypeVar("T")


class WrongTypeError(StoreError, TypeError):
    """A value does not have the type a typed store was created with."""


class _Mismatch(Exception):
    def __init__(self, path: str, expected: Any, value: Any) -> None:
        super().__init__(path)
        self.path = path
        self.expected = expected
        self.value = value


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp).replace("typing.", "")


def _field_types(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: check the fields' presence only
        hints = {}
    return {
        field.name: hints.get(field.name, Any) for field in dataclasses.fields(cls) if field.init
    }


def _conform(value: Any, tp: Any, path: str, decode: bool) -> Any:
    """``value`` converted for storage (``decode=False``) or for the caller, if it fits."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Union or origin is types.UnionType:
        for arm in args:
            try:
                return _conform(value, arm, path, decode)
            except _Mismatch:
                continue
        raise _Mismatch(path, tp, value)
    if origin is Literal:
        if any(type(value) is type(option) and value == option for option in args):
            return value
        raise _Mismatch(path, tp, value)
    if origin is list:
        if type(value) is not list:
            raise _Mismatch(path, tp, value)
        item = args[0] if args else Any
        return [_conform(element, item, f"{path}[{i}]", decode) for i, element in enumerate(value)]
    if origin is tuple or tp is tuple:
        accepted = (list, tuple) if decode else (tuple,)
        if type(value) not in accepted:
            raise _Mismatch(path, tp, value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_conform(e, item, f"{path}[{i}]", decode) for i, e in enumerate(value))
        if len(args) != len(value):
            raise _Mismatch(path, tp, value)
        return tuple(
            _conform(element, arm, f"{path}[{i}]", decode)
            for i, (element, arm) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if type(value) is not dict:
            raise _Mismatch(path, tp, value)
        key_type, item_type = args if args else (Any, Any)
        return {
            _conform(k, key_type, f"{path}[{k!r}] (the key)", decode): _conform(
                v, item_type, f"{path}[{k!r}]", decode
            )
            for k, v in value.items()
        }
    if origin is not None:  # another generic (e.g. set[int]): check the container class only
        tp = origin
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _conform_dataclass(value, tp, path, decode)
    if not isinstance(tp, type):
        raise TypeError(f"typed stores do not support the type {tp!r}")
    if isinstance(value, bool) and tp is not bool and tp in (int, float):
        raise _Mismatch(path, tp, value)
    if not isinstance(value, tp):
        raise _Mismatch(path, tp, value)
    return value


def _conform_dataclass(value: Any, cls: type, path: str, decode: bool) -> Any:
    fields = _field_types(cls)
    if not decode:
        if not isinstance(value, cls):
            raise _Mismatch(path, cls, value)
        return {
            name: _conform(getattr(value, name), hint, f"{path}.{name}", decode)
            for name, hint in fields.items()
        }
    if isinstance(value, cls):  # already an instance (e.g. stored untyped with pickle)
        return value
    if type(value) is not dict or set(value) - set(fields):
        raise _Mismatch(path, cls, value)
    try:
        return cls(
            **{
                name: _conform(value[name], hint, f"{path}.{name}", decode)
                for name, hint in fields.items()
                if name in value
            }
        )
    except _Mismatch:
        raise
    except TypeError:  # a required field is missing
        raise _Mismatch(path, cls, value) from None


def _check(key: str, value: Any, tp: Any, *, decode: bool) -> Any:
    try:
        return _conform(value, tp, "", decode)
    except _Mismatch as mismatch:
        where = f" at {mismatch.path}" if mismatch.path else ""
        direction = "stored under" if decode else "given for"
        raise WrongTypeError(
            f"the value {direction} key {key!r} is not a {_type_name(tp)}: found "
            f"{type(mismatch.value).__name__} {mismatch.value!r:.80}{where}, "
            f"expected {_type_name(mismatch.expected)}"
        ) from None


class _TypedBase(Generic[T]):
    def __init__(self, store: Any, type_: Any) -> None:
        if not (isinstance(type_, type) or get_origin(type_) is not None or type_ is Any):
            raise TypeError(f"typed stores do not support the type {type_!r}")
        self._store = store
        self._type = type_

    @property
    def type(self) -> Any:
        """The type every value must have."""
        return self._type

    def _in(self, key: str, value: Any) -> Any:
        return _check(key, value, self._type, decode=False)

    def _out(self, key: str, raw: Any) -> T:
        return _check(key, raw, self._type, decode=True)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r}, {_type_name(self._type)})"


class TypedStore(_TypedBase[T]):
    """A view of a :class:`~actorflow.store.Store` (or read-only view) holding only ``type_``.

    Writing through a typed view of a read-only view raises ``ReadOnlyStoreError``.
    """

    def __init__(self, store: StoreReader, type_: type[T]) -> None:
        super().__init__(store, type_)

    @property
    def store(self) -> StoreReader:
        """The untyped store underneath."""
        return self._store  # type: ignore[no-any-return]

    def put(self, key: str, value: T, ttl: TTL | None = None) -> None:
        """Check ``value`` and store it (see :meth:`Store.put`)."""
        self._store.put(key, self._in(key, value), ttl)

    def get(self, key: str, default: T | None = None) -> T | None:
        """The checked value under ``key``, or ``default``."""
        raw = self._store.get(key, _MISSING)
        return default if raw is _MISSING else self._out(key, raw)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live value."""
        return bool(self._store.exists(key))

    def delete(self, key: str) -> bool:
        """Remove ``key``."""
        return bool(self._store.delete(key))

    def update(self, key: str, fn: Callable[[T | None], T], ttl: TTL | None = None) -> T:
        """Atomic read-modify-write with checked old and new values."""
        result: list[T] = []

        def step(raw: Any) -> Any:
            new = fn(None if raw is None else self._out(key, raw))
            result[:] = [new]
            return self._in(key, new)

        self._store.update(key, step, ttl)
        return result[0]

    def range_get(
        self, start: str, end: str | None = None, limit: int | None = None
    ) -> list[tuple[str, T]]:
        """Checked ``(key, value)`` pairs (see :meth:`Store.range_get`)."""
        rows = self._store.range_get(start, end, limit)
        return [(key, self._out(key, raw)) for key, raw in rows]

    def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix``."""
        return list(self._store.keys(prefix))

    def scope(self, name: str) -> TypedStore[T]:
        """A typed view of the scope ``name``."""
        return TypedStore(self._store.scope(name), self._type)

    def reader(self) -> TypedStore[T]:
        """A typed read-only view."""
        return TypedStore(self._store.reader(), self._type)

    def get_stats(self) -> dict[str, Any]:
        """Statistics of the underlying store."""
        return dict(self._store.get_stats())

    def close(self) -> None:
        """Close the underlying store (or view)."""
        self._store.close()

    def __enter__(self) -> TypedStore[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTypedStore(_TypedBase[T]):
    """The async twin of :class:`TypedStore`, over an :class:`~actorflow.store.AsyncStore`."""

    def __init__(self, store: AsyncStoreReader, type_: type[T]) -> None:
        super().__init__(store, type_)

    @property
    def store(self) -> AsyncStoreReader:
        """The untyped store underneath."""
        return self._store  # type: ignore[no-any-return]

    async def put(self, key: str, value: T, ttl: TTL | None = None) -> None:
        """Check ``value`` and store it."""
        await self._store.put(key, self._in(key, value), ttl)

    async def get(self, key: str, default: T | None = None) -> T | None:
        """The checked value under ``key``, or ``default``."""
        raw = await self._store.get(key, _MISSING)
        return default if raw is _MISSING else self._out(key, raw)

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live value."""
        return bool(await self._store.exists(key))

    async def delete(self, key: str) -> bool:
        """Remove ``key``."""
        return bool(await self._store.delete(key))

    async def update(self, key: str, fn: Callable[[T | None], T], ttl: TTL | None = None) -> T:
        """Atomic read-modify-write with checked old and new values."""
        result: list[T] = []

        def step(raw: Any) -> Any:
            new = fn(None if raw is None else self._out(key, raw))
            result[:] = [new]
            return self._in(key, new)

        await self._store.update(key, step, ttl)
        return result[0]

    async def range_get(
        self, start: str, end: str | None = None, limit: int | None = None
    ) -> list[tuple[str, T]]:
        """Checked ``(key, value)`` pairs."""
        rows = await self._store.range_get(start, end, limit)
        return [(key, self._out(key, raw)) for key, raw in rows]

    async def keys(self, prefix: str = "") -> list[str]:
        """Sorted keys starting with ``prefix``."""
        return list(await self._store.keys(prefix))

    def scope(self, name: str) -> AsyncTypedStore[T]:
        """A typed view of the scope ``name``."""
        return AsyncTypedStore(self._store.scope(name), self._type)

    def reader(self) -> AsyncTypedStore[T]:
        """A typed read-only view."""
        return AsyncTypedStore(self._store.reader(), self._type)

    async def get_stats(self) -> dict[str, Any]:
        """Statistics of the underlying store."""
        return dict(await self._store.get_stats())

    async def close(self) -> None:
        """Close the underlying store (or view)."""
        await self._store.close()

    async def __aenter__(self) -> AsyncTypedStore[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
