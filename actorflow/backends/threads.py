"""The thread backend (internal): every routine actor on a thread of this process.

With the deterministic runtime the same workers run on one seeded dispatcher instead of
threads (the dispatcher is one of the :class:`~actorflow.engine.services.WorkerServices`).
"""

from __future__ import annotations

from actorflow.engine.services import WorkerServices
from actorflow.engine.worker_core import WorkerCore
from actorflow.flow import Flow
from actorflow.job import JobRecord
from actorflow.state_limits import StateLimits

__all__ = ["ThreadBackend"]


class ThreadBackend:
    """Starts :class:`~actorflow.engine.worker_core.WorkerCore` workers: pykka actors on threads."""

    name = "threads"
    supports_probes = True

    def __init__(self, services: WorkerServices) -> None:
        self.services = services

    def new_worker(
        self, flow: Flow, worker_id: str, state_limits: StateLimits | None, overflow: str
    ) -> WorkerCore:
        worker = WorkerCore(self.services, flow, worker_id, state_limits)
        worker.overflow = overflow
        return worker

    def settle_end(self, record: JobRecord, timeout: float) -> None:
        """Nothing to wait for: the routines of this process read the job's record itself."""

    def close(self) -> None:
        """Nothing to release: each worker stopped its own actors."""

    def timer_callback_errors(self) -> int:
        """None: the workers' timers are the runtime's."""
        return 0
