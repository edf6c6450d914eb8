"""What the runtime needs from a backend (internal): a way to start workers, and the workers.

:class:`~actorflow.runtime.Runtime` is a facade over one :class:`Backend`: it keeps the jobs'
books, checks what users pass, and hands each flow instance to the backend as a
:class:`BackendWorker`. The thread backend (:mod:`actorflow.backends.threads`, also the
deterministic runtime: the same workers with a seeded dispatcher) and the Ray backend
(:mod:`actorflow.backends.ray`) host the same routine cell; they differ in where the actors
run and how messages and state calls travel.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from actorflow.flow import Flow
from actorflow.job import JobRecord
from actorflow.state_limits import StateLimits
from actorflow.worker import WorkerState

__all__ = ["Backend", "BackendWorker"]


class BackendWorker(Protocol):
    """One running instance of a flow, as the runtime sees it on any backend."""

    @property
    def worker_id(self) -> str: ...
    @property
    def flow(self) -> Flow: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def status(self) -> str:
        """starting, running, stopping, stopped or failed."""

    @property
    def failure(self) -> str | None:
        """Why the worker failed (None while it has not)."""

    @property
    def overflow(self) -> str:
        """What a post does when a mailbox is full (see Runtime)."""

    @property
    def restart_count(self) -> int: ...
    @property
    def routine_ids(self) -> frozenset[str]: ...
    @property
    def slots(self) -> Mapping[str, frozenset[str]]:
        """Routine id -> its slot names."""

    @property
    def post_targets(self) -> Mapping[str, Mapping[str, tuple[Any, int]]]:
        """Routine id -> slot -> (mailbox, max_queue_length): where a post puts its envelope."""

    @property
    def handle(self) -> WorkerState:
        """The worker's state, with full access."""

    @property
    def grants(self) -> Mapping[tuple[str, str], Any]: ...

    def start(self, restore: bool = False, discard: bool = False, take_over: bool = False) -> None:
        """Start the state owner (restoring or discarding stored state), then the actors."""

    def flush(self) -> None:
        """Ask every queueing routine to release what it holds (before a shutdown)."""

    def stop(self, timeout: float | None = None) -> None:
        """Stop the actors in reverse start order, then the state owner."""

    def make_room(self, routine_id: str, limit: int, timeout: float) -> None:
        """A post found the routine's mailbox full: apply the worker's overflow policy."""

    admit_tick: Iterator[bool]
    """True where a ``post`` asks for the worker's ``backlog`` (on the first and every few)."""

    def backlog(self) -> tuple[str, int] | None:
        """``(routine, half)`` when at least ``half`` the bound of ``routine`` (the smallest
        bound of a routine that receives emits) wait in the worker's mailboxes; else None."""

    def admit(self, routine_id: str, half: int, timeout: float) -> None:
        """A post found ``routine_id`` backlogged (``backlog``): apply the overflow policy."""

    async def wait_for_room(
        self, routine_id: str, limit: int, timeout: float, backlog: bool = False
    ) -> None:
        """``make_room`` for ``overflow="block"`` as an await (``post_async``): the caller's
        event loop runs on while it waits; ``QueueFullError`` after ``timeout`` seconds."""

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """One WorkerState operation, applied by the state owner."""

    def placement(self, routine_id: str) -> list[str]:
        """The ids of the Ray nodes the routine's actors run on (none off Ray)."""

    def processes(self) -> dict[str, Any]:
        """The process of the state owner and of each routine actor (see
        ``Runtime.processes``)."""

    def routine_metrics(self) -> dict[str, Any]:
        """Each routine's counters and handling-time histogram
        (:func:`actorflow.engine.metrics.routine_report` of its actors)."""

    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        """Record a message that will never be handled."""


class Backend(Protocol):
    """Where a runtime's workers run."""

    name: str
    supports_probes: bool  # probes watch emits in the runtime's process

    def new_worker(
        self, flow: Flow, worker_id: str, state_limits: StateLimits | None, overflow: str
    ) -> BackendWorker:
        """A worker for ``flow``, not started yet."""

    def settle_end(self, record: JobRecord, timeout: float) -> None:
        """Return once every routine of ``record``'s worker knows the job ended (at most
        ``timeout`` seconds): a routine that runs afterwards skips the job, and what it emits
        for it becomes a dead letter."""

    def close(self) -> None:
        """Release what the backend holds once every worker has stopped."""

    def timer_callback_errors(self) -> int:
        """How many callbacks of the backend's own timers raised (each was logged, and the
        timers went on); the runtime's timers count theirs apart."""
