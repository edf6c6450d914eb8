"""JobContext: one job's identity, metadata, data and trace, carried inside every envelope.

A job is born in ``Runtime.post()`` and ends by itself: *completed* when every message it
caused has been handled, *failed* as soon as a routine's logic raises (with the default
error strategy), *cancelled* by ``Runtime.cancel_job()`` or at shutdown.

Two objects cooperate:

* the **job record** (private) is the single place where the job's status, merged data and
  trace live; ``Runtime.post()`` and ``Runtime.get_job()`` hand out a :class:`JobContext` that
  reads it;
* each envelope carries a **view** (also a :class:`JobContext`) holding the data as the
  sending routine saw it. Views are copy-on-write: a routine that only reads shares its
  parent's dict; the first ``set_data`` copies it. Every write is also merged into the
  record, in causal order: a write made further downstream (more hops from the post) wins over
  the upstream value it replaces; two branches at the same depth writing one key resolve to
  the write merged last.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback as _traceback
from collections.abc import Callable, Container, Generator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol

from actorflow._clock import Clock, iso_timestamp
from actorflow._durations import check_seconds

__all__ = ["JobContext", "JobStatus", "get_current_job"]

_new_object = object.__new__


class JobStatus(StrEnum):
    """The life cycle of a job. Values compare equal to their lower-case names."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


_COMPLETED = JobStatus.COMPLETED
FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
EMPTY_DATA: dict[Any, Any] = {}
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})
_ROOT_DEPTH = 1 << 30  # writes through the record's own context win over routine writes
# A record's data and trace start as these shared empty values (most jobs never write either);
# the first write makes the record its own, under _FIRST_WRITE when no record lock covers it.
_NO_DATA: dict[Any, Any] = {}
_NO_TRACE: list[dict[str, Any]] = []
_FIRST_WRITE = threading.Lock()
# Records share a ring of locks instead of making one each (a lock is a GC-tracked object, and
# a job's lock lives as long as the job runs). A record holds its lock only for a few field
# updates and never takes another record's lock meanwhile, so sharing cannot deadlock; two jobs
# on one lock wait for each other only if a thread switch lands inside those few updates.
# A record's lock is picked by its id's hash, which the str caches for the dict insertions after.
_RECORD_LOCKS = tuple(threading.Lock() for _ in range(64))

MAX_TIMELINE_STEPS = 256
"""How many handling steps a job keeps for :attr:`JobContext.timeline` (later ones are counted
in :attr:`JobContext.timeline_dropped`)."""
# Steps are timed with perf_counter (as the handling-time histogram is); this turns such a
# reading into seconds since the epoch, in this process.
_PERF_TO_WALL = time.time() - time.perf_counter()


class _Activation(Protocol):
    """What runs a routine's logic: a routine actor's cell (threads, deterministic, Ray).

    ``Routine.emit`` appends ``(event, data)`` to ``outbox`` itself when ``routine`` is the
    emitting routine and the event is in ``direct_events`` (connected events that need no
    check or encoding: they declare no fields), and drops it when the event is in
    ``silent_events`` (declared without fields, connected nowhere) while ``probes`` is empty;
    every other emit has its fields checked and goes through ``emit_for``.
    """

    current_job: JobContext | None
    routine: Any
    outbox: list[tuple[str, Any]] | None

    @property
    def direct_events(self) -> Container[str]: ...

    @property
    def silent_events(self) -> Container[str]: ...

    @property
    def probes(self) -> Mapping[Any, Any]: ...

    def emit_for(self, routine: Any, event: str, data: dict[str, Any]) -> None: ...


# The routine activation running on this thread (or asyncio task); None outside logic.
CURRENT_ACTIVATION: ContextVar[_Activation | None] = ContextVar(
    "actorflow_current_activation", default=None
)


def get_current_job() -> JobContext | None:
    """Return the job of the message being handled, or ``None`` outside routine logic."""
    activation = CURRENT_ACTIVATION.get()
    return None if activation is None else activation.current_job


class JobRecord:
    """The authoritative state of one job (internal; users see it through JobContext)."""

    __slots__ = (
        "__weakref__",
        "_depths",
        "_inflight",
        "_listeners",
        "_lock",
        "_on_finish",
        "_parked",
        "_watchers",
        "clock",
        "completed_at",
        "created_at",
        "data",
        "error",
        "errors",
        "final",
        "finished",
        "flow_id",
        "job_id",
        "metadata",
        "pump",
        "started",
        "steps",
        "steps_dropped",
        "timeout_armed",
        "trace",
        "worker_id",
    )

    # Made by new_record() (no __init__: calling a class with a Python __init__ costs twice
    # as much as making the instance and setting its slots, and one record is made per job).
    job_id: str
    flow_id: str
    worker_id: str
    metadata: Mapping[str, Any]
    clock: Clock
    created_at: float
    completed_at: float | None
    started: bool  # a routine has begun handling one of its messages
    final: JobStatus | None  # the status it ended with
    error: str | None
    errors: list[dict[str, Any]] | None
    data: dict[Any, Any]  # starts as _NO_DATA, never written in place: see merge
    trace: list[dict[str, Any]]  # starts as _NO_TRACE, never appended to: see extend_trace
    # (routine id, perf_counter start, seconds, outcome), at most MAX_TIMELINE_STEPS: appended
    # to by the routine cell (inline on its hot path), add_step and extend_steps
    steps: list[tuple[str, float, float, str]]
    steps_dropped: int  # set (read with getattr) once a step found the timeline full
    finished: bool
    _depths: dict[Any, int] | None
    _lock: threading.Lock | None
    _inflight: int
    _listeners: list[Callable[[], None]] | None  # called once it ends
    _parked: int  # of _inflight, messages waiting in a join for the rest of the job's data
    _watchers: list[Callable[[JobRecord], None]] | None  # told when only parked ones are left
    _on_finish: Callable[[JobRecord], None] | None
    # Set only when used (read with getattr): a timeout was armed for the job; waiting runs
    # the deterministic scheduler.
    timeout_armed: bool
    pump: Callable[[Callable[[], bool], float | None], bool]

    # -- crossing a process boundary -----------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _detached_record,
            (self.job_id, self.flow_id, self.worker_id, dict(self.metadata), self.created_at),
        )

    @property
    def status(self) -> JobStatus:
        """pending, running, or the status the job ended with."""
        final = self.final
        if final is not None:
            return final
        return JobStatus.RUNNING if self.started else JobStatus.PENDING

    # -- accounting (called by routine actors) -----------------------------------------
    def add_inflight(self, count: int) -> None:
        """Count ``count`` new messages of this job (called before they are sent)."""
        lock = self._lock
        if lock is None:
            return
        with lock:
            self._inflight += count

    def message_done(self, count: int = 1) -> None:
        """Count ``count`` handled messages; the job completes when none is left."""
        lock = self._lock
        if lock is None:
            return
        lock.acquire()  # not ``with``: on the per-job path, acquire/release costs half as much
        try:
            left = self._inflight - count
            self._inflight = left
            if left > 0:
                if left != self._parked or self.finished:
                    return
                # every message left waits in a join for data that can no longer come
                stalled = list(self._watchers or ())
            elif self.finished:
                return
            else:
                stalled = None
                # completed (finish() inlined: this runs once for nearly every job)
                self.final = _COMPLETED
                self.finished = True
                self.completed_at = self.clock.wall()
                listeners = self._listeners
                self._lock = self._listeners = self._depths = None
        finally:
            lock.release()
        if stalled is not None:
            for watcher in stalled:
                watcher(self)
            return
        if self._on_finish is not None:
            self._on_finish(self)
        if listeners:
            for listener in listeners:
                listener()

    # -- joins (called by the routine actor whose join holds the message) -----------------
    def park(self, watcher: Callable[[JobRecord], None]) -> bool | None:
        """One in-flight message of this job now waits in a join for the rest of the job's
        data. ``watcher(record)`` is called (on any thread) when the job ends, and whenever
        every message still in flight is parked, i.e. the data awaited can no longer come.

        Returns True if that is already so, False if not, and None if the job has ended
        (nothing is parked then).
        """
        lock = self._lock
        if lock is None:
            return None
        with lock:
            if self.finished:
                return None
            self._parked += 1
            watchers = self._watchers
            if watchers is None:
                watchers = self._watchers = []
            if watcher not in watchers:
                watchers.append(watcher)
                if self._listeners is None:
                    self._listeners = []
                self._listeners.append(lambda: watcher(self))
            return self._inflight == self._parked

    def unpark(self, count: int = 1) -> None:
        """``count`` parked messages left their join (to run, or to be dropped)."""
        lock = self._lock
        if lock is None:
            return
        with lock:
            self._parked -= count

    @property
    def stalled(self) -> bool:
        """The job has not ended and every message it has in flight waits in a join."""
        lock = self._lock
        if lock is None:
            return False
        with lock:
            return not self.finished and 0 < self._inflight == self._parked

    def mark_running(self) -> None:
        """Move a pending job to running (its first message is being handled)."""
        self.started = True

    def finish(self, status: JobStatus, error: str | None = None) -> bool:
        """End the job with ``status``; returns False if it had already ended."""
        lock = self._lock
        if lock is None:
            return False
        with lock:
            if self.finished:
                return False
            self.final = status
            self.finished = True
            if error is not None:
                self.error = error
            self.completed_at = self.clock.wall()
            listeners = self._listeners
            self._lock = self._listeners = self._depths = None
        if self._on_finish is not None:  # the runtime's books first, then whoever waits
            self._on_finish(self)
        if listeners:
            for listener in listeners:
                listener()
        return True

    def fail(
        self, exc: BaseException, routine_id: str | None, action: str = "failed", suffix: str = ""
    ) -> bool:
        """Fail the job with ``exc``; the traceback goes into the job's trace."""
        message = f"{type(exc).__name__}: {exc}{suffix}"
        details = {
            "error": message,
            "traceback": "".join(_traceback.format_exception(exc)),
        }
        self.add_trace(routine_id, action, details)
        return self.finish(JobStatus.FAILED, message)

    def record_error(self, routine_id: str | None, exc: BaseException, handled_as: str) -> None:
        """Record an error the job survives (error strategies CONTINUE and SKIP)."""
        entry = {
            "routine_id": routine_id,
            "error": f"{type(exc).__name__}: {exc}",
            "handled_as": handled_as,
        }
        lock = self._lock
        if lock is None:
            return
        with lock:
            if self.errors is None:
                self.errors = []
            self.errors.append(entry)
        self.add_trace(routine_id, handled_as, entry)

    # -- data and trace ----------------------------------------------------------------
    def merge(self, key: Any, value: Any, depth: int) -> None:
        """Merge one write made at ``depth`` hops from the post (deeper writes win)."""
        lock = self._lock
        if lock is None:  # finished: late writes still land, in arrival order
            with _FIRST_WRITE:
                if self.data is _NO_DATA:
                    self.data = {}
                self.data[key] = value
            return
        with lock:
            depths = self._depths
            if depths is None:
                depths = self._depths = {}
            if depth >= depths.get(key, -1):
                depths[key] = depth
                if self.data is _NO_DATA:
                    self.data = {}
                self.data[key] = value

    def add_trace(self, routine_id: str | None, action: str, details: Any = None) -> None:
        """Append one trace entry (list.append is atomic, so no lock is needed)."""
        self.extend_trace(
            [
                {
                    "timestamp": iso_timestamp(self.clock.wall()),
                    "routine_id": routine_id,
                    "action": action,
                    "details": details,
                }
            ]
        )

    def extend_trace(self, entries: list[dict[str, Any]]) -> None:
        """Append trace entries (made elsewhere, e.g. by a Ray actor), oldest first."""
        trace = self.trace
        if trace is _NO_TRACE:
            with _FIRST_WRITE:
                trace = self.trace
                if trace is _NO_TRACE:
                    trace = self.trace = []
        trace.extend(entries)

    def add_step(self, routine_id: str, started: float, seconds: float, outcome: str) -> None:
        """Record that ``routine_id`` handled a message of the job from ``started`` (a
        ``perf_counter`` reading) for ``seconds``, ending ``outcome`` ("ok" or "raised").

        Keeps the first :data:`MAX_TIMELINE_STEPS` steps and counts the others.
        """
        steps = self.steps
        if len(steps) < MAX_TIMELINE_STEPS:
            steps.append((routine_id, started, seconds, outcome))
        else:
            self.drop_step()

    def drop_step(self) -> None:
        """Count a step the full timeline did not keep."""
        with _FIRST_WRITE:
            self.steps_dropped = getattr(self, "steps_dropped", 0) + 1

    def wall_steps(self) -> list[tuple[str, float, float, str]]:
        """The steps with their start in seconds since the epoch (to cross a process)."""
        return [(r, started + _PERF_TO_WALL, s, o) for r, started, s, o in self.steps]

    def extend_steps(self, steps: list[tuple[str, float, float, str]], dropped: int = 0) -> None:
        """Add steps made elsewhere (by :meth:`wall_steps`, e.g. in a Ray actor)."""
        for routine_id, started, seconds, outcome in steps:
            self.add_step(routine_id, started - _PERF_TO_WALL, seconds, outcome)
        for _ in range(dropped):
            self.drop_step()

    # -- waiting -----------------------------------------------------------------------
    def wait(self, timeout: float | None) -> bool:
        if self.finished:
            return True
        pump = getattr(self, "pump", None)
        if pump is not None:  # deterministic runtime: waiting runs the scheduler
            return pump(lambda: self.finished, timeout)  # type: ignore[no-any-return]
        waiter = threading.Event()
        if not self._listen(waiter.set):
            return True
        return waiter.wait(timeout)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        if not self._listen(callback):
            callback()

    def _listen(self, listener: Callable[[], None]) -> bool:
        """Call ``listener`` once the job ends; False (and no call) if it already has."""
        lock = self._lock
        if lock is None:
            return False
        with lock:
            if self.finished:
                return False
            if self._listeners is None:
                self._listeners = []
            self._listeners.append(listener)
            return True


def new_record(
    job_id: str,
    flow_id: str,
    worker_id: str,
    metadata: Mapping[str, Any] | None,
    clock: Clock,
    on_finish: Callable[[JobRecord], None] | None = None,
) -> JobRecord:
    """A new pending job with one message (the posted one) in flight."""
    record = JobRecord()
    record.job_id = job_id
    record.flow_id = flow_id
    record.worker_id = worker_id
    record.metadata = MappingProxyType(dict(metadata)) if metadata else _NO_METADATA
    record.clock = clock
    record.created_at = clock.wall()
    record.completed_at = None
    record.started = False
    record.final = None
    record.error = None
    record.errors = None
    record.data = _NO_DATA
    record.trace = _NO_TRACE
    record.steps = []
    record.finished = False
    record._depths = None
    record._lock = _RECORD_LOCKS[hash(job_id) & 63]
    record._inflight = 1
    record._listeners = None
    record._parked = 0
    record._watchers = None
    record._on_finish = on_finish
    return record


def _detached_record(
    job_id: str, flow_id: str, worker_id: str, metadata: dict[str, Any], created_at: float
) -> JobRecord:
    """Rebuild a record on the far side of a process boundary (re-attached where possible)."""
    record = new_record(job_id, flow_id, worker_id, metadata, Clock())
    record.created_at = created_at
    record.started = True
    return record


def job_context(record: JobRecord) -> JobContext:
    """The context of a whole job, as ``Runtime.post`` and ``get_job`` return it (made
    without calling ``__init__``: one is made per post)."""
    context: JobContext = _new_object(JobContext)
    context._rec = record
    context._data = None
    context._own = False
    context._depth = 0
    return context


def child_parts(view: JobContext) -> tuple[JobRecord, dict[Any, Any], int]:
    """What a message sent downstream of ``view`` carries (internal; see
    :meth:`JobContext._child_parts`)."""
    return view._child_parts()


def child_view(view: JobContext) -> JobContext:
    """The view a message sent downstream of ``view`` carries (internal)."""
    return view._child()


def view_parts(view: JobContext) -> tuple[JobRecord, dict[Any, Any], int]:
    """The record, data and depth a view carries (internal: for transports that rebuild an
    envelope on the far side of a process boundary)."""
    data = view._data
    return view._rec, dict(view._rec.data) if data is None else data, view._depth


def new_view(record: JobRecord, data: dict[Any, Any] | None, depth: int) -> JobContext:
    """A view of ``record`` carrying ``data`` at ``depth`` (internal: what an envelope
    hands the routine that receives it)."""
    return JobContext._view(record, data, depth)


def joined_view(views: list[JobContext]) -> JobContext:
    """The view a join hands its logic for several messages of one job (internal; see
    :meth:`JobContext._joined`)."""
    return JobContext._joined(views)


def with_record(view: JobContext, record: JobRecord) -> JobContext:
    """A view carrying ``view``'s data and depth for ``record`` (internal: links a copy that
    crossed a process boundary back to the job's record)."""
    return JobContext._view(record, view._data, view._depth)


def record_of(view: JobContext) -> JobRecord:
    """The record behind a view (internal: for hosts that account for a job)."""
    return view._rec


class JobContext:
    """One job as seen by a routine (a copy-on-write view) or by the code that posted it.

    ``metadata`` is read-only and set at ``post()``; ``data`` is a read-only view of the
    job's data, written with :meth:`set_data`. The context returned by ``Runtime.post()`` and
    ``Runtime.get_job()`` shows the merged record of the whole job; inside a routine,
    ``get_current_job()`` returns the view carried by the message being handled, which holds
    everything set upstream of it.
    """

    __slots__ = ("_data", "_depth", "_own", "_rec")

    def __init__(
        self,
        record: JobRecord,
        data: dict[Any, Any] | None = None,
        own: bool = False,
        depth: int = 0,
    ) -> None:
        self._rec = record
        self._data = data
        self._own = own
        self._depth = depth

    @staticmethod
    def _view(record: JobRecord, data: dict[Any, Any] | None, depth: int) -> JobContext:
        """A view not yet owning ``data`` (skips ``__init__``: made once or more per job)."""
        view: JobContext = _new_object(JobContext)
        view._rec = record
        view._data = data
        view._own = False
        view._depth = depth
        return view

    @staticmethod
    def _joined(views: list[JobContext]) -> JobContext:
        """The view for a join of several messages of one job: the data each branch carried,
        merged as the record merges it (the deeper write wins; at equal depth, the later
        message), at the depth of the deepest branch."""
        if len(views) == 1:
            return views[0]
        ordered = sorted(views, key=lambda view: view._depth)  # stable: arrival order at ties
        data: dict[Any, Any] = {}
        for view in ordered:
            data.update(view._rec.data if view._data is None else view._data)
        return JobContext._view(ordered[0]._rec, data, ordered[-1]._depth)

    def _child(self) -> JobContext:
        """A view for a message sent downstream: shares this view's data until a write."""
        return JobContext._view(*self._child_parts())

    def _child_parts(self) -> tuple[JobRecord, dict[Any, Any], int]:
        """What a message sent downstream carries: the record, this view's data (shared
        until one side writes) and the next depth."""
        data = self._data
        if data is None:
            data = dict(self._rec.data)
        self._own = False
        return self._rec, data, self._depth + 1

    # -- identity and status -------------------------------------------------------------
    @property
    def job_id(self) -> str:
        """Unique id of the job."""
        return self._rec.job_id

    @property
    def flow_id(self) -> str:
        """Id of the flow the job runs in."""
        return self._rec.flow_id

    @property
    def worker_id(self) -> str:
        """Id of the worker that runs the job."""
        return self._rec.worker_id

    @property
    def status(self) -> JobStatus:
        """pending, running, completed, failed or cancelled."""
        return self._rec.status

    @property
    def done(self) -> bool:
        """True once the job has completed, failed or been cancelled."""
        return self._rec.finished

    @property
    def error(self) -> str | None:
        """``"ExceptionType: message"`` of the error that failed the job, else None."""
        return self._rec.error

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Errors the job survived (error strategies CONTINUE and SKIP), oldest first."""
        return list(self._rec.errors or ())

    @property
    def created_at(self) -> datetime:
        """When the job was posted (UTC)."""
        return datetime.fromtimestamp(self._rec.created_at, UTC)

    @property
    def completed_at(self) -> datetime | None:
        """When the job finished (UTC), or None while it runs."""
        ts = self._rec.completed_at
        return None if ts is None else datetime.fromtimestamp(ts, UTC)

    # -- metadata and data -------------------------------------------------------------
    @property
    def metadata(self) -> Mapping[str, Any]:
        """Read-only metadata given to ``post()``."""
        return self._rec.metadata

    @property
    def data(self) -> Mapping[Any, Any]:
        """Read-only view of the job's data (write with :meth:`set_data`)."""
        data = self._data
        return MappingProxyType(self._rec.data if data is None else data)

    def get_data(self, key: Any, default: Any = None) -> Any:
        """Return the value stored under ``key``, or ``default``."""
        data = self._data
        if data is None:
            data = self._rec.data
        return data.get(key, default)

    def set_data(self, key: Any, value: Any) -> None:
        """Store ``value`` under ``key``; routines downstream of this one will see it."""
        data = self._data
        if data is None:
            self._rec.merge(key, value, _ROOT_DEPTH)
            return
        if not self._own:
            data = self._data = dict(data)
            self._own = True
        data[key] = value
        self._rec.merge(key, value, self._depth)

    # -- tracing -----------------------------------------------------------------------
    def trace(self, routine_id: str | None, action: str, details: Any = None) -> None:
        """Append an entry (ISO timestamp, routine_id, action, details) to the job's trace."""
        self._rec.add_trace(routine_id, action, details)

    @property
    def trace_log(self) -> list[dict[str, Any]]:
        """A copy of the trace entries, oldest first."""
        return list(self._rec.trace)

    @property
    def timeline(self) -> list[dict[str, Any]]:
        """Which routine handled the job's messages when, and for how long, oldest first.

        One entry per handled message (each try of a retried one): ``routine_id``,
        ``started_at`` (ISO 8601, UTC), ``duration_ms`` and ``outcome`` (``"ok"``, or
        ``"raised"`` when the logic raised). Steps are timed in real time, also on the
        deterministic runtime. At most :data:`MAX_TIMELINE_STEPS` are kept; see
        :attr:`timeline_dropped`.
        """
        steps = sorted(self._rec.steps, key=lambda step: step[1])
        return [
            {
                "routine_id": routine_id,
                "started_at": iso_timestamp(started + _PERF_TO_WALL),
                "duration_ms": seconds * 1000,
                "outcome": outcome,
            }
            for routine_id, started, seconds, outcome in steps
        ]

    @property
    def timeline_dropped(self) -> int:
        """How many handling steps were not kept in :attr:`timeline` (it was full)."""
        return int(getattr(self._rec, "steps_dropped", 0))

    # -- waiting -----------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finishes; returns False if ``timeout`` passed first.

        ``timeout`` is None (no limit) or a finite number of seconds >= 0 and at most
        ``threading.TIMEOUT_MAX``; anything else raises ``InvalidDurationError``.
        """
        if timeout is not None:
            check_seconds("JobContext.wait", "timeout", timeout)
        return self._rec.wait(timeout)

    def __await__(self) -> Generator[Any, None, JobContext]:
        """``await job`` resolves (to the job) when it finishes, without blocking the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def on_done() -> None:
            if loop.is_closed():
                return
            loop.call_soon_threadsafe(resolve)

        self._rec.add_done_callback(on_done)
        yield from future.__await__()
        return self

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, flow_id={self.flow_id!r}, "
            f"status={self.status.value!r})"
        )
