"""The worker's state owner on Ray: the supervisor core every backend shares, in a Ray actor
(internal).

With a store factory, the store is made in this process; :meth:`StateActor.open` takes the
worker's lease and applies the start rules of the thread backend (the same code), and every
change is written through before it is acknowledged. A restarted state actor (its process
died) takes the lease again as the same runtime and reads the state back from the store.
Every call carries an id, so a call Ray retries after a restart is applied once: the core
remembers applied ids, and with a store it writes the id of each change with the change and
restores the ids with the state.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any

import cloudpickle

from actorflow._clock import SystemClock
from actorflow._lease import WorkerStore
from actorflow.backends.ray._import import import_ray
from actorflow.engine.reply import Reply
from actorflow.engine.state_owner import StateCall, SupervisorCore
from actorflow.engine.timers import TimerService
from actorflow.errors import ConfigurationError, StateFunctionError
from actorflow.state_limits import StateLimits

__all__ = ["StateActor"]


class StateActor:
    """Owns one worker's state (a :class:`SupervisorCore` in its own process)."""

    def __init__(
        self,
        worker_id: str,
        serializer: Any,
        store_factory: bytes | None,
        lease_owner: str,
        lease_seconds: float,
        limits: StateLimits | None,
    ) -> None:
        self.worker_id = worker_id
        self.timers: TimerService | None = None
        # A store that cannot be made in this process (its server unreachable from this node,
        # its module or directory missing here): a constructor that raised would have Ray
        # restart the actor over and over while the worker's start waits for it. Instead the
        # actor stays up without a store, and ``open`` and every state call raise this.
        self.store_error: str | None = None
        stored = None
        if store_factory is not None:
            try:
                store = cloudpickle.loads(store_factory)()
                stored = WorkerStore(store, worker_id, lease_owner, lease_seconds)
            except Exception as exc:
                self.store_error = "".join(traceback.format_exception_only(exc)).strip()
        self.core = SupervisorCore(worker_id, limits, store=stored, serializer=serializer)
        reconstructed = import_ray().get_runtime_context().was_current_actor_reconstructed
        if reconstructed and self.store_error is None:
            self.open(restore=True, discard=False, take_over=False)

    def __repr__(self) -> str:
        # Ray shows it as the actor's name (ray.util.state.list_actors' repr_name)
        return f"StateActor({self.worker_id})"

    def process(self) -> dict[str, Any]:
        """This actor's process id and Ray node."""
        node_id: str = import_ray().get_runtime_context().get_node_id()
        return {"pid": os.getpid(), "node": node_id}

    def open(self, restore: bool, discard: bool, take_over: bool) -> None:
        """Take the lease and restore, discard or refuse (``SupervisorCore.open_store``).
        Raises ``ConfigurationError`` when the store could not be made in this process (the
        worker does not start)."""
        self._check_store()
        self.timers = TimerService(SystemClock(), name="actorflow-lease")
        self.core.open_store(
            restore=restore,
            discard=discard,
            take_over=take_over,
            call_at=self.timers.call_at,
            monotonic=time.monotonic,
        )

    def _check_store(self) -> None:
        if self.store_error is not None:
            node = import_ray().get_runtime_context().get_node_id()
            raise ConfigurationError(
                f"the state of worker {self.worker_id!r} cannot be kept on Ray node {node}: "
                f"its state_store could not be made there ({self.store_error})"
            )

    def close(self) -> None:
        """Release the worker's lease and stop renewing it (the worker stops)."""
        if self.timers is not None:
            self.timers.stop()
        self.core.close_store()

    def call(self, op: str, key: Any, arg_blob: bytes, extra: Any, op_id: str | None) -> Any:
        """Apply one state call; its result, or raise its error (to the caller's process).

        ``SupervisorCore.handle`` lets nothing escape, so whatever a function given to
        ``modify_routine_state`` raises, this actor lives on: a ``BaseException`` that is not
        an ``Exception`` comes back as ``StateFunctionError``, with the original as its cause
        when the original can be pickled.
        """
        self._check_store()
        reply = Reply()
        call = StateCall(op, key, cloudpickle.loads(arg_blob), extra, reply, op_id)
        self.core.handle(call)
        try:
            return reply.get(0)
        except StateFunctionError as exc:
            try:
                cloudpickle.dumps(exc.__cause__)
            except Exception:  # the original cannot cross to the caller: its text does
                raise StateFunctionError(*exc.args) from None
            raise
