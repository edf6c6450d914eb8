"""WorkerState: a handle on a worker's long-lived state, owned by the worker's supervisor.

Every method is a message to the supervisor actor and waits for its answer, so reads and writes
from many routines (and from outside) are applied one at a time in arrival order. Values are
copies: changing a dict you got from ``get_routine_state`` changes nothing until you write it
back, and ``modify_routine_state`` / ``increment`` do read-modify-write atomically.

Isolation: a routine's handle may touch its own key (its routine id), shared keys starting
with ``_`` and keys that belong to no routine; another routine's key raises
``StateAccessError`` unless the flow grants access. The handle returned by ``Runtime.exec``
has full access.

From async code (async routine logic, a service's event loop) use the awaitable forms,
``await state.aio.increment(...)`` and so on (:class:`AsyncWorkerState`): the same calls,
with the same checks and results, that let the event loop run on while the supervisor
answers. The plain forms work there too but hold the loop until the answer comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from actorflow._durations import check_seconds
from actorflow.errors import ConfigurationError, StateAccessError


class StateOwner(Protocol):
    """What a WorkerState handle talks to: the worker that owns the state (internal)."""

    @property
    def worker_id(self) -> str: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def routine_ids(self) -> frozenset[str]: ...
    @property
    def grants(self) -> Mapping[tuple[str, str], Any]: ...

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any: ...


__all__ = ["AsyncWorkerState", "StateCache", "WorkerState"]


class WorkerState:
    """The state of one worker (a running instance of a flow), shared by all its jobs."""

    __slots__ = ("_accessor", "_core")

    def __init__(self, core: StateOwner, accessor: str | None = None) -> None:
        self._core = core
        self._accessor = accessor

    # -- identity ----------------------------------------------------------------------
    @property
    def worker_id(self) -> str:
        """Unique id of the worker."""
        return self._core.worker_id

    @property
    def flow_id(self) -> str:
        """Id of the flow the worker runs."""
        return self._core.flow_id

    @property
    def status(self) -> str:
        """starting, running, stopping, stopped or failed."""
        return self._core.status

    # -- state -------------------------------------------------------------------------
    @property
    def routine_states(self) -> dict[str, Any]:
        """A snapshot (a copy) of every state this handle may read, by key."""
        accessor = self._accessor
        visible = None if accessor is None else self._visible_to(accessor)
        result: dict[str, Any] = self._core.state_call("snapshot", None, visible)
        return result

    def snapshot(self) -> dict[str, Any]:
        """Same as :attr:`routine_states`: a plain dict copy of the visible state."""
        return self.routine_states

    def get_routine_state(self, key: str) -> Any:
        """A copy of the state stored under ``key``, or None."""
        self._check(key, write=False)
        return self._core.state_call("get", key)

    def update_routine_state(self, key: str, state: Any) -> None:
        """Replace the state stored under ``key`` (it must be serializable)."""
        self._check(key, write=True)
        self._core.state_call("put", key, state)

    def delete_routine_state(self, key: str) -> bool:
        """Remove the state under ``key``; returns whether there was one."""
        self._check(key, write=True)
        result: bool = self._core.state_call("delete", key)
        return result

    def modify_routine_state(self, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace the state under ``key`` with ``fn(old_or_None)``; returns it.

        ``fn`` runs inside the supervisor, one call at a time: keep it short and free of
        blocking calls (never call the WorkerState from inside it).
        """
        if not callable(fn):
            raise TypeError(f"modify_routine_state needs a callable, got {type(fn).__name__}")
        self._check(key, write=True)
        return self._core.state_call("modify", key, fn)

    def increment(self, key: str, field: str, by: int | float = 1) -> Any:
        """Atomically add ``by`` to the number ``state[key][field]`` (0 if absent); returns it."""
        kind = type(by)
        if (
            kind is not int
            and kind is not float
            and (kind is bool or not isinstance(by, int | float))
        ):
            raise TypeError(f"increment: by must be a number, got {kind.__name__}")
        accessor = self._accessor
        if not (key == accessor and type(key) is str):  # a routine's own key: nothing to check
            self._check(key, write=True)
        return self._core.state_call("increment", key, field, by)

    def cache(self, name: str, max_entries: int = 1024, ttl: float | None = None) -> StateCache:
        """A bounded mapping kept by the supervisor: LRU beyond ``max_entries``, entries expire
        ``ttl`` seconds after they were written (never returned once expired). ``ttl`` is None
        (no expiry) or a finite number of seconds > 0 and at most ``threading.TIMEOUT_MAX``;
        anything else raises ``InvalidDurationError`` (``TypeError`` if it is no number).

        Calling ``cache`` again with the same name returns the same cache (with the same
        bounds). Values must be serializable like any state. Caches are shared by the routines
        of the worker and are not written to the durable state store.
        """
        if not isinstance(name, str) or not name:
            raise TypeError("cache name must be a non-empty str")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(
                f"cache max_entries must be a positive int, got {max_entries!r}"
            )
        ttl = check_seconds("cache", "ttl", ttl, allow_none=True, allow_zero=False)
        self._core.state_call("cache_open", name, max_entries, ttl)
        return StateCache(self._core, name)

    @property
    def aio(self) -> AsyncWorkerState:
        """The awaitable forms of this handle's state calls (same access, same results)."""
        return AsyncWorkerState(self)

    # -- isolation ---------------------------------------------------------------------
    def _check(self, key: str, *, write: bool) -> None:
        if not isinstance(key, str):
            raise TypeError(f"state keys are str, got {type(key).__name__}")
        accessor = self._accessor
        if accessor is None or key == accessor or key.startswith("_"):
            return
        core = self._core
        if key not in core.routine_ids:
            return
        grant = core.grants.get((accessor, key))
        if grant is not None and (grant.write or not write):
            return
        verb = "write" if write else "read"
        raise StateAccessError(
            f"routine {accessor!r} may not {verb} the state of routine {key!r} "
            f"(use a shared '_' key, or flow.grant_state_access({accessor!r}, {key!r}"
            f"{', write=True' if write else ''}))"
        )

    def _visible_to(self, accessor: str) -> Callable[[str], bool]:
        core = self._core
        routine_ids = core.routine_ids
        grants = core.grants

        def visible(key: str) -> bool:
            return (
                key == accessor
                or key.startswith("_")
                or key not in routine_ids
                or (accessor, key) in grants
            )

        return visible

    def __repr__(self) -> str:
        who = "full access" if self._accessor is None else f"as routine {self._accessor!r}"
        return f"WorkerState(worker_id={self.worker_id!r}, flow_id={self.flow_id!r}, {who})"


class AsyncWorkerState:
    """The state calls of a :class:`WorkerState` handle, awaited (``state.aio``).

    Each is the plain call's twin: same arguments, same access checks, same result or error;
    awaiting it never blocks the event loop.
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: WorkerState) -> None:
        self._handle = handle

    async def _call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        core = self._handle._core
        call_async = getattr(core, "state_call_async", None)
        if call_async is not None:
            return await call_async(op, key, arg, extra)
        return await asyncio.to_thread(core.state_call, op, key, arg, extra)

    async def snapshot(self) -> dict[str, Any]:
        """A plain dict copy of every state the handle may read (``WorkerState.snapshot``)."""
        handle = self._handle
        accessor = handle._accessor
        visible = None if accessor is None else handle._visible_to(accessor)
        result: dict[str, Any] = await self._call("snapshot", None, visible)
        return result

    async def get_routine_state(self, key: str) -> Any:
        """A copy of the state stored under ``key``, or None."""
        self._handle._check(key, write=False)
        return await self._call("get", key)

    async def update_routine_state(self, key: str, state: Any) -> None:
        """Replace the state stored under ``key`` (it must be serializable)."""
        self._handle._check(key, write=True)
        await self._call("put", key, state)

    async def delete_routine_state(self, key: str) -> bool:
        """Remove the state under ``key``; returns whether there was one."""
        self._handle._check(key, write=True)
        result: bool = await self._call("delete", key)
        return result

    async def modify_routine_state(self, key: str, fn: Callable[[Any], Any]) -> Any:
        """Atomically replace the state under ``key`` with ``fn(old_or_None)``; returns it
        (``fn`` is a plain function, run inside the supervisor)."""
        if not callable(fn):
            raise TypeError(f"modify_routine_state needs a callable, got {type(fn).__name__}")
        self._handle._check(key, write=True)
        return await self._call("modify", key, fn)

    async def increment(self, key: str, field: str, by: int | float = 1) -> Any:
        """Atomically add ``by`` to the number ``state[key][field]`` (0 if absent); returns it."""
        if isinstance(by, bool) or not isinstance(by, int | float):
            raise TypeError(f"increment: by must be a number, got {type(by).__name__}")
        self._handle._check(key, write=True)
        return await self._call("increment", key, field, by)

    def __repr__(self) -> str:
        return f"AsyncWorkerState({self._handle!r})"


class StateCache:
    """A bounded LRU/TTL mapping owned by a worker's supervisor (see ``WorkerState.cache``)."""

    __slots__ = ("_core", "name")

    def __init__(self, core: StateOwner, name: str) -> None:
        self._core = core
        self.name = name

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the cached value, or ``default`` if absent or expired."""
        _check_key(key)
        return self._core.state_call("cache_get", self.name, key, default)

    def put(self, key: str, value: Any) -> None:
        """Cache ``value`` (evicting the least recently used entry when full)."""
        _check_key(key)
        self._core.state_call("cache_put", self.name, key, value)

    def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was cached."""
        result: bool = self._core.state_call("cache_delete", self.name, key)
        return result

    def __len__(self) -> int:
        result: int = self._core.state_call("cache_len", self.name)
        return result

    def __repr__(self) -> str:
        return f"StateCache({self.name!r}, worker={self._core.worker_id!r})"


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise TypeError(f"cache keys are str, got {type(key).__name__}")
