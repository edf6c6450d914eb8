"""A running worker: its supervisor, its routine actors and their mailboxes (internal)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
from loguru import logger

from actorflow._actor_host import STOP, ActorHost, new_mailbox, start_host
from actorflow._clock import Clock
from actorflow._envelope import Envelope
from actorflow._reply import Reply
from actorflow._routine_cell import FLUSH, RoutineCell
from actorflow._supervisor import StateCall, SupervisorCore
from actorflow._timers import TimerService
from actorflow.errors import RuntimeClosedError
from actorflow.flow import Flow, StateGrant
from actorflow.job import JobContext
from actorflow.state_limits import StateLimits

if TYPE_CHECKING:
    from actorflow.runtime import Runtime

__all__ = ["WorkerCore"]

STATE_CALL_TIMEOUT = 60.0


class WorkerCore:
    """One running instance of a flow."""

    def __init__(
        self,
        runtime: Runtime,
        flow: Flow,
        worker_id: str,
        clock: Clock,
        timers: TimerService,
        strict: bool,
        limits: StateLimits | None = None,
        state_store: Any = None,
    ) -> None:
        flow.validate()
        self.runtime = runtime
        self.flow = flow
        self.flow_id = flow.flow_id
        self.worker_id = worker_id
        self.clock = clock
        self.timers = timers
        self.strict = strict
        self.status = "starting"
        self.routine_ids = frozenset(flow._routines)
        self.grants: dict[tuple[str, str], StateGrant] = dict(flow._grants)
        self.slots = {rid: frozenset(r._slots) for rid, r in flow._routines.items()}
        self.mailboxes: dict[str, queue.SimpleQueue[Any]] = {
            rid: new_mailbox() for rid in flow._routines
        }
        self.cells: dict[str, list[RoutineCell]] = {}
        self._hosts: list[tuple[str, list[ActorHost]]] = []
        self._supervisor_mailbox = new_mailbox()
        self._supervisor: ActorHost | None = None
        self._log = logger.bind(worker=worker_id, flow=flow.flow_id)
        scoped = None if state_store is None else state_store.scope("worker").scope(worker_id)
        self.supervisor_core = SupervisorCore(worker_id, limits, scoped, clock.monotonic)

    # -- life cycle --------------------------------------------------------------------
    def start(self, restore: bool = False) -> None:
        """Start the supervisor (restoring durable state), then every routine actor in order."""
        if restore:
            self.supervisor_core.restore()
        self._supervisor = start_host(
            self._supervisor_mailbox, self.supervisor_core, f"{self.worker_id}-supervisor"
        )
        routes = self.flow.routes()
        for routine_id, routine in self.flow._routines.items():
            mailbox = self.mailboxes[routine_id]
            cells = []
            for _ in range(routine.concurrency):
                cell = RoutineCell(self, routine_id, routine, mailbox.put)
                for event in routine._events:
                    targets = routes.get((routine_id, event))
                    if targets:
                        cell.routes[event] = [
                            (target, slot, self.mailboxes[target].put) for target, slot in targets
                        ]
                cells.append(cell)
            self.cells[routine_id] = cells
        for routine_id, cells in self.cells.items():
            name = f"{self.worker_id}-{routine_id}"
            hosts = [start_host(self.mailboxes[routine_id], cell, name) for cell in cells]
            self._hosts.append((routine_id, hosts))
        self.status = "running"
        self._log.debug("worker {} started", self.worker_id)

    def flush(self) -> None:
        """Ask every queueing routine to release what it holds (used before shutdown)."""
        for routine_id, cells in self.cells.items():
            if not cells[0].immediate:
                self.mailboxes[routine_id].put(FLUSH)

    def stop(self) -> None:
        """Stop routine actors in reverse start order, then the supervisor; join every thread."""
        if self.status in ("stopped", "stopping"):
            return
        self.status = "stopping"
        for routine_id, hosts in reversed(self._hosts):
            mailbox = self.mailboxes[routine_id]
            for _ in hosts:
                mailbox.put(STOP)
            for host in hosts:
                if host.thread is not None:
                    host.thread.join()
        if self._supervisor is not None:
            self._supervisor_mailbox.put(STOP)
            if self._supervisor.thread is not None:
                self._supervisor.thread.join()
        self.status = "stopped"
        self._log.debug("worker {} stopped", self.worker_id)

    def threads_alive(self) -> int:
        hosts = [host for _, group in self._hosts for host in group]
        if self._supervisor is not None:
            hosts.append(self._supervisor)
        return sum(1 for host in hosts if host.thread is not None and host.thread.is_alive())

    # -- messages ----------------------------------------------------------------------
    def sender(self, routine_id: str) -> Callable[[Any], None]:
        return self.mailboxes[routine_id].put

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """Send a state request to the supervisor and wait for its answer."""
        if self.status in ("stopped", "failed"):
            raise RuntimeClosedError(
                f"worker {self.worker_id!r} is {self.status}; its state can no longer be used"
            )
        reply = Reply()
        self._supervisor_mailbox.put(StateCall(op, key, arg, extra, reply))
        try:
            return reply.get(STATE_CALL_TIMEOUT)
        except TimeoutError:
            raise RuntimeClosedError(
                f"the supervisor of worker {self.worker_id!r} did not answer within "
                f"{STATE_CALL_TIMEOUT} s"
            ) from None

    # -- hooks for cells ---------------------------------------------------------------
    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.runtime._dead_letters.record(job_id, self.worker_id, routine_id, slot, reason)

    def open_sealed(self, envelope: Envelope) -> tuple[Any, JobContext]:
        """Unpickle a strict-mode envelope and link its job view back to the job's record."""
        payload = cloudpickle.loads(envelope.payload)
        job: JobContext = cloudpickle.loads(envelope.blob)
        record = self.runtime._jobs.get(job._rec.job_id)
        if record is not None:
            job._rec = record
        return payload, job
