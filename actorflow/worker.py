"""WorkerState: a handle on a worker's long-lived state, owned by the worker's supervisor.

Every method is a message to the supervisor actor and waits for its answer, so reads and writes
from many routines (and from outside) are applied one at a time in arrival order. Values are
copies: changing a dict you got from ``get_routine_state`` changes nothing until you write it
back, and ``modify_routine_state`` / ``increment`` do read-modify-write atomically.

Isolation: a routine's handle may touch its own key (its routine id), shared keys starting
with ``_`` and keys that belong to no routine; another routine's key raises
``StateAccessError`` unless the flow grants access. The handle returned by ``Runtime.exec``
has full access.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actorflow.errors import StateAccessError

if TYPE_CHECKING:
    from actorflow._worker import WorkerCore

__all__ = ["WorkerState"]


class WorkerState:
    """The state of one worker (a running instance of a flow), shared by all its jobs."""

    __slots__ = ("_accessor", "_core")

    def __init__(self, core: WorkerCore, accessor: str | None = None) -> None:
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
        if isinstance(by, bool) or not isinstance(by, int | float):
            raise TypeError(f"increment: by must be a number, got {type(by).__name__}")
        self._check(key, write=True)
        return self._core.state_call("increment", key, field, by)

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
