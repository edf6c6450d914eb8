"""What a routine actor does with each message (internal).

A cell is the per-actor half of a routine: its slot queues, its bound activation policy, the
logic call, its error strategy and its emits. It does not know how messages reach it (a pykka
actor thread today, a deterministic scheduler or a Ray actor elsewhere): the host calls
:meth:`RoutineCell.handle`.

The hot path (immediate policy) per message: skip finished jobs, mark the job running, call the
logic with the message's job as the current job, then deliver what it emitted. Emits are
collected while the logic runs and delivered only if it returns (all or nothing), which lets
the job accounting change once per message: a routine that emits one message downstream leaves
the job's count of messages in flight as it is.
"""

from __future__ import annotations

import contextvars
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Container, Sequence
from contextlib import suppress
from queue import Empty
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle
from loguru import logger

from actorflow.activation_policies import (
    ImmediatePolicy,
    QueuedItem,
    Release,
    incomplete_join_error,
    take_released,
)
from actorflow.engine.envelope import Envelope, Tick, new_envelope
from actorflow.engine.metrics import BUCKET_BOUNDS, FIRST_BOUND, HandlingCounters
from actorflow.engine.recorder import RecordedState, Recorder, Step
from actorflow.error_strategies import ErrorStrategy
from actorflow.errors import QueueFullError, SerializationError
from actorflow.job import (
    CURRENT_ACTIVATION,
    MAX_TIMELINE_STEPS,
    JobContext,
    JobRecord,
    JobStatus,
    child_parts,
    child_view,
    joined_view,
    new_view,
    record_of,
)
from actorflow.worker import WorkerState

if TYPE_CHECKING:
    import asyncio

    from actorflow._clock import Clock
    from actorflow.flow import Flow
    from actorflow.routine import Routine

__all__ = [
    "FLUSH",
    "CellCore",
    "Flush",
    "JoinCheck",
    "Retry",
    "RoutineCell",
    "TaskActivation",
]

Send = Callable[[Any], None]
_INCOMPLETE = frozenset({"incomplete", "timeout", "flush"})


class Timers(Protocol):
    def call_at(self, deadline: float, callback: Callable[[], None]) -> None: ...


class CellCore(Protocol):
    """What a routine cell needs from the worker that hosts it: a thread or deterministic
    worker (``WorkerCore``), or the worker's part inside a Ray routine actor."""

    @property
    def worker_id(self) -> str: ...
    @property
    def flow_id(self) -> str: ...
    @property
    def flow(self) -> Flow: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def timers(self) -> Timers: ...
    @property
    def strict(self) -> bool: ...
    @property
    def injector(self) -> Any: ...  # a fault plan's injector, or None
    @property
    def recorder(self) -> Any: ...  # a Recorder (Runtime(record=...)), or None
    @property
    def tracing(self) -> Any: ...  # OpenTelemetry tracing, or None
    @property
    def probes(self) -> dict[tuple[str, str], list[Any]]: ...
    @property
    def bounds(self) -> dict[str, tuple[Callable[[], int], dict[str, int]]]: ...
    @property
    def overflow(self) -> str: ...

    posters_waiting: int

    @property
    def routine_ids(self) -> frozenset[str]: ...
    @property
    def grants(self) -> dict[tuple[str, str], Any]: ...
    @property
    def status(self) -> str: ...

    def room_made(self) -> None: ...
    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None: ...
    def open_sealed(self, envelope: Envelope) -> tuple[Any, JobContext]: ...
    def drop_oldest(self, routine_id: str, limit: int) -> None: ...
    def child_crashed(self, host: Any, exc: BaseException, records: list[JobRecord]) -> None: ...
    def replace_host(self, host: Any) -> None: ...
    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any: ...
    def event_loop(self) -> asyncio.AbstractEventLoop: ...


class Flush:
    """Release everything queued and treat later arrivals as immediate (shutdown drain)."""

    __slots__ = ()


FLUSH = Flush()


class JoinCheck:
    """A job whose data waits in this routine's join ended, or has nothing else in flight."""

    __slots__ = ("rec",)

    def __init__(self, rec: JobRecord) -> None:
        self.rec = rec


class Retry:
    """Run the logic again with the same input (error strategy RETRY)."""

    __slots__ = ("attempt", "job", "message", "records", "slot_data")

    def __init__(
        self,
        slot_data: dict[str, list[Any]],
        message: Any,
        job: JobContext,
        records: Sequence[JobRecord],
        attempt: int,
    ) -> None:
        self.slot_data = slot_data
        self.message = message
        self.job = job
        self.records = records
        self.attempt = attempt


_Run = tuple[dict[str, list[Any]], Any, JobContext, Sequence[JobRecord], int]
"""One run of the logic: ``(slot_data, policy_message, job, records, attempt)``."""


class TaskActivation:
    """What one run of async logic sees as its activation (each task has its own, in its
    context): its job for ``get_current_job()`` and its outbox for ``Routine.emit``."""

    __slots__ = (
        "cell",
        "current_job",
        "direct_events",
        "headers",
        "outbox",
        "probes",
        "recording_step",
        "routine",
        "silent_events",
        "span",
    )

    def __init__(self, cell: RoutineCell, job: JobContext) -> None:
        self.cell = cell
        self.routine = cell.routine
        self.current_job: JobContext | None = job
        self.outbox: list[tuple[str, Any]] | None = []
        self.direct_events = cell.direct_events
        self.silent_events = cell.silent_events
        self.probes = cell.probes
        self.span: Any = None  # its tracing span (tracing on), and the headers it sends
        self.headers: dict[str, str] | None = None
        self.recording_step: Step | None = None  # recording on: this run's step

    def emit_for(self, routine: Routine, event: str, data: dict[str, Any]) -> None:
        self.cell.emit_into(self.outbox, routine, event, data)


class RoutineCell:
    """One actor's worth of a routine inside one worker."""

    def __init__(self, core: CellCore, routine_id: str, routine: Routine, send_self: Send) -> None:
        self.core = core
        self.routine_id = routine_id
        self.routine = routine
        logic = routine.get_logic()
        assert logic is not None  # checked by Flow.validate
        self.logic = logic
        self._recorder: Recorder | None = core.recorder
        # recording on: the logic's state calls are recorded in its step
        self.state = WorkerState(
            core if self._recorder is None else RecordedState(core, self._recorder), routine_id
        )
        self.recording_step: Step | None = None  # recording on: the running logic's step
        self.events = frozenset(routine.events)
        self.slot_names = tuple(routine.slots)
        self.single_slot = len(self.slot_names) == 1
        self.immediate = isinstance(routine.activation_policy, ImmediatePolicy)
        self.policy = routine.activation_policy.bind()
        self.parks = self.policy.parks  # a job's join: its data waits for its own job only
        self.strategy: ErrorStrategy = core.flow.error_strategy_for(routine_id)
        self.queues: dict[str, deque[QueuedItem]] = {name: deque() for name in self.slot_names}
        self.max_queue = {name: spec.max_queue_length for name, spec in routine.slots.items()}
        self.routes: dict[str, list[tuple[str, str, Send]]] = {}
        self.direct_events: Container[str] = frozenset()
        self.silent_events: Container[str] = frozenset()
        self.bounds = core.bounds
        self.send_self = send_self
        self._msg: Envelope | None = None  # the message whose logic runs (plain handler)
        self._view: JobContext | None = None  # its job view, once made
        self.draining = False
        self.outbox: list[tuple[str, Any]] | None = None
        self._running: Sequence[JobRecord] = ()
        self._injector = core.injector
        self._tracing = core.tracing
        self._headers_in: dict[str, str] | None = None
        self._headers_out: dict[str, str] | None = None
        self.counters = HandlingCounters()  # runs, failures, retries, timings (metrics)
        self._arrivals = 0  # data points queued so far (their order, for the newest one)
        self._probes = self.probes = core.probes
        self._timer_at: float | None = None
        self._clock = core.clock
        self._strict = core.strict
        self._log = logger.bind(worker=core.worker_id, routine=routine_id)
        # Async logic runs as tasks on the worker's event loop (see _run_async): up to
        # ``limit`` at once, one at a time per job; its host sets the two hooks.
        self.is_async = routine.is_async
        self.limit = routine.concurrency if self.is_async else 1
        self.occupied = 0  # tasks running, and runs waiting behind their job's task
        # runs waiting behind their job's task, by job id (on Ray each message of a job has a
        # record of its own)
        self._lines: dict[str, deque[_Run]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.crash_handler: Callable[[BaseException], None] | None = None
        self.task_done_hook: Callable[[], None] | None = None
        # A plain routine's host feeds it runs of envelopes (run_plain) instead of one by one.
        self.batch: Callable[[Envelope, Any, Any], Any] | None = None
        # Events with exactly one connection, for the one-in-one-out hot path (set_routes).
        self._single: dict[str, tuple[str, str, Send, Callable[[], int], int]] = {}
        if (
            self.immediate
            and not self.is_async
            and self.single_slot
            and not self._strict
            and self._tracing is None
            and self._injector is None
            and self._recorder is None
        ):
            self.handle = self._handle_plain  # type: ignore[method-assign]
            self.batch = self.run_plain

    def set_routes(self, routes: dict[str, list[tuple[str, str, Send]]]) -> None:
        """Where each event goes: ``event -> [(target, slot, send)]``."""
        self.routes = routes
        # Routine.emit appends these events to the outbox itself, or drops them: those that
        # declare no fields (Routine.emit checks the others' fields first; strict mode
        # encodes each event's data)
        checked = {name for name, spec in self.routine.events.items() if spec.output_params}
        self.direct_events = frozenset() if self._strict else frozenset(routes.keys() - checked)
        self.silent_events = frozenset(self.events - routes.keys() - checked)
        self._single = {}
        for event, targets in routes.items():
            if len(targets) == 1:
                target, slot, send = targets[0]
                qsize, limits = self.bounds[target]
                self._single[event] = (target, slot, send, qsize, limits[slot])

    # -- lifecycle (on the actor's thread) ---------------------------------------------
    def started(self) -> None:
        CURRENT_ACTIVATION.set(self)
        self.routine.on_start()

    def stopped(self) -> None:
        self.cancel_queued("routine stopped")
        self.routine.on_stop()

    def take_over(self, previous: RoutineCell) -> None:
        """Continue where ``previous`` (a crashed or restarted actor) left its queued data."""
        self.queues = previous.queues
        self.counters = previous.counters
        self._arrivals = previous._arrivals
        self.draining = previous.draining
        previous.queues = {name: deque() for name in self.slot_names}

    def crashed(self, host: Any, exc: BaseException, message: Any) -> None:
        """This actor crashed: tell the supervisor, with the job(s) it was working for."""
        records = list(self._running)
        step, self.recording_step = self.recording_step, None
        if step is not None and self._recorder is not None:  # the crash ended a recorded run
            self._recorder.end(step, [], exc)
        if self._msg is not None:  # a plain routine crashed in this message's logic
            message = self._msg
        if not records and type(message) is Envelope and message.rec is not None:
            records = [message.rec]
        try:  # best effort: release what this actor opened in on_start
            self.routine.on_stop()
        except Exception:
            self._log.exception("on_stop of crashed {} failed", self.routine_id)
        self._log.opt(exception=exc).warning("routine actor {} crashed", self.routine_id)
        # the supervisor fails these jobs once it has decided on the restarts
        self.core.child_crashed(host, exc, records)

    def hand_over(self, host: Any) -> None:
        """A supervisor asked this healthy actor to restart: run on_stop, start a successor."""
        try:
            self.routine.on_stop()
        except Exception:
            self._log.exception("on_stop of {} failed during a restart", self.routine_id)
        self.core.replace_host(host)

    # -- messages ----------------------------------------------------------------------
    def _handle_plain(self, envelope: Any) -> None:
        """:meth:`handle` for a plain routine: see :meth:`run_plain`."""
        if type(envelope) is not Envelope:
            core = self.core
            if core.posters_waiting:
                core.room_made()
            self._control(envelope)
            return
        self.run_plain(envelope)

    def run_plain(self, envelope: Envelope, mailbox: Any = None, host: Any = None) -> Any:
        """Handle ``envelope`` for a plain routine (immediate policy, one slot, no tracing, no
        fault plan, not strict): the steps of :meth:`handle`, inlined, with one hot path for
        a message that causes exactly one message downstream.

        Given its ``mailbox`` (and ``host``), go on with the envelopes after it while there
        are any and no restart is requested; return the first other message taken from the
        mailbox, or None. A crash (an exception that is not an ``Exception``) propagates to
        the host, with ``self._msg`` naming the message it happened in.
        """
        core = self.core
        logic = self.logic
        state = self.state
        single = self._single
        probes = self._probes
        counters = self.counters
        buckets = counters.buckets
        routine_id = self.routine_id
        max_steps = MAX_TIMELINE_STEPS
        if mailbox is not None:
            take = mailbox.get_nowait
        while True:
            if core.posters_waiting:
                core.room_made()
            rec: JobRecord = envelope.rec  # type: ignore[assignment]  # only strict mode seals
            if rec.finished:
                core.dead_letter(rec.job_id, routine_id, envelope.slot, f"job {rec.status}")
            else:
                if not rec.started:  # written once: later hops only read the record's line
                    rec.started = True
                slot_data = {envelope.slot: [envelope.payload]}
                self._msg = envelope  # get_current_job() makes the view from it, if asked
                outbox: list[tuple[str, Any]] = []
                self.outbox = outbox
                started = perf_counter()
                try:
                    logic(slot_data, None, state)
                except Exception as exc:
                    counters.observe(perf_counter() - started)
                    self._timeline((rec,), started, "raised")
                    counters.failed += 1
                    job = self._take_view()
                    self.outbox = None
                    self._on_error(exc, slot_data, None, job, (rec,), 1)
                else:
                    elapsed = perf_counter() - started
                    steps = rec.steps  # the job's timeline (JobContext.timeline), inlined
                    if len(steps) < max_steps:
                        steps.append((routine_id, started, elapsed, "ok"))
                    else:
                        rec.drop_step()
                    counters.seconds_sum += elapsed
                    if elapsed < FIRST_BOUND:
                        buckets[0] += 1
                    else:
                        buckets[bisect_left(BUCKET_BOUNDS, elapsed)] += 1
                    self.outbox = None
                    view = self._view
                    if view is None:
                        self._msg = None
                    if not outbox:
                        if view is not None:
                            self._msg = self._view = None
                        rec.message_done()
                    elif view is None and len(outbox) == 1 and not probes:
                        # the hot path: one event, one connection, room downstream, no data
                        # written: the child shares the data dict
                        event, data = outbox[0]
                        route = single.get(event)
                        if route is not None and not rec.finished and route[3]() < route[4]:
                            # the handled envelope becomes the child: same job, same data,
                            # one hop deeper (nothing else holds it: no view, probe, fault
                            # plan or tracing on this path)
                            envelope.target = route[0]
                            envelope.slot = route[1]
                            envelope.payload = data
                            envelope.depth += 1
                            route[2](envelope)
                        else:
                            self._deliver(outbox, self._take_view(envelope), (rec,))
                    else:
                        self._deliver(outbox, self._take_view(envelope), (rec,))
            if mailbox is None or host.restart_requested:
                return None
            try:
                envelope = take()
            except Empty:  # nothing left (or another actor of the routine took it)
                return None
            if type(envelope) is not Envelope:
                return envelope

    def _take_view(self, envelope: Envelope | None = None) -> JobContext:
        """The view of the job the logic just ran for (made now if nobody asked for it)."""
        view = self._view
        if view is None:
            message = envelope if envelope is not None else self._msg
            assert message is not None and message.rec is not None
            view = new_view(message.rec, message.data, message.depth)
        self._msg = self._view = None
        return view

    @property
    def current_job(self) -> JobContext | None:
        """The job of the message being handled (``get_current_job()``), else None."""
        view = self._view
        if view is None:
            message = self._msg
            if message is None:
                return None
            view = self._view = new_view(message.rec, message.data, message.depth)  # type: ignore[arg-type]
        return view

    @current_job.setter
    def current_job(self, job: JobContext | None) -> None:
        self._view = job
        self._msg = None

    def handle(self, envelope: Any) -> None:
        core = self.core
        if core.posters_waiting:
            core.room_made()
        if type(envelope) is not Envelope:
            self._control(envelope)
            return
        payload = envelope.payload
        job: JobContext
        if envelope.blob is not None:
            payload, job = self.core.open_sealed(envelope)
        else:
            job = envelope.job  # type: ignore[assignment]  # not sealed: carries its job
        rec: JobRecord = record_of(job)
        if rec.finished:
            self.core.dead_letter(rec.job_id, self.routine_id, envelope.slot, f"job {rec.status}")
            return
        rec.started = True
        if self._tracing is not None:
            self._headers_in = envelope.headers
        if self.immediate or self.draining:
            if self.single_slot:
                slot_data = {envelope.slot: [payload]}
            else:
                slot_data = {name: [] for name in self.slot_names}
                slot_data[envelope.slot] = [payload]
            self._run(slot_data, None, job, (rec,), 1)
            return
        now = self._clock.monotonic()
        queue = self.queues[envelope.slot]
        if len(queue) >= self.max_queue[envelope.slot] and not self._overflow(queue, rec, envelope):
            return
        policy = self.policy
        try:
            key = policy.key_of(payload, rec.job_id)
        except Exception as exc:  # a join's key function failed: the data's job fails
            rec.fail(exc, self.routine_id, "policy failed")
            return
        self._arrivals += 1
        queue.append(QueuedItem(payload, job, now, key, self._arrivals))
        stalled = False
        if self.parks:
            parked = rec.park(self._job_changed)
            if parked is None:  # the job ended meanwhile
                queue.pop()
                status = f"job {rec.status}"
                self.core.dead_letter(rec.job_id, self.routine_id, envelope.slot, status)
                return
            stalled = parked
        try:
            release = policy.on_message(self.queues, envelope.slot, now)
        except Exception as exc:  # a custom policy failed: the data's job fails
            queue.pop()
            rec.fail(exc, self.routine_id, "policy failed")
            return
        if release is None and stalled:  # nothing else of the job can come to complete it
            release = policy.on_stalled(self.queues, key)
        self._apply(release, now)

    def _job_changed(self, rec: JobRecord) -> None:
        """A job whose data waits in this join ended or stalled (called on any thread)."""
        self.send_self(JoinCheck(rec))

    def _overflow(self, queue: deque[QueuedItem], rec: JobRecord, envelope: Envelope) -> bool:
        """A slot queue is full: drop its oldest data (drop_oldest) or refuse this message.

        Returns whether the new data may be queued. Either way a job fails with
        ``QueueFullError`` and a dead letter records it: never a silent drop.
        """
        limit = self.max_queue[envelope.slot]
        where = f"slot {self.routine_id}.{envelope.slot} holds {limit} data points"
        if self.core.overflow == "drop_oldest":
            old = record_of(queue.popleft().job)
            old.fail(QueueFullError(f"dropped: {where} (drop_oldest)"), self.routine_id, "dropped")
            self.core.dead_letter(old.job_id, self.routine_id, envelope.slot, "dropped (slot full)")
            return True
        rec.fail(QueueFullError(f"refused: {where}"), self.routine_id, "refused")
        self.core.dead_letter(rec.job_id, self.routine_id, envelope.slot, "refused (slot full)")
        return False

    def _control(self, message: Any) -> None:
        kind = type(message)
        if kind is Retry:
            live = [r for r in message.records if not r.finished]
            if live:
                self._run(message.slot_data, message.message, message.job, live, message.attempt)
        elif kind is JoinCheck:
            self._check_join(message.rec)
        elif kind is Tick:
            if self._timer_at == message.deadline:
                self._timer_at = None
            now = self._clock.monotonic()
            self._apply(self.policy.on_timer(self.queues, now), now, self.policy.on_timer)
        elif kind is Flush:
            policy = self.policy
            self.draining = policy.drains
            now = self._clock.monotonic()
            release = policy.on_flush(self.queues)
            while release is not None and self._release(release, now):
                release = policy.on_flush(self.queues)

    def _check_join(self, rec: JobRecord) -> None:
        """Release the join's data of ``rec``'s job if the job ended or stalled."""
        job_id = rec.job_id
        if rec.finished:  # its data leaves the join as dead letters
            for name, queue in self.queues.items():
                if any(item.key == job_id for item in queue):
                    kept = deque(item for item in queue if item.key != job_id)
                    for _ in range(len(queue) - len(kept)):
                        self.core.dead_letter(job_id, self.routine_id, name, f"job {rec.status}")
                    self.queues[name] = kept
            return
        if rec.stalled:
            self._apply(self.policy.on_stalled(self.queues, job_id), self._clock.monotonic())

    def _apply(
        self,
        release: Release | None,
        now: float,
        again: Callable[[Any, float], Release | None] | None = None,
    ) -> None:
        """Run ``release``; with ``again`` (a timer), ask it for more while it releases."""
        if release is not None and self._release(release, now) and again is not None:
            while (release := again(self.queues, now)) is not None:
                if not self._release(release, now):
                    break
        deadline = self.policy.next_deadline(self.queues, now)
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._timer_at = deadline
            send_self = self.send_self
            self.core.timers.call_at(deadline, lambda: send_self(Tick(deadline)))

    def _release(self, release: Release, now: float) -> bool:
        """Take the released data out of the queues and run the logic with it (or fail its
        jobs, for an incomplete join that fails); False if nothing was taken."""
        taken = take_released(self.queues, release)
        if not any(taken.values()):
            return False
        if self.parks:
            for items in taken.values():
                for item in items:
                    record_of(item.job).unpark()
        if release.fail:
            self._fail_incomplete(taken, release.message)
            return True
        slot_data: dict[str, list[Any]] = {name: [] for name in self.slot_names}
        records: list[JobRecord] = []
        live: list[QueuedItem] = []
        for name, items in taken.items():
            data = slot_data[name]
            for item in items:
                rec = record_of(item.job)
                if rec.finished:
                    self.core.dead_letter(rec.job_id, self.routine_id, name, f"job {rec.status}")
                    continue
                data.append(item.data)
                records.append(rec)
                live.append(item)
        if not live:
            return True
        message = release.message
        if release.picks is not None and message.get("reason") in _INCOMPLETE:
            self.counters.incomplete += 1  # a join's partial data runs (on_incomplete="run")
        self.policy.released(now)
        if self.parks:  # one job: the view joins what each branch carried
            job = joined_view([item.job for item in live])
        else:
            job = max(live, key=lambda item: (item.arrived_at, item.seq)).job
        self._run(slot_data, release.message, job, records, 1)
        return True

    def _fail_incomplete(self, taken: dict[str, list[QueuedItem]], message: Any) -> None:
        """An incomplete join that fails: dead letters, and each job fails with the reason."""
        self.counters.incomplete += 1
        timeout = getattr(self.policy.spec, "timeout", None)
        for name, items in taken.items():
            for item in items:
                rec = record_of(item.job)
                self.core.dead_letter(rec.job_id, self.routine_id, name, "join incomplete")
                if not rec.finished:
                    error = incomplete_join_error(
                        self.routine_id, rec.job_id, name, message, timeout
                    )
                    rec.fail(error, self.routine_id, "join incomplete")

    # -- running the logic -------------------------------------------------------------
    def _run(
        self,
        slot_data: dict[str, list[Any]],
        message: Any,
        job: JobContext,
        records: Sequence[JobRecord],
        attempt: int,
    ) -> None:
        if self.is_async:
            self._run_async((slot_data, message, job, records, attempt))
            return
        self.current_job = job
        self._running = records
        outbox: list[tuple[str, Any]] = []
        self.outbox = outbox
        if self._recorder is not None:
            self.recording_step = self._recorder.begin(
                self.routine_id, attempt, slot_data, message, job, records, self._strict
            )
        started = perf_counter()
        try:
            if self._injector is not None:
                self._injector.before_logic(self.core, self.routine_id, job)
            if self._tracing is None:
                self.logic(slot_data, message, self.state)
            else:
                self._traced(slot_data, message, job)
        except Exception as exc:
            step, self.recording_step = self.recording_step, None
            self._after_logic(started, outbox, exc, slot_data, message, job, records, attempt, step)
            return
        step, self.recording_step = self.recording_step, None
        self._after_logic(started, outbox, None, slot_data, message, job, records, attempt, step)

    def _after_logic(
        self,
        started: float,
        outbox: list[tuple[str, Any]],
        error: Exception | None,
        slot_data: dict[str, list[Any]],
        message: Any,
        job: JobContext,
        records: Sequence[JobRecord],
        attempt: int,
        step: Step | None = None,
    ) -> None:
        """The half after the logic returned or raised (called or awaited): time it, then
        deliver its emits, or apply the error strategy (recording on: first end ``step``)."""
        self.counters.observe(perf_counter() - started)
        if step is not None and self._recorder is not None:
            self._recorder.end(step, outbox, error)
        self._timeline(records, started, "ok" if error is None else "raised")
        self.current_job = None
        self.outbox = None
        self._running = ()
        if error is not None:
            self.counters.failed += 1
            self._on_error(error, slot_data, message, job, records, attempt)
            return
        self._deliver(outbox, job, records)

    # -- async logic (on the worker's event loop) ----------------------------------------
    def _run_async(self, run: _Run) -> None:
        """Start async logic as a task: up to ``limit`` at once, one at a time per job (a run
        of a job whose task is in flight here waits behind it, in arrival order)."""
        self.occupied += 1
        records = run[3]
        if len(records) == 1:
            line = self._lines.get(records[0].job_id)
            if line is not None:
                line.append(run)
                return
            self._lines[records[0].job_id] = deque()
        self._start_task(run)

    def _start_task(self, run: _Run) -> None:
        slot_data, message, job, records, attempt = run
        activation = TaskActivation(self, job)
        if self._recorder is not None:
            activation.recording_step = self._recorder.begin(
                self.routine_id, attempt, slot_data, message, job, records, self._strict
            )
        context = contextvars.copy_context()
        context.run(CURRENT_ACTIVATION.set, activation)
        started = perf_counter()
        try:
            if self._injector is not None:
                self._injector.before_logic(self.core, self.routine_id, job)
            if self._tracing is not None:  # a span from the task's start to its end
                name, attributes = self._span_of(job)
                activation.span, activation.headers = context.run(
                    self._tracing.begin, self._headers_in, name, attributes
                )
            coroutine = context.run(self.logic, slot_data, message, self.state)
        except Exception as exc:
            self.occupied -= 1
            outbox, activation.outbox = activation.outbox, None
            self._after_logic(
                started, outbox or [], exc, slot_data, message, job, records, attempt,
                activation.recording_step,
            )  # fmt: skip
            self._next_in_line(records)
            return
        loop = self.core.event_loop()
        task = loop.create_task(coroutine, context=context)
        self._tasks.add(task)

        def cancel() -> None:  # the job ended (failed, timed out, cancelled): stop awaiting
            if not task.done():
                with suppress(RuntimeError):  # the loop has closed, and its tasks with it
                    loop.call_soon_threadsafe(task.cancel)

        for record in records:
            record.add_done_callback(cancel)
        task.add_done_callback(lambda done: self._task_done(done, started, activation, run))

    def _task_done(self, task: Any, started: float, activation: TaskActivation, run: _Run) -> None:
        """A task of async logic ended: the same second half as called logic."""
        slot_data, message, job, records, attempt = run
        self.occupied -= 1
        self._tasks.discard(task)
        outbox, activation.outbox = activation.outbox, None
        error = None if task.cancelled() else task.exception()
        if activation.span is not None:
            self._tracing.end(activation.span, error)
            self._headers_out = activation.headers
        if error is None or isinstance(error, Exception):
            if task.cancelled():  # its job ended (or the loop stopped): emits go nowhere
                for record in records:
                    record.finish(JobStatus.CANCELLED, "cancelled: its routine task was cancelled")
            self._after_logic(
                started, outbox or [], error, slot_data, message, job, records, attempt,
                activation.recording_step,
            )  # fmt: skip
        else:  # a crash of this actor (ActorCrash, ...): its supervisor restarts it
            if activation.recording_step is not None and self._recorder is not None:
                self._recorder.end(activation.recording_step, [], error)
            self._running = records
            if self.crash_handler is not None:
                self.crash_handler(error)
            self._running = ()
        self._next_in_line(records)
        if self.task_done_hook is not None:
            self.task_done_hook()

    def cancel_tasks(self) -> None:
        """Cancel every task of this routine still in flight (at stop: their jobs have ended)."""
        for task in list(self._tasks):
            task.cancel()

    def _next_in_line(self, records: Sequence[JobRecord]) -> None:
        """Start the next run waiting behind a job's task (its message order), if any."""
        if len(records) != 1:
            return
        job_id = records[0].job_id
        line = self._lines.get(job_id)
        while line:
            run = line.popleft()
            rec = run[3][0]
            if not rec.finished:
                self._start_task(run)
                return
            self.occupied -= 1
            slot = next((name for name, data in run[0].items() if data), None)
            self.core.dead_letter(job_id, self.routine_id, slot, f"job {rec.status}")
        self._lines.pop(job_id, None)

    def _deliver(
        self, outbox: list[tuple[str, Any]], job: JobContext, records: Sequence[JobRecord]
    ) -> None:
        """Send what one run of the logic emitted (all of it, or none if the job ended)."""
        if not outbox:
            for record in records:
                record.message_done()
            return
        rec = record_of(job)
        if self._probes:
            self._feed_probes(job, outbox)
        if rec.finished:  # failed, timed out or cancelled while the logic ran
            for event, _ in outbox:
                for target, slot, _send in self.routes.get(event, ()):
                    self.core.dead_letter(rec.job_id, target, slot, f"job {rec.status}")
            for record in records:  # the other jobs of a batch: their data was handled
                if record is not rec:
                    record.message_done()
            return
        single = len(records) == 1 and records[0] is rec
        if single and len(outbox) == 1 and not self._strict:
            # one message in, one event out: the child takes the handled message's place
            event, data = outbox[0]
            route = self._single.get(event)
            if route is not None:
                target, slot, send, qsize, limit = route
                if qsize() >= limit and not self._make_room(rec, target, slot, records):
                    return
                envelope = new_envelope(target, slot, data, *child_parts(job))
                if self._tracing is not None:
                    envelope.headers = self._headers_out
                send(envelope)
                return
        try:
            envelopes = self._envelopes(job, outbox)
        except SerializationError as exc:
            for record in records:
                record.fail(exc, self.routine_id)
            return
        if self._tracing is not None:
            for _send, envelope in envelopes:
                envelope.headers = self._headers_out
        bounds = self.bounds
        sending: dict[str, int] = {}
        for _send, envelope in envelopes:
            target = envelope.target
            qsize, limits = bounds[target]
            ahead = sending.get(target, 0)
            sending[target] = ahead + 1
            if qsize() + ahead >= limits[envelope.slot] and not self._make_room(
                rec, target, envelope.slot, records
            ):
                return
        count = len(envelopes)
        if not count:  # only probed events without connections
            for record in records:
                record.message_done()
            return
        if single:
            # the handled message's place in the count passes to its first child
            if count != 1:
                rec.add_inflight(count - 1)
            for send, envelope in envelopes:
                send(envelope)
            return
        rec.add_inflight(count)
        for send, envelope in envelopes:
            send(envelope)
        for record in records:
            record.message_done()

    def _make_room(
        self, rec: JobRecord, target: str, slot: str, records: Sequence[JobRecord]
    ) -> bool:
        """``target``'s mailbox is full: drop its oldest message (``drop_oldest``) and go on,
        or refuse this routine's emits, failing the job(s) it worked for. An actor never
        blocks on a full mailbox (a cycle of full mailboxes would deadlock), so ``block``
        refuses like ``raise`` here."""
        limit = self.bounds[target][1][slot]
        if self.core.overflow == "drop_oldest":
            self.core.drop_oldest(target, limit)
            return True
        error = QueueFullError(
            f"routine {self.routine_id!r} emitted to {target}.{slot}, whose mailbox already "
            f"holds {limit} messages (max_queue_length={limit})"
        )
        for record in records:
            record.fail(error, self.routine_id, "refused")
        self.core.dead_letter(rec.job_id, target, slot, "refused (mailbox full)")
        return False

    def _traced(self, slot_data: dict[str, list[Any]], message: Any, job: JobContext) -> None:
        """Run the logic in a span (tracing on): its parent came with the envelope."""
        assert self._tracing is not None
        _, self._headers_out = self._tracing.run(
            self._headers_in,
            *self._span_of(job),
            lambda: self.logic(slot_data, message, self.state),
        )

    def _span_of(self, job: JobContext) -> tuple[str, dict[str, str]]:
        """The name and attributes of the span of one run of the logic for ``job``."""
        attributes = {
            "actorflow.job_id": record_of(job).job_id,
            "actorflow.worker_id": self.core.worker_id,
            "actorflow.flow_id": self.core.flow_id,
            "actorflow.routine_id": self.routine_id,
        }
        return f"routine {self.routine_id}", attributes

    def _timeline(self, records: Sequence[JobRecord], started: float, outcome: str) -> None:
        """Add one handling step (from ``started``, a perf_counter reading, to now) to each job
        the run was for: what ``JobContext.timeline`` shows."""
        seconds = perf_counter() - started
        for record in records:
            record.add_step(self.routine_id, started, seconds, outcome)

    def metrics(self) -> dict[str, Any]:
        """This actor's counters (summed over a routine's actors by the worker)."""
        queued = sum(len(queue) for queue in list(self.queues.values()))
        return self.counters.snapshot(queued)

    def _feed_probes(self, job: JobContext, outbox: list[tuple[str, Any]]) -> None:
        for event, data in outbox:
            for probe in self._probes.get((self.routine_id, event), ()):
                value = cloudpickle.loads(data) if self._strict else data
                probe.add(value, job.job_id, self.core.worker_id)

    def _envelopes(self, job: JobContext, outbox: list[tuple[str, Any]]) -> list[tuple[Send, Any]]:
        """Turn what the logic emitted into envelopes for every connected slot."""
        envelopes: list[tuple[Send, Any]] = []
        if self._strict:
            child_blob = cloudpickle.dumps(child_view(job))
            for event, payload_blob in outbox:
                for target, slot, send in self.routes.get(event, ()):
                    envelopes.append(
                        (send, new_envelope(target, slot, payload_blob, None, blob=child_blob))
                    )
            return envelopes
        for event, data in outbox:
            for target, slot, send in self.routes.get(event, ()):
                envelopes.append((send, new_envelope(target, slot, data, *child_parts(job))))
        return envelopes

    def _on_error(
        self,
        exc: Exception,
        slot_data: dict[str, list[Any]],
        message: Any,
        job: JobContext,
        records: Sequence[JobRecord],
        attempt: int,
    ) -> None:
        strategy = self.strategy
        kind = strategy.kind
        if kind == "retry" and isinstance(exc, strategy.retry_on):
            if attempt <= strategy.max_retries:
                delay = strategy.retry_delay(attempt)
                details = {
                    "attempt": attempt,
                    "error": f"{type(exc).__name__}: {exc}",
                    "delay": delay,
                }
                for record in records:  # every job whose data the try consumed
                    record.add_trace(self.routine_id, "retry", details)
                self.counters.retried += 1
                retry = Retry(slot_data, message, job, records, attempt + 1)
                if delay <= 0:
                    self.send_self(retry)
                else:
                    send_self = self.send_self
                    self.core.timers.call_at(
                        self._clock.monotonic() + delay, lambda: send_self(retry)
                    )
                return
            for record in records:
                record.fail(exc, self.routine_id, suffix=f" (after {attempt} tries)")
            return
        if kind in ("continue", "skip"):
            for record in records:
                record.record_error(self.routine_id, exc, kind)
                if kind == "skip":
                    self.core.dead_letter(record.job_id, self.routine_id, None, "skipped")
                record.message_done()
            return
        for record in records:
            if record.fail(exc, self.routine_id):
                self._log.bind(job=record.job_id).opt(exception=exc).info(
                    "job {} failed in routine {}", record.job_id, self.routine_id
                )

    def emit_for(self, routine: Routine, event: str, data: dict[str, Any]) -> None:
        """``Routine.emit`` lands here: queue ``data`` for every slot connected to ``event``."""
        self.emit_into(self.outbox, routine, event, data)

    def emit_into(
        self,
        outbox: list[tuple[str, Any]] | None,
        routine: Routine,
        event: str,
        data: dict[str, Any],
    ) -> None:
        """Queue ``data`` in ``outbox`` (None: no logic runs) for every slot of ``event``."""
        if (
            outbox is not None
            and routine is self.routine
            and event in self.routes
            and not self._strict
        ):
            outbox.append((event, data))
            return
        if routine is not self.routine:
            raise RuntimeError(
                f"{routine!r}.emit({event!r}) called from the logic of routine "
                f"{self.routine_id!r}: a routine can only emit its own events"
            )
        if outbox is None:
            raise RuntimeError(
                f"routine {self.routine_id!r} emitted {event!r} outside its logic "
                "(emit only works while the routine handles a message)"
            )
        targets = self.routes.get(event)
        if targets is None:
            if event not in self.events:
                raise ValueError(
                    f"routine {self.routine_id!r} emitted undeclared event {event!r} "
                    f"(declared: {sorted(self.events) or 'none'})"
                )
            if (self.routine_id, event) not in self._probes:
                return  # no connection and nobody watching: nothing to do
            targets = []
        if self._strict:
            try:
                outbox.append((event, cloudpickle.dumps(data)))
            except Exception as exc:
                slots = ", ".join(f"{target}.{slot}" for target, slot, _ in targets)
                raise SerializationError(
                    f"routine {self.routine_id!r} event {event!r} -> {slots}: the message "
                    f"cannot cross a process boundary ({type(exc).__name__}: {exc})"
                ) from exc
            return
        outbox.append((event, data))

    # -- shutdown ----------------------------------------------------------------------
    def cancel_queued(self, reason: str) -> None:
        """End the jobs of data still waiting in the slot queues (cancelled)."""
        for name, queue in self.queues.items():
            while queue:
                rec = record_of(queue.popleft().job)
                self.core.dead_letter(rec.job_id, self.routine_id, name, reason)
                rec.finish(JobStatus.CANCELLED, f"cancelled: {reason}")
