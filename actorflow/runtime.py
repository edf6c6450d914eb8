"""Runtime: starts workers, posts jobs, tracks them until they end, shuts everything down."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import cloudpickle
from loguru import logger

from actorflow._clock import Clock, SystemClock
from actorflow._durations import check_seconds
from actorflow._lease import DEFAULT_LEASE_SECONDS, new_owner_id
from actorflow.backends.base import Backend, BackendWorker
from actorflow.backends.threads import ThreadBackend
from actorflow.engine.envelope import Envelope, new_envelope
from actorflow.engine.job_book import JobBook
from actorflow.engine.metrics import runtime_report
from actorflow.engine.recorder import Recorder
from actorflow.engine.services import WorkerServices
from actorflow.engine.timers import TimerService
from actorflow.errors import (
    ConfigurationError,
    FlowValidationError,
    RecordingNotFoundError,
    RuntimeClosedError,
    SerializationError,
    WorkerFailedError,
)
from actorflow.faults import FaultInjector, FaultPlan
from actorflow.flow import Flow
from actorflow.job import EMPTY_DATA, JobContext, JobRecord, JobStatus, job_context, new_record
from actorflow.recording import RecordSettings
from actorflow.registry import FlowRegistry
from actorflow.state_limits import StateLimits
from actorflow.worker import WorkerState

if TYPE_CHECKING:
    from actorflow.testing.probe import Probe
    from actorflow.web import WebServer

__all__ = ["Runtime"]

DEFAULT_JOB_RETENTION = 10_000
DEFAULT_POST_PACING = 128
CANCEL_SETTLE_SECONDS = 10.0  # how long cancel_job waits for remote routines to learn of it
_NEVER = sys.maxsize
_sched_yield = getattr(os, "sched_yield", lambda: time.sleep(0))  # not on Windows


_COMPLETED = JobStatus.COMPLETED
_new_object = object.__new__


def _yield_interpreter() -> None:
    """Release the GIL once, so a routine actor waiting for it runs (its batch) first.

    ``os.sched_yield`` releases the GIL around the system call and costs about a
    microsecond when nobody waits; ``time.sleep(0)`` would add the kernel's timer slack
    (some 50 microseconds) to every paced post.
    """
    _sched_yield()


OVERFLOW_POLICIES = ("block", "raise", "drop_oldest")


def _check_overflow(overflow: Any) -> None:
    if overflow not in OVERFLOW_POLICIES:
        raise ConfigurationError(
            f"unknown overflow policy {overflow!r} (choose {', '.join(OVERFLOW_POLICIES)})"
        )


def _no_such_target(worker: Any, flow_id: str, routine_id: str, slot: str) -> Exception:
    """The error for a post to a routine or slot the flow does not have."""
    if routine_id not in worker.routine_ids:
        return FlowValidationError(
            f"flow {flow_id!r} has no routine {routine_id!r} "
            f"(routines: {sorted(worker.routine_ids)})"
        )
    return FlowValidationError(
        f"routine {routine_id!r} of flow {flow_id!r} has no slot {slot!r} "
        f"(slots: {sorted(worker.slots[routine_id]) or 'none'})"
    )


def _check_worker_running(worker: BackendWorker) -> None:
    if worker.status == "failed":
        raise WorkerFailedError(worker.failure or f"worker {worker.worker_id!r} failed")
    if worker.status != "running":
        raise RuntimeClosedError(f"worker {worker.worker_id!r} is {worker.status}")


_SIGNAL_SHUTDOWN_THREAD = "actorflow-signal-shutdown"


def _waited_for_by_shutdown(thread: threading.Thread) -> bool:
    """Whether a shutdown may wait for ``thread`` to end (an actor, timer or monitor thread):
    a ``shutdown`` call on it must not wait for the shutdown under way."""
    return thread.name.startswith("actorflow-") and thread.name != _SIGNAL_SHUTDOWN_THREAD


def _recorder_for(record: Any, services: WorkerServices) -> Recorder | None:
    """The recorder ``Runtime(record=...)`` asks for, or None."""
    if isinstance(record, Recorder):
        return record
    if record is False or record is None:
        return None
    if record is True:
        return Recorder(RecordSettings(), lambda: services.now)
    if isinstance(record, RecordSettings):
        return Recorder(record, lambda: services.now)
    raise TypeError(f"record must be a bool or a RecordSettings, got {type(record).__name__}")


def _strict_default() -> bool:
    return os.environ.get("ACTORFLOW_STRICT", "").lower() in ("1", "true", "yes", "on")


class Runtime:
    """Runs flows: one worker per running flow instance, one actor per routine.

    Use it as a context manager (``with Runtime() as runtime: ...``, or ``async with`` on an
    event loop); leaving the block shuts it down after in-flight jobs finish.

    Args:
        thread_pool_size: upper bound on routine actor threads *per worker*. Every routine
            runs on its own actor thread (``concurrency`` threads for a routine that asks for
            more; the async routines of a worker share one event loop thread), so this caps
            how many a worker may start; a flow that needs more is refused at
            ``exec``/``post`` with ``ConfigurationError``. None (default) means no cap.
        strict: serialize every envelope (payload and JobContext) with cloudpickle when it is
            sent, exactly as if it crossed a process boundary. Routines then never share
            mutable objects, and an unpicklable payload fails at the ``emit`` (or ``post``)
            with an error naming the routine, event and slot. About 4x slower: meant for tests.
            Defaults to the ``ACTORFLOW_STRICT`` environment variable (off when unset).
        job_retention: how many *finished* jobs stay queryable with ``get_job``/``list_jobs``;
            older ones are forgotten, oldest first. Running jobs are always kept.
        registry: where flow ids are looked up (default: ``FlowRegistry.get_instance()``).
        state_limits: default :class:`StateLimits` of every worker's state.
        state_store: a store from ``actorflow.store`` that each worker's supervisor writes its
            state through to (under ``worker:<worker_id>:<key>``) before acknowledging a
            change; ``exec(..., restore=True)`` reads it back. None keeps state in memory only.
            A worker owns its id in the store through a lease (``worker:<worker_id>``), so two
            runtimes never run one worker id at once; see ``exec``.
        lease_seconds: how long a worker's lease in the ``state_store`` lasts unless renewed
            (default 15). The runtime renews it every third of that while the worker runs and
            releases it when the worker stops; after a crash, another runtime can start the
            worker once this much time has passed (or at once with ``take_over=True``).
        overflow: what ``post`` does when the target routine already has ``max_queue_length``
            messages waiting (the slot's bound): ``"block"`` waits up to ``post_timeout``
            seconds for room and then raises ``QueueFullError``; ``"raise"`` raises at once;
            ``"drop_oldest"`` drops the oldest waiting message, failing its job with
            ``QueueFullError``. Per worker with ``exec(..., overflow=...)``. Every few posts
            (thread backend) ``post`` also counts, for each routine that receives emits, what
            the messages waiting in the worker's mailboxes may put into its mailbox (each
            weighted by its paths there): from half that routine's bound on (the other half
            is room for what the jobs already posted emit), ``"block"`` waits for fewer and
            ``"raise"`` refuses the post, so a burst of posts waits at ``post`` instead of
            failing its jobs at a full mailbox inside the flow.
        post_pacing: when ``post`` finds at least this many messages already waiting for the
            target routine, it lets the routine actors run first (it yields the interpreter
            once; it never blocks). A producer faster than its flow then keeps a short backlog
            instead of piling up thousands of messages, which costs memory and garbage
            collection time. None turns pacing off. Thread backend only.
        dead_letter_history: how many dead letters ``dead_letters()`` keeps (counts are exact).
        deterministic: run no actor thread; one seeded scheduler delivers every message on the
            calling thread, choosing the next mailbox with ``random.Random(seed)``, and time is
            virtual (``advance``, ``run_until_idle``). The same seed replays the same run.
            See ``actorflow.testing``.
        seed: the scheduler's seed (deterministic mode; default 0).
        faults: a ``FaultPlan`` (``actorflow.faults``) applied to every envelope.
        state_serializer: how WorkerState values are encoded: ``"json"`` (default; strict,
            refuses what JSON cannot hold faithfully), or ``"pickle"``/``"cloudpickle"`` for
            trusted deployments only (unpickling runs code).
        backend: ``"threads"`` (default: every actor on a thread of this process) or ``"ray"``
            (every routine and supervisor a Ray actor; see ``actorflow.backends.ray``).
        ray_address: with ``backend="ray"``: None starts a local Ray (stopped at shutdown);
            ``"auto"`` or ``"ray://host:port"`` joins a running cluster and leaves it running.
        tracing: carry the OpenTelemetry trace context of ``post``'s caller in every envelope
            and run each routine execution in a span (needs ``opentelemetry-api``; thread
            backend). Off by default: it costs a span per message.
        record: record what each routine's logic read and did, job by job, to export with
            :meth:`recording` and replay with ``actorflow.testing.replay``: ``True`` with the
            default bounds, or a :class:`~actorflow.recording.RecordSettings`. Off by default:
            it copies each message's inputs and outputs as JSON.
    """

    def __init__(
        self,
        thread_pool_size: int | None = None,
        *,
        strict: bool | None = None,
        job_retention: int = DEFAULT_JOB_RETENTION,
        registry: FlowRegistry | None = None,
        clock: Clock | None = None,
        state_limits: StateLimits | None = None,
        state_store: Any = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        overflow: str = "block",
        post_timeout: float = 5.0,
        post_pacing: int | None = DEFAULT_POST_PACING,
        dead_letter_history: int = 1000,
        deterministic: bool = False,
        seed: int | None = None,
        faults: FaultPlan | None = None,
        state_serializer: str = "json",
        backend: str = "threads",
        ray_address: str | None = None,
        tracing: bool = False,
        record: bool | RecordSettings | Recorder = False,
    ) -> None:
        if thread_pool_size is not None and (
            isinstance(thread_pool_size, bool)
            or not isinstance(thread_pool_size, int)
            or thread_pool_size < 1
        ):
            raise ConfigurationError(
                f"thread_pool_size must be a positive int, got {thread_pool_size!r}"
            )
        if (
            isinstance(job_retention, bool)
            or not isinstance(job_retention, int)
            or job_retention < 0
        ):
            raise ConfigurationError(f"job_retention must be an int >= 0, got {job_retention!r}")
        if state_limits is not None and not isinstance(state_limits, StateLimits):
            raise TypeError("state_limits must be a StateLimits")
        _check_overflow(overflow)
        post_timeout = check_seconds("Runtime", "post_timeout", post_timeout)
        if post_pacing is not None and (
            isinstance(post_pacing, bool) or not isinstance(post_pacing, int) or post_pacing < 1
        ):
            raise ConfigurationError(
                f"post_pacing must be a positive int or None, got {post_pacing!r}"
            )
        self.overflow = overflow
        self.post_timeout = float(post_timeout)
        self.state_limits = state_limits
        self.state_store = state_store
        lease = check_seconds("Runtime", "lease_seconds", lease_seconds, allow_zero=False)
        assert lease is not None
        self.lease_seconds = lease
        self.lease_owner = new_owner_id()  # this runtime in its workers' leases
        from actorflow.store.serializers import get_serializer  # noqa: PLC0415

        self.state_serializer = get_serializer(state_serializer)
        self.thread_pool_size = thread_pool_size
        self.strict = _strict_default() if strict is None else bool(strict)
        self.job_retention = job_retention
        self._registry = registry or FlowRegistry.get_instance()
        self.deterministic = bool(deterministic)
        self.seed = seed
        self._dispatcher: Any = None
        self._timers: Any
        if self.deterministic:
            from actorflow.testing._scheduler import DeterministicDispatcher  # noqa: PLC0415
            from actorflow.testing._virtual_time import VirtualClock, VirtualTimers  # noqa: PLC0415

            if clock is not None:
                raise ConfigurationError("a deterministic runtime keeps its own virtual clock")
            self.seed = 0 if seed is None else seed
            virtual = VirtualClock()
            self._clock: Clock = virtual
            self._timers = VirtualTimers(virtual)
            self._dispatcher = DeterministicDispatcher(self.seed, virtual, self._timers)
        elif seed is not None:
            raise ConfigurationError("seed= only applies to Runtime(deterministic=True)")
        else:
            self._clock = clock or SystemClock()
            self._timers = TimerService(self._clock)
        if faults is not None and not isinstance(faults, FaultPlan):
            raise TypeError(f"faults must be a FaultPlan, got {type(faults).__name__}")
        if backend not in ("threads", "ray"):
            raise ConfigurationError(f"unknown backend {backend!r} (choose 'threads' or 'ray')")
        if backend == "ray" and self.deterministic:
            raise ConfigurationError("deterministic runs need the thread backend")
        if backend != "ray" and ray_address is not None:
            raise ConfigurationError("ray_address= only applies to backend='ray'")
        self.faults = faults
        self.backend = backend
        self._started_at = self._clock.monotonic()
        self._book = JobBook(job_retention, dead_letter_history)
        self._probes: dict[tuple[str, str], list[Probe]] = {}
        self._services = services = WorkerServices(
            book=self._book,
            clock=self._clock,
            timers=self._timers,
            strict=self.strict,
            started_at=self._started_at,
            dispatcher=self._dispatcher,
            state_store=state_store,
            state_serializer=self.state_serializer,
            state_limits=state_limits,
            lease_owner=self.lease_owner,
            lease_seconds=self.lease_seconds,
            probes=self._probes,
        )
        self._injector = None if faults is None else FaultInjector(faults, services)
        services.injector = self._injector
        self._recorder = _recorder_for(record, services)
        services.recorder = self._recorder
        self._tracing: Any = None
        if tracing:
            from actorflow._tracing import Tracing  # noqa: PLC0415

            self._tracing = services.tracing = Tracing()
        self._backend: Backend
        if backend == "ray":
            from actorflow.backends.ray import RayBackend  # noqa: PLC0415

            self._backend = RayBackend(services, ray_address)
        else:
            self._backend = ThreadBackend(services)
        self._lock = threading.Lock()
        self._closed = False
        self._shutdown_done: threading.Event | None = None  # set when a shutdown call ends
        self._shutdown_thread: threading.Thread | None = None  # the thread shutting down
        self._shutdown_result: bool | None = None
        self._shutdown_deadline: float | None = None  # when the shutdown cancels jobs
        self._workers: dict[str, BackendWorker] = {}
        self._default_worker: dict[str, BackendWorker] = {}
        self._worker_seq = itertools.count(1)
        self._job_seq = itertools.count(1)
        self._job_prefix = f"s{self.seed}" if self.deterministic else os.urandom(4).hex()
        self._job_id_head = f"job-{self._job_prefix}-"  # joining two parts costs half of four
        self._on_finish = self._book.ended
        # a post that needs no virtual clock, pickling or trace context (the common case)
        self._plain = not (self.deterministic or self.strict or self._tracing is not None)
        # deterministic runs have no actor thread to yield to; Ray queues its own messages
        self._pacing = (
            _NEVER if post_pacing is None or self.deterministic or backend == "ray" else post_pacing
        )
        self._log = logger.bind(runtime=self._job_prefix)

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown(wait=exc_type is None)

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Shut down (as ``__exit__``) on a thread of its own: the event loop runs on."""
        await asyncio.to_thread(self.shutdown, wait=exc_type is None)

    # -- workers -----------------------------------------------------------------------
    def exec(
        self,
        flow_id: str,
        worker_id: str | None = None,
        *,
        restore: bool = False,
        state_limits: StateLimits | None = None,
        overflow: str | None = None,
        discard_stored: bool = False,
        take_over: bool = False,
    ) -> WorkerState:
        """Start a worker of ``flow_id`` and return its WorkerState (full access).

        The first worker started for a flow becomes its default worker for ``post``.
        ``state_limits`` and ``overflow`` override the runtime's defaults for this worker.

        With a ``state_store``, the worker's id is owned by one runtime at a time: the start
        takes the worker's lease in the store and raises ``WorkerLeaseHeldError`` if another
        runtime holds it (``take_over=True`` takes it anyway; that runtime's state calls then
        raise ``WorkerLeaseLostError``). A start never deletes stored state by accident:
        ``restore=True`` starts with the state last acknowledged for ``worker_id``;
        ``discard_stored=True`` deletes it and starts empty; without either, a worker id with
        stored state raises ``WorkerStateExistsError`` (one with nothing stored starts empty).
        """
        if overflow is not None:
            _check_overflow(overflow)
        if restore and (worker_id is None or self.state_store is None):
            raise ConfigurationError(
                "restore=True needs a worker_id and a Runtime(state_store=...)"
            )
        for name, given in (("discard_stored", discard_stored), ("take_over", take_over)):
            if given and self.state_store is None:
                raise ConfigurationError(f"{name}=True needs a Runtime(state_store=...)")
        if restore and discard_stored:
            raise ConfigurationError(
                "restore=True and discard_stored=True contradict each other: restore continues "
                "from the stored state, discard_stored deletes it"
            )
        if state_limits is not None and not isinstance(state_limits, StateLimits):
            raise TypeError("state_limits must be a StateLimits")
        with self._lock:
            self._check_open()
            worker = self._start_worker(
                flow_id,
                worker_id,
                restore,
                state_limits,
                overflow,
                bool(discard_stored),
                bool(take_over),
            )
        return WorkerState(worker)

    def _start_worker(
        self,
        flow_id: str,
        worker_id: str | None,
        restore: bool = False,
        state_limits: StateLimits | None = None,
        overflow: str | None = None,
        discard: bool = False,
        take_over: bool = False,
    ) -> BackendWorker:
        flow = self._registry.require(flow_id)
        if worker_id is None:
            worker_id = f"{flow_id}-worker-{next(self._worker_seq)}"
        elif not isinstance(worker_id, str) or not worker_id:
            raise TypeError("worker_id must be a non-empty str")
        existing = self._workers.get(worker_id)
        if existing is not None:
            if existing.status == "running":
                raise ValueError(f"a worker {worker_id!r} is already running")
            existing.stop()  # a failed worker is replaced (its actors are stopped first)
            if self._default_worker.get(existing.flow_id) is existing:
                del self._default_worker[existing.flow_id]
        limit = self.thread_pool_size
        if limit is not None:
            routines = flow.routines.values()
            needed = sum(r.concurrency for r in routines if not r.is_async)
            needed += any(r.is_async for r in routines)  # their event loop thread
            if needed > limit:
                raise ConfigurationError(
                    f"flow {flow_id!r} needs {needed} routine actor threads per worker; "
                    f"thread_pool_size={limit}"
                )
        worker = self._backend.new_worker(flow, worker_id, state_limits, overflow or self.overflow)
        worker.start(restore, discard, take_over)
        self._workers[worker_id] = worker
        default = self._default_worker.get(flow_id)
        if default is None or default.status != "running":
            self._default_worker[flow_id] = worker
        return worker

    def get_worker(self, worker_id: str) -> WorkerState | None:
        """The WorkerState of a running worker, or None."""
        worker = self._workers.get(worker_id)
        return None if worker is None else WorkerState(worker)

    def flow_of(self, worker_id: str) -> Flow | None:
        """The flow that worker ``worker_id`` runs, or None if there is no such worker."""
        worker = self._workers.get(worker_id)
        return None if worker is None else worker.flow

    def list_workers(self) -> list[WorkerState]:
        """WorkerStates of every worker started by this runtime, in start order."""
        return [WorkerState(worker) for worker in list(self._workers.values())]

    # -- jobs --------------------------------------------------------------------------
    def post(
        self,
        flow_id: str,
        routine_id: str,
        slot: str,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        job_id: str | None = None,
        timeout: float | None = None,
    ) -> tuple[WorkerState, JobContext]:
        """Start a job: deliver ``data`` to ``routine_id``'s ``slot``.

        Uses ``worker_id``'s worker, else the flow's default worker (starting one if the
        flow has none). Returns the worker's state and the job's context, which shows the
        merged data and trace of the whole job and can be waited on (``job.wait()`` or
        ``await job``). Bad input raises at once and posts nothing.

        ``timeout`` (or the flow's ``set_job_timeout``) fails a job still unfinished after that
        many seconds with ``JobTimeoutError``; its later messages become dead letters. A timeout
        that is not a finite number of seconds > 0 and at most ``threading.TIMEOUT_MAX`` raises
        ``InvalidDurationError`` (``TypeError`` if it is no number). When the routine's mailbox
        is full, the worker's overflow policy applies (see ``Runtime``).
        """
        if timeout is not None:
            timeout = check_seconds("post", "timeout", timeout, allow_zero=False)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        worker = None if worker_id is not None else self._default_worker.get(flow_id)
        if worker is None or worker.status != "running" or self._closed:
            worker = self._worker_for(flow_id, worker_id)
        slots = worker.post_targets.get(routine_id)
        target = None if slots is None else slots.get(slot)
        if target is None:
            raise _no_such_target(worker, flow_id, routine_id, slot)
        if job_id is None:
            job_id = f"{self._job_id_head}{next(self._job_seq)}"
        elif not isinstance(job_id, str) or not job_id:
            raise TypeError("job_id must be a non-empty str")
        elif job_id in self._book.jobs:
            raise ValueError(f"a job {job_id!r} already exists")
        if next(worker.admit_tick):  # every few posts, the worker's backlog (see overflow)
            backlog = worker.backlog()
            if backlog is not None:
                worker.admit(backlog[0], backlog[1], self.post_timeout)
        record = new_record(
            job_id, flow_id, worker.worker_id, metadata, self._clock, self._on_finish
        )
        mailbox, limit = target
        if self._plain:  # new_envelope(routine_id, slot, data, record, EMPTY_DATA, 1), inlined
            envelope = Envelope()
            envelope.target = routine_id
            envelope.slot = slot
            envelope.payload = data
            envelope.rec = record
            envelope.data = EMPTY_DATA
            envelope.depth = 1
            envelope.blob = envelope.headers = None
        else:
            envelope = self._special_envelope(record, routine_id, slot, data)
        waiting = mailbox.qsize()
        if waiting >= limit:
            worker.make_room(routine_id, limit, self.post_timeout)
        self._book.add(record)
        if self._closed:  # shutdown began meanwhile and may not have seen this job
            record.finish(JobStatus.CANCELLED, "cancelled: runtime shut down")
            self._check_open()
        if timeout is None:
            timeout = worker.flow.job_timeout
        if timeout is not None:
            self._arm_timeout(record, timeout)
        if self._recorder is not None:
            self._recorder.posted(
                job_id, flow_id, worker.worker_id, record.metadata, routine_id, slot, data
            )
        if self._injector is not None and self.backend != "ray":  # Ray's actors apply it
            self._injector.send(worker, None, None, routine_id, slot, envelope, mailbox.put)
        else:
            mailbox.put(envelope)
        if waiting >= self._pacing:
            _yield_interpreter()  # let the routine actors take (at least) a turn
        return worker.handle, job_context(record)

    async def post_async(
        self,
        flow_id: str,
        routine_id: str,
        slot: str,
        data: Any,
        metadata: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        job_id: str | None = None,
        timeout: float | None = None,
    ) -> tuple[WorkerState, JobContext]:
        """:meth:`post` for an event loop: same parameters, same result, and where ``post``
        would block for room in a full mailbox (``overflow="block"``) this awaits it, so the
        loop runs on. ``await job`` then waits for the job without blocking the loop either.
        """
        worker = None if worker_id is not None else self._default_worker.get(flow_id)
        if worker is None or worker.status != "running" or self._closed:
            worker = self._worker_for(flow_id, worker_id)
        slots = worker.post_targets.get(routine_id)
        target = None if slots is None else slots.get(slot)
        if target is not None and worker.overflow == "block":
            mailbox, limit = target
            if mailbox.qsize() >= limit:
                await worker.wait_for_room(routine_id, limit, self.post_timeout)
            backlog = worker.backlog()  # awaited here, so that post finds none
            if backlog is not None:
                await worker.wait_for_room(*backlog, self.post_timeout, backlog=True)
        return self.post(flow_id, routine_id, slot, data, metadata, worker_id, job_id, timeout)

    def _special_envelope(
        self, record: JobRecord, routine_id: str, slot: str, data: Any
    ) -> Envelope:
        """The first envelope of a job when the runtime is deterministic, strict or traced."""
        if self.deterministic:
            record.pump = self._pump
        if self.strict:
            try:
                payload_blob = cloudpickle.dumps(data)
            except Exception as exc:
                raise SerializationError(
                    f"post to {routine_id}.{slot}: the data cannot cross a process boundary "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            view = JobContext(record, EMPTY_DATA, False, 1)
            try:
                view_blob = cloudpickle.dumps(view)
            except Exception as exc:
                raise SerializationError(
                    f"post to {routine_id}.{slot}: the job's metadata cannot cross a process "
                    f"boundary ({type(exc).__name__}: {exc})"
                ) from exc
            envelope = new_envelope(routine_id, slot, payload_blob, None, blob=view_blob)
        else:
            envelope = new_envelope(routine_id, slot, data, record, EMPTY_DATA, 1)
        if self._tracing is not None:
            envelope.headers = self._tracing.inject()
        return envelope

    def _arm_timeout(self, record: JobRecord, seconds: float) -> None:
        self._services.arm_timeout(record, seconds)

    def _worker_for(self, flow_id: str, worker_id: str | None) -> BackendWorker:
        if worker_id is not None:
            worker = self._workers.get(worker_id)
            if worker is None:
                raise ValueError(f"no worker {worker_id!r} is running (start it with exec)")
            if worker.flow_id != flow_id:
                raise ValueError(
                    f"worker {worker_id!r} runs flow {worker.flow_id!r}, not {flow_id!r}"
                )
            self._check_open()
            return worker
        worker = self._default_worker.get(flow_id)
        if worker is not None and worker.status == "running":
            self._check_open()
            return worker
        with self._lock:
            self._check_open()
            worker = self._default_worker.get(flow_id)
            if worker is None:
                worker = self._start_worker(flow_id, None)
            _check_worker_running(worker)
            return worker

    def get_job(self, job_id: str) -> JobContext | None:
        """The job's context (merged record), or None if unknown or no longer retained."""
        record = self._book.jobs.get(job_id)
        return None if record is None else JobContext(record)

    def list_jobs(self, status: str | JobStatus | None = None) -> list[JobContext]:
        """Known jobs (running and retained), oldest first, optionally of one status."""
        if status is not None:
            status = JobStatus(status)
        records = list(self._book.jobs.values())
        return [JobContext(r) for r in records if status is None or r.status == status]

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a job; no routine runs for it afterwards. Returns False if it had ended.

        On Ray this returns once every routine actor of the job's worker knows the job ended
        (at most ``CANCEL_SETTLE_SECONDS``): what a routine emits for it afterwards becomes a
        dead letter, as on threads.
        """
        record = self._book.jobs.get(job_id)
        if record is None:
            return False
        if not record.finish(JobStatus.CANCELLED, "cancelled"):
            return False
        self._backend.settle_end(record, CANCEL_SETTLE_SECONDS)
        return True

    def wait_until_all_jobs_finished(self, timeout: float | None = None) -> bool:
        """Block until no job is pending or running; False if ``timeout`` passed first.

        In deterministic mode this runs the scheduler, advancing virtual time through pending
        timers (up to ``timeout`` virtual seconds), instead of blocking. A ``timeout`` that is
        not None or a finite number of seconds >= 0 raises ``InvalidDurationError``.
        """
        timeout = check_seconds("wait_until_all_jobs_finished", "timeout", timeout, allow_none=True)
        if self.deterministic:
            return self._pump(lambda: not self._book.active, timeout)
        return self._book.wait_idle(timeout)

    # -- deterministic mode ------------------------------------------------------------
    def _require_deterministic(self, what: str) -> Any:
        if not self.deterministic:
            raise RuntimeError(f"{what} needs Runtime(deterministic=True)")
        return self._dispatcher

    def run_until_idle(self, max_messages: int = 1_000_000) -> int:
        """Deliver messages (and timers already due) until nothing is left; returns how many.

        Deterministic mode only. Virtual time does not move.
        """
        dispatcher = self._require_deterministic("run_until_idle")
        delivered = 0
        while True:
            while dispatcher.step():
                delivered += 1
                if delivered >= max_messages:
                    raise RuntimeError(f"still busy after {max_messages} messages (a loop?)")
            if not self._timers.fire_due():
                return delivered

    def advance(self, seconds: float) -> int:
        """Move virtual time forward by ``seconds``, firing timers in order and delivering the
        messages they cause; returns how many messages were delivered."""
        self._require_deterministic("advance")
        seconds = check_seconds("advance", "seconds", seconds)
        clock = self._clock
        target = clock.monotonic() + seconds
        delivered = self.run_until_idle()
        while True:
            deadline = self._timers.next_deadline()
            if deadline is None or deadline > target:
                break
            clock.now = max(clock.now, deadline)  # type: ignore[attr-defined]
            delivered += self.run_until_idle()
        clock.now = target  # type: ignore[attr-defined]
        return delivered + self.run_until_idle()

    @property
    def now(self) -> float:
        """Seconds since the runtime started (virtual time in deterministic mode)."""
        return self._clock.monotonic() - self._started_at

    def delivery_log(self) -> list[tuple[str, str, str | None, str | None]]:
        """(worker, routine, slot, job) of every envelope delivered, in order (deterministic)."""
        return list(self._require_deterministic("delivery_log").deliveries)

    def _pump(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """Deterministic waiting: deliver and advance virtual time until ``until()`` holds."""
        clock = self._clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while True:
            self.run_until_idle()
            if until():
                return True
            next_timer = self._timers.next_deadline()
            if next_timer is None or (deadline is not None and next_timer > deadline):
                if deadline is not None:
                    clock.now = max(clock.now, deadline)  # type: ignore[attr-defined]
                return until()
            clock.now = max(clock.now, next_timer)  # type: ignore[attr-defined]

    def probe(self, routine_id: str, event: str) -> Probe:
        """Watch every ``emit(event, ...)`` of ``routine_id`` (see ``actorflow.testing``)."""
        from actorflow.testing.probe import Probe  # noqa: PLC0415

        if not isinstance(routine_id, str) or not isinstance(event, str):
            raise TypeError("probe(routine_id, event) takes two str")
        if not self._backend.supports_probes:
            raise ConfigurationError(
                "probes watch emits in this process: they need the thread backend "
                "(on Ray, assert on job data, worker state, dead letters or metrics)"
            )
        probe = Probe(routine_id, event, self._pump if self.deterministic else None)
        self._probes.setdefault((routine_id, event), []).append(probe)
        return probe

    def metrics(self) -> dict[str, Any]:
        """Counters of the whole runtime, JSON-ready.

        ``jobs``: active and finished jobs by status (exact, not limited by retention);
        ``workers``: per worker its flow, status, actor restarts, unfinished jobs (``active``)
        and finished jobs by status;
        ``routines``: per worker and routine the messages handled, failed and retried, the
        mailbox depth and a histogram of handling times (seconds; bucket upper bounds, the
        last one ``+Inf``); ``dead_letters``: total and by reason; ``timers``:
        ``callback_errors``, how many callbacks of the runtime's timers (job timeouts, retry
        backoffs, batch timeouts, restart backoffs, fault delays) and of the backend's (on Ray:
        the replay and progress checks after a routine actor's process died) raised; each was
        logged and the timers went on.
        """
        dead = self._book.dead_letters
        return runtime_report(
            list(self._workers.values()),
            active_jobs=len(self._book.active),
            active_by_worker=Counter(record.worker_id for record in self._book.unfinished()),
            finished=self._book.counts(),
            dead_letters_total=dead.total,
            dead_letters_by_reason=dead.counts(),
            timer_callback_errors=self._timers.callback_errors
            + self._backend.timer_callback_errors(),
        )

    def placement(self) -> dict[str, dict[str, list[str]]]:
        """Where the routine actors run on Ray: per worker and routine, the id of the Ray
        node of each actor (as it said when it started, or when Ray restarted it elsewhere).
        Empty lists on the thread backend. Unlike :meth:`metrics`, this asks no actor."""
        return {
            worker_id: {
                routine_id: worker.placement(routine_id) for routine_id in worker.flow.routines
            }
            for worker_id, worker in list(self._workers.items())
        }

    def processes(self) -> dict[str, dict[str, Any]]:
        """Where each worker's actors run: per worker, ``{"state_owner": {"pid", "node"},
        "routines": {routine_id: [{"pid", "node"}, ...]}}``, one entry per actor. On Ray each
        is asked (a process Ray restarted answers with its new id); on threads every actor is
        a thread of this process (``node`` None). For fault experiments that kill a process
        (``actorflow.cluster_experiments``)."""
        return {worker_id: worker.processes() for worker_id, worker in list(self._workers.items())}

    def serve_monitor(
        self, port: int = 0, host: str = "127.0.0.1", token: str | None = None
    ) -> WebServer:
        """Serve this runtime's web app (:func:`actorflow.web.create_app`) and return its server.

        The monitor page at ``/``, the JSON API under ``/api/``, server-sent events at
        ``/api/events`` and Prometheus text at ``/metrics``, run by uvicorn from a daemon thread
        named ``actorflow-monitor``. Listens on ``host:port`` (loopback by default; ``port=0``
        picks a free port, read it from ``.port`` or ``.url``); answers as soon as it returns.
        ``token`` turns on job submission and cancellation (``Authorization: Bearer
        <token>``); without one the app is read-only. ``shutdown()`` stops it; so does the
        server's ``close()``. One at a time: serving again while one runs raises
        ``ConfigurationError``. Needs the ``web`` extra (``pip install 'actorflow[web]'``).
        """
        from actorflow.web import WebServer, create_app  # noqa: PLC0415

        with self._lock:
            self._check_open()
            current = getattr(self, "_monitor", None)
            if current is not None and current.running:
                raise ConfigurationError(f"a monitor already serves at {current.url}")
            app = create_app(self, token)
            self._monitor = WebServer(
                app,
                port,
                host,
                thread_name="actorflow-monitor",
                on_close=app.state.actorflow_close,
            )
            return self._monitor

    def fault_log(self) -> list[dict[str, Any]]:
        """Every fault injected so far (JSON-ready dicts: rule, fault, job, routine, ordinal,
        time in seconds since the runtime started); empty without a fault plan."""
        return [] if self._injector is None else self._injector.log()

    def recording(self, job_id: str) -> dict[str, Any]:
        """One job's recording (``Runtime(record=...)``) as a JSON-safe dict: the job's post,
        metadata, outcome and one step per run of a routine's logic (its inputs, WorkerState
        calls, emits, job writes and exception), in the order they ran. Write it with
        ``json.dump`` and replay it with ``actorflow.testing.replay`` or ``actorflow replay``;
        see ``actorflow.recording`` for how values are kept.

        Raises ``RecordingNotFoundError`` if the runtime records nothing or keeps no recording
        of ``job_id`` (unknown, or forgotten beyond ``RecordSettings.max_jobs``).
        """
        if self._recorder is None:
            raise RecordingNotFoundError(
                f"no recording of job {job_id!r}: this runtime records nothing "
                "(Runtime(record=True) turns recording on)"
            )
        return self._recorder.export(job_id, self._book.record(job_id))

    def dead_letters(self) -> list[dict[str, Any]]:
        """Recent messages that were not run (job, worker, routine, slot, reason)."""
        return self._book.dead_letters.entries()

    def dead_letter_counts(self) -> dict[str, int]:
        """How many dead letters there were, by reason (exact, not bounded)."""
        return self._book.dead_letters.counts()

    # -- shutdown ----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once shutdown has begun."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError("the runtime has been shut down; it accepts no more work")

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> bool:
        """Stop accepting work, finish or cancel jobs, stop every actor and thread.

        With ``wait=True`` queued batch data is flushed and in-flight jobs may finish for up to
        ``timeout`` seconds (None: no limit); jobs still unfinished then (or at once with
        ``wait=False``) end ``cancelled``. Actors stop in reverse start order and run their
        ``on_stop``. When this returns no actorflow thread is alive. Returns True if every job
        finished without being cancelled.

        There is one shutdown per runtime. A call made while it is under way does not start
        another: it waits until that one is complete and returns the same result, whatever
        its own ``timeout``. Its ``timeout`` (or ``wait=False``: now) can only bring the end
        of the graceful wait forward: jobs are cancelled at the earliest deadline any call
        asked for. A call made on a thread the shutdown waits for (a routine's logic or
        ``on_stop``, on an actor thread or, in deterministic mode, on the thread shutting
        down) cannot wait for it: it returns False at once. A call after the shutdown returns
        its result. A ``timeout`` that is not None or a finite number of seconds >= 0 raises
        ``InvalidDurationError`` before anything is shut down.
        """
        seconds = check_seconds("Runtime.shutdown", "timeout", timeout, allow_none=True)
        if not wait:
            seconds = 0.0
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            with self._lock:
                self._closed = True
                if self._shutdown_result is not None:
                    return self._shutdown_result
                done = self._shutdown_done
                if done is None:  # this call shuts the runtime down
                    done = self._shutdown_done = threading.Event()
                    self._shutdown_thread = threading.current_thread()
                    self._shutdown_deadline = deadline
                    workers = list(self._workers.values())
                    break
                current = self._shutdown_deadline
                if deadline is not None and (current is None or deadline < current):
                    self._shutdown_deadline = deadline  # cancel jobs sooner
                    self._book.wake()
            caller = threading.current_thread()
            if caller is self._shutdown_thread or _waited_for_by_shutdown(caller):
                return False  # the shutdown under way waits for this thread
            done.wait()  # then the result is there, or (that call raised) this one takes over
        try:
            finished = self._shut_down(workers, wait, timeout)
        except BaseException:
            with self._lock:  # a later call takes over
                self._shutdown_done = self._shutdown_thread = None
            done.set()
            raise
        with self._lock:
            self._shutdown_result = finished
        done.set()
        return finished

    def _shut_down(self, workers: list[BackendWorker], wait: bool, timeout: float | None) -> bool:
        """The steps of :meth:`shutdown`, run by the one call that shuts the runtime down."""
        finished = True
        if wait:
            for worker in workers:
                worker.flush()
            if self.deterministic:  # virtual time: the scheduler runs on this thread
                finished = self.wait_until_all_jobs_finished(timeout)
            else:
                finished = self._drain()
        for record in self._book.unfinished():
            if not record.finished and record.finish(
                JobStatus.CANCELLED, "cancelled: runtime shut down"
            ):
                finished = False
        for worker in reversed(workers):
            worker.stop(timeout)
        if self._dispatcher is not None:  # deterministic: its virtual event loop
            self._dispatcher.close()
        self._backend.close()
        if getattr(self, "_monitor", None) is not None:
            self._monitor.stop()
        self._timers.stop()
        self._log.debug("runtime shut down")
        return finished

    def _drain(self) -> bool:
        """Wait until no job is unfinished or the shutdown's deadline (which a later call to
        ``shutdown`` may bring forward) has passed; whether no job is unfinished."""
        return self._book.wait_idle(deadline=lambda: self._shutdown_deadline)

    def install_signal_handlers(
        self,
        timeout: float | None = 30.0,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
    ) -> None:
        """On SIGTERM/SIGINT, shut down gracefully (``wait=True, timeout``), then let the
        signal's previous handler run (so the process ends as it would have).

        The handler returns at once: the shutdown runs on a thread of its own (not a daemon,
        so the interpreter waits for it), because the signal may interrupt the main thread
        where it holds a lock the shutdown needs (in ``exec``, say). When the shutdown is
        complete the signal is delivered again, and the previous handler runs on the main
        thread (for SIGTERM's default, the process ends by SIGTERM). A second signal while the
        shutdown runs ends the process at once, by the signal's default action.

        Call from the main thread, as Python requires for signal handlers. A ``timeout`` that
        is not None or a finite number of seconds >= 0 raises ``InvalidDurationError`` (and
        nothing is installed).
        """
        timeout = check_seconds("install_signal_handlers", "timeout", timeout, allow_none=True)
        previous: dict[int, Any] = {}
        shut_down = threading.Event()  # the shutdown is complete
        started = False  # read and written by the handler only, on the main thread

        def restore(signum: int) -> Any:
            old = previous.get(signum)
            if old is None:  # installed by C code: Python cannot put it back
                old = signal.SIG_DFL
            signal.signal(signum, old)
            return old

        def shut_down_then_signal(signum: int) -> None:
            try:
                self.shutdown(wait=True, timeout=timeout)
            finally:
                shut_down.set()
                os.kill(os.getpid(), signum)  # the handler now passes it on

        def handler(signum: int, frame: Any) -> None:
            # Runs on the main thread, between two bytecodes of whatever it was doing: it
            # must not wait for anything (no lock, no logging) that code may hold.
            nonlocal started
            if shut_down.is_set():  # delivered again (or sent again) after the shutdown
                old = restore(signum)
                if callable(old):
                    old(signum, frame)
                elif old == signal.SIG_DFL:
                    os.kill(os.getpid(), signum)
                return
            if started:  # a second signal: end now, by the signal's default action
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                restore(signum)  # reached only where the default action is not to end
                return
            started = True
            threading.Thread(
                target=shut_down_then_signal,
                args=(signum,),
                name=_SIGNAL_SHUTDOWN_THREAD,
                daemon=False,
            ).start()

        for signum in signals:
            previous[signum] = signal.signal(signum, handler)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        active = len(self._book.active)
        return f"Runtime({state}, workers={len(self._workers)}, active_jobs={active})"
