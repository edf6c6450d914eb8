"""A routine actor on Ray: the routine cell every backend shares, hosted in a Ray actor
(internal).

The host does what the pykka thread host does for a cell (feed it messages one at a time, report
a crash to the worker's supervisor and wait for its decision, start a successor that takes over
the queued data) and what a transport needs between processes: it rebuilds an envelope from
each wire, gives every message the cell sends its share of the job's weight (see
``_record``), sends them on in one Ray call per downstream actor per delivered batch, and
reports back to the driver (through the ledger) what happened to each job: weight returned,
data and trace written, errors, dead letters, joins waiting, crashes.

Everything the cell sends itself (a retry after its backoff, a policy's timer, a join check)
waits in a local queue; a timer firing on its own thread wakes the actor with a Ray call.

With a fault plan the host applies it to each message it receives, before the cell sees it,
and the cell to each activation (see ``_faults``); a ``crash`` fault ends this process for real
once the call's reports and messages are sent, handing what the successor needs to the ledger.
A process that replaces a dead one tells the driver, which replays the unfinished jobs: a
replayed message is handled even if it was seen before (``Wire.replay``), and so are the
messages it causes.

A routine whose logic is ``async def`` is hosted the same way, by one Ray actor whatever its
concurrency, with an event loop of its own (as a worker's async routines share one on threads):
every call the actor gets runs on that loop, where the cell starts a task per message, up to the
routine's concurrency, and settles each when it ends. Ray still runs the actor's calls one at a
time and in order; only the awaiting happens side by side.
"""

from __future__ import annotations

import itertools
import os
import threading
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from fractions import Fraction
from typing import Any, TypeVar

import cloudpickle
from loguru import logger

from actorflow._clock import SystemClock
from actorflow.backends.ray._faults import ActorFaultServices, actor_injector
from actorflow.backends.ray._import import import_ray
from actorflow.backends.ray._recent import RecentIds
from actorflow.backends.ray._record import RemoteJob, RemoteRecord, new_remote_record
from actorflow.backends.ray._recorder import ActorRecorder
from actorflow.backends.ray._wire import JobHeader, Wire, pack, unpack
from actorflow.engine.envelope import Envelope, new_envelope
from actorflow.engine.loop_host import LoopThread
from actorflow.engine.routine_cell import FLUSH, JoinCheck, RoutineCell
from actorflow.engine.timers import TimerService
from actorflow.errors import ConfigurationError, SerializationError
from actorflow.faults import FaultInjector
from actorflow.flow import Flow, StateGrant
from actorflow.job import (
    CURRENT_ACTIVATION,
    JobContext,
    JobRecord,
    JobStatus,
    get_current_job,
    record_of,
)

__all__ = ["RayCellCore", "RoutineHost", "call_state", "task_error_cause"]

REMEMBERED_ENVELOPES = 100_000  # ids of delivered envelopes kept to skip a redelivery
REMEMBERED_JOBS = 100_000  # jobs this actor knows (ended ones among them)

Routes = dict[str, list[tuple[str, str, list[Any]]]]  # event -> [(target, slot, actors)]
T = TypeVar("T")
STOP_TASKS_SECONDS = 10.0  # how long a stopping actor waits for its cancelled tasks to end
KILL_WAIT_SECONDS = 10.0  # how long a process a crash fault ends waits for what it sent
STOP_REPORTS_SECONDS = 10.0  # how long a stopping actor waits for its reports to arrive
UNCONFIRMED_REPORTS = 64  # reports sent and not known to have arrived, before looking again
CRASH_EXIT_CODE = 70  # the exit status of a process a crash fault ends


def call_state(supervisor: Any, op: str, key: Any, arg: Any, extra: Any, op_id: str | None) -> Any:
    """One WorkerState call to the worker's state owner, by Ray (``op_id`` makes it
    idempotent: a call Ray retries, or a logic run again after a restart, applies once)."""
    ray = import_ray()
    try:
        return ray.get(supervisor.call.remote(op, key, cloudpickle.dumps(arg), extra, op_id))
    except ray.exceptions.RayTaskError as exc:
        raise task_error_cause(exc) from None


async def call_state_async(
    supervisor: Any, op: str, key: Any, arg: Any, extra: Any, op_id: str | None
) -> Any:
    """:func:`call_state` awaited: the caller's event loop runs on while the state owner
    answers."""
    ray = import_ray()
    try:
        return await supervisor.call.remote(op, key, cloudpickle.dumps(arg), extra, op_id)
    except ray.exceptions.RayTaskError as exc:
        raise task_error_cause(exc) from None


def task_error_cause(error: BaseException) -> BaseException:
    """The exception a Ray task raised, without Ray's wrapper (so a state error has the same
    type and message on Ray as on threads); ``error`` itself when it carries none."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, Exception) else error


def _none_waiting() -> int:
    return 0  # Ray queues the calls: a routine actor's mailbox never reports full


class RayCellCore:
    """What a routine cell needs from its worker, inside a Ray routine actor."""

    def __init__(
        self,
        host: RoutineHost,
        flow: Flow,
        worker_id: str,
        supervisor: Any,
        grants: dict[tuple[str, str], StateGrant],
        overflow: str = "raise",
    ) -> None:
        self.host = host
        self.flow = flow
        self.flow_id = flow.flow_id
        self.worker_id = worker_id
        self.clock = SystemClock()
        self.timers = TimerService(self.clock, name="actorflow-ray-timers")
        self.strict = False  # payloads arrive unpickled; the host pickles what it sends
        self.injector: FaultInjector | None = None  # set by the host when a plan applies
        self.recorder: ActorRecorder | None = None  # set by the host when recording
        self.tracing = None
        self.probes: dict[tuple[str, str], list[Any]] = {}
        self.bounds = {rid: (_none_waiting, limits) for rid, limits in flow.slot_limits().items()}
        # a full slot queue drops its oldest data under drop_oldest, else refuses (a routine
        # never blocks); the mailbox of a Ray actor never reports full
        self.overflow = overflow
        self.posters_waiting = 0
        self.routine_ids = frozenset(flow.routines)
        self.grants = grants
        self.status = "running"
        self.supervisor = supervisor
        self._uid = os.urandom(6).hex()
        self._calls = itertools.count(1)

    def room_made(self) -> None:
        """Nobody waits for room in a Ray actor's mailbox."""

    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.host.report(("dead", job_id, routine_id, slot, reason))

    def open_sealed(self, envelope: Envelope) -> tuple[Any, JobContext]:
        raise RuntimeError("a Ray routine actor receives wires, never sealed envelopes")

    def drop_oldest(self, routine_id: str, limit: int) -> None:
        """Never called: a Ray actor's mailbox never reports full."""

    def child_crashed(self, host: Any, exc: BaseException, records: list[JobRecord]) -> None:
        self.host.crash_reported(exc, records)

    def replace_host(self, host: Any) -> None:
        """Restarts come from the driver's supervision (``RoutineHost.restart``)."""

    def event_loop(self) -> Any:
        """The actor's event loop, where async logic runs (an async routine's host has one)."""
        loop_thread = self.host.loop_thread
        if loop_thread is None:
            raise ConfigurationError(f"routine {self.host.routine_id!r} has no async logic")
        return loop_thread.loop

    def _op_id(self) -> str:
        """The id of a WorkerState call: the same message run again makes the same ids."""
        view = get_current_job()
        record = None if view is None else record_of(view)
        if isinstance(record, RemoteRecord):
            record.calls += 1
            return f"{record.envelope_id}#{record.calls}"
        return f"{self._uid}:{next(self._calls)}"

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        return call_state(self.supervisor, op, key, arg, extra, self._op_id())

    async def state_call_async(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """``await state.aio.…`` in async logic: the loop runs the routine's other tasks while
        the state owner answers."""
        return await call_state_async(self.supervisor, op, key, arg, extra, self._op_id())


class RoutineHost:
    """A Ray actor hosting one actor's worth of a routine: a :class:`RoutineCell`."""

    def __init__(
        self,
        flow_blob: bytes,
        routine_id: str,
        worker_id: str,
        index: int,
        supervisor: Any,
        ledger: Any,
        grants: dict[tuple[str, str], StateGrant],
        overflow: str = "raise",
        faults: bytes | None = None,
        epoch: float = 0.0,
        record: bool = False,
    ) -> None:
        self.routine_id = routine_id
        self.worker_id = worker_id
        self.index = index
        try:
            flow: Flow = cloudpickle.loads(flow_blob)
            routine = flow.get_routine(routine_id)
        except Exception as exc:
            # The flow cannot be loaded in this process (a module or file missing on this
            # node, a routine that cannot be unpickled). A constructor that raised would have
            # Ray restart the actor over and over while the worker's start waits for it:
            # instead the actor stays up, empty, and ``connect`` fails the start with this.
            self.load_error: str | None = "".join(traceback.format_exception_only(exc)).strip()
            return
        self.load_error = None
        self._key = (worker_id, routine_id, index)
        self.ledger = ledger
        self.routine = routine
        # async logic: the cell runs on this loop, and every call below is run there
        self.loop_thread = (
            LoopThread(f"actorflow-loop-{routine_id}-{index}") if self.routine.is_async else None
        )
        self.waiting: deque[Any] = deque()  # messages for an async cell with no room yet
        self._quiet = threading.Event()  # set when an async cell has no task left (at stop)
        self.core = RayCellCore(self, flow, worker_id, supervisor, grants, overflow)
        self.late_reports: deque[tuple[Any, ...]] = deque()  # reported from a timer's thread
        self._thread: int | None = None
        # a fault plan: applied to each message received, and to each activation
        self.faults: FaultInjector | None = None
        self._event_of: dict[int, str] = {}  # id(envelope sent) -> its event, with a plan
        if faults is not None:
            services = ActorFaultServices(epoch, self.core.clock, self.core.timers, self.report)
            self.faults = actor_injector(faults, services, worker_id, routine_id, index)
            self.core.injector = self.faults
        if record:
            self.core.recorder = ActorRecorder(epoch, self.report)
        self.cell = self._new_cell()
        self.restart_requested = False  # read by the cell's plain loop (threads use it)
        self.crashed = False  # waiting for the supervisor's decision; wires wait in pending
        self._kill_after_call = False  # a crash fault: this process ends once the call is sent
        self._opened_in_call: list[str] = []  # envelope ids this call opened
        self.pending: list[Wire] = []
        self.local: deque[Any] = deque()  # messages the cell sent itself
        self.jobs: OrderedDict[str, RemoteJob] = OrderedDict()
        self._jobs_lock = threading.Lock()  # mark_ended runs on the control group's thread
        self.seen = RecentIds(REMEMBERED_ENVELOPES)  # delivered envelopes, to skip redeliveries
        self.targets: dict[str, list[Any]] = {}  # routine id -> its actors
        self.cell_routes: dict[str, list[tuple[str, str, Any]]] | None = None
        self.reports: list[tuple[Any, ...]] = []
        self.unconfirmed: list[Any] = []  # refs of report calls to the ledger, maybe in flight
        self.outgoing: dict[int, tuple[Any, list[Wire]]] = {}
        self._written: dict[int, RemoteRecord] = {}  # records written to, not reported
        self._turn = itertools.count()
        self._me: Any = None
        self._log = logger.bind(worker=worker_id, routine=routine_id)
        self._on_cell_thread(self._start)

    def __repr__(self) -> str:
        # Ray shows it as the actor's name (ray.util.state.list_actors' repr_name)
        return f"RoutineHost({self.worker_id}/{self.routine_id}/{self.index})"

    def _new_cell(self) -> RoutineCell:
        cell = RoutineCell(self.core, self.routine_id, self.routine, self._send_self)
        if self.loop_thread is not None:
            cell.crash_handler = self._task_crashed
            cell.task_done_hook = self._task_ended
        return cell

    def _start(self) -> None:
        self._enter()
        if import_ray().get_runtime_context().was_current_actor_reconstructed:
            # this process replaces one that died (its node was lost, it was killed, a crash
            # fault ended it): what that one held went with it, which the driver must know
            self.report(("restarted", self.worker_id, self.routine_id, self.index, self.node()))
            if self.faults is not None and self._take_over_killed():
                self._flush()
                return
        try:
            self.cell.started()
        except BaseException as exc:
            self.crash(exc, None)
        self._flush()

    def _take_over_killed(self) -> bool:
        """(A fault plan applies.) If a ``crash`` fault killed this actor's previous process,
        go on where it stopped: skip what it handled of the call Ray delivers again, count on
        from its counts, and wait crashed (messages pending) for the supervisor's decision,
        as a crashed actor of the thread backend does."""
        kept = import_ray().get(self.ledger.take.remote(self._key))
        if kept is None:
            return False
        for envelope_id in kept["seen"]:
            self.seen.add(envelope_id)
        assert self.faults is not None
        self.faults.resume(kept["faults"])
        self.crashed = True
        return True

    def _on_cell_thread(self, step: Callable[..., T], *args: Any) -> T:
        """Run ``step`` where the cell runs: here, or on the loop of an async routine (the
        calling thread waits for the step, not for the tasks it starts)."""
        if self.loop_thread is None:
            return step(*args)
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(step(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self.loop_thread.loop.call_soon_threadsafe(run)
        return done.result()

    # -- wiring ------------------------------------------------------------------------
    def connect(self, routes: Routes) -> str:
        """Where each event goes: ``event -> [(target, slot, target's actors)]``. Returns the
        id of the node this actor runs on. Raises ``ConfigurationError`` when this actor
        could not load its flow (the worker does not start)."""
        if self.load_error is not None:
            raise ConfigurationError(
                f"routine {self.routine_id!r} of worker {self.worker_id!r} cannot start on Ray "
                f"node {self.node()}: its flow could not be loaded there ({self.load_error})"
            )
        self._on_cell_thread(self._connect, routes)
        return self.node()

    def _connect(self, routes: Routes) -> None:
        self.targets = {
            target: actors for targets in routes.values() for target, _, actors in targets
        }
        self.cell_routes = {
            event: [(target, slot, self._sender(event)) for target, slot, _ in targets]
            for event, targets in routes.items()
        }
        self.cell.set_routes(self.cell_routes)

    def _wired(self) -> None:
        if self.cell_routes is None:  # a restarted process: the ledger keeps the wiring
            routes = import_ray().get(self.ledger.routes_of.remote(self.worker_id, self.routine_id))
            self._connect(routes)

    # -- messages ------------------------------------------------------------------------
    def deliver(self, wires: list[Wire]) -> None:
        """Handle a batch of messages, in order."""
        self._on_cell_thread(self._deliver, wires)

    def _deliver(self, wires: list[Wire]) -> None:
        self._enter()
        try:
            self._wired()
            self._take(wires)
            self._drain()
        finally:
            self._flush()

    def _take(self, wires: list[Wire]) -> None:
        faults = self.faults
        for wire in wires:
            if self.crashed:
                self.pending.append(wire)
                continue
            envelope = self._open(wire)
            if envelope is None:
                continue
            if faults is not None and faults.message_rules and not wire.replay:
                faults.send(
                    self.core, wire.source, wire.event, self.routine_id, wire.slot, envelope,
                    self._arrived,
                )  # fmt: skip
            else:
                self._run(envelope)

    def _arrived(self, envelope: Envelope) -> None:
        """A message the fault plan let through: now, or later from a timer's thread (a
        delay, a reorder's hold), when it waits in the local queue and wakes the actor."""
        if threading.get_ident() == self._thread:
            self._run(envelope)
        else:
            self._send_self(envelope)

    def _open(self, wire: Wire) -> Envelope | None:
        envelope_id = wire.envelope_id
        if envelope_id in self.seen:
            if not wire.replay:
                return None  # delivered again after a restart: already handled
        else:
            self.seen.add(envelope_id)
            self._opened_in_call.append(envelope_id)
        payload, data, weight = unpack(wire)
        with self._jobs_lock:
            job = self._job(wire.header)
            if job.ended and wire.replay:
                return None  # a replay of a job that ended meanwhile: nothing to recover
        record = new_remote_record(self, job, envelope_id, weight, self.core.clock)
        record.replay = wire.replay
        return new_envelope(self.routine_id, wire.slot, payload, record, data, wire.depth)

    def _job(self, header: JobHeader) -> RemoteJob:
        """The actor's view of a job (callers hold ``_jobs_lock``)."""
        job = self.jobs.get(header.job_id)
        if job is None:
            job = self.jobs[header.job_id] = RemoteJob(header, self._jobs_lock)
            if len(self.jobs) > REMEMBERED_JOBS:
                self.jobs.popitem(last=False)
        return job

    def _run(self, message: Any) -> None:
        if self.loop_thread is not None and (self.waiting or self.cell.occupied >= self.cell.limit):
            self.waiting.append(message)  # as many tasks as the concurrency: it waits its turn
            return
        self._handle(message)

    def _handle(self, message: Any) -> None:
        try:
            self.cell.handle(message)
        except BaseException as exc:  # a crash of this routine actor
            self.crash(exc, message)

    def _pump(self) -> None:
        """(Async cell.) Hand waiting messages to the cell while it has room for a task."""
        cell = self.cell
        while self.waiting and not self.crashed and cell.occupied < cell.limit:
            self._handle(self.waiting.popleft())

    def _task_ended(self) -> None:
        """(Async cell, on the loop.) A task ended: its turn passes on; what it did is sent."""
        self._enter()
        try:
            self._pump()
            self._drain()
        finally:
            self._flush()
            if self.cell.occupied == 0:
                self._quiet.set()

    def _task_crashed(self, exc: BaseException) -> None:
        if not self.crashed:
            self.crash(exc, None)

    def _drain(self) -> None:
        while self.local and not self.crashed:
            self._run(self.local.popleft())

    def _send_self(self, message: Any) -> None:
        self.local.append(message)
        if threading.get_ident() != self._thread and self._me is not None:
            self._me.wake.remote()  # a timer fired on its own thread

    def wake(self) -> None:
        """Run what the cell sent itself (a retry, a policy timer)."""
        self._on_cell_thread(self._wake)

    def _wake(self) -> None:
        self._enter()
        try:
            self._drain()
        finally:
            self._flush()

    def flush(self) -> None:
        """Shutdown: the policy releases what it lets go (``Flush``)."""
        self._on_cell_thread(self._flush_policy)

    def _flush_policy(self) -> None:
        self._enter()
        try:
            if not self.crashed:
                self._run(FLUSH)
            self._drain()
        finally:
            self._flush()

    def mark_ended(self, ended: list[tuple[str, str]]) -> None:
        """These jobs ended early ``(job id, status)``. Called in the ``control`` concurrency
        group, beside a running ``deliver``: a message of such a job still waiting in this
        actor's queue, and the emits of a logic now running for it, become dead letters
        instead of running (:meth:`forget` follows in order, for the joins)."""
        for job_id, status in ended:
            with self._jobs_lock:
                job = self._job(JobHeader(job_id, "", self.worker_id, {}, 0.0))
            job.end(JobStatus(status))  # cancels the task of async logic running for it

    def forget(self, ended: list[tuple[str, str]]) -> None:
        """These jobs ended early ``(job id, status)``: later messages are dead letters, and
        their data waiting in a join leaves it."""
        self._on_cell_thread(self._forget, ended)

    def _forget(self, ended: list[tuple[str, str]]) -> None:
        self._enter()
        try:
            for job_id, status in ended:
                with self._jobs_lock:
                    job = self._job(JobHeader(job_id, "", self.worker_id, {}, 0.0))
                job.end(JobStatus(status))
                if job.last is not None and self.cell.parks and not self.crashed:
                    self._run(JoinCheck(job.last))
            self._drain()
        finally:
            self._flush()

    def join_check(self, job_id: str) -> None:
        """The driver saw nothing of the job in flight but data waiting in joins."""
        self._on_cell_thread(self._join_check, job_id)

    def _join_check(self, job_id: str) -> None:
        self._enter()
        try:
            job = self.jobs.get(job_id)
            if job is not None and job.last is not None and not job.ended and not self.crashed:
                job.stalled = True
                try:
                    self._run(JoinCheck(job.last))
                finally:
                    job.stalled = False
            self._drain()
        finally:
            self._flush()

    # -- crashes and restarts ------------------------------------------------------------
    def crash(self, exc: BaseException, message: Any) -> None:
        self.crashed = True
        self.cell.crashed(self, exc, message)  # runs on_stop, then crash_reported

    def crash_reported(self, exc: BaseException, records: list[JobRecord]) -> None:
        text = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        job_ids = [record.job_id for record in records]
        self.report(("crash", self.worker_id, self.routine_id, self.index, job_ids, text, trace))
        if self.faults is not None and getattr(exc, "fault_rule", None) is not None:
            # a crash fault kills this process for real once the call's reports are sent
            self._kill_after_call = True

    def restart(self, healthy: bool) -> None:
        """Start a successor cell that takes over the queued data (the supervisor decided):
        after a crash, or for a healthy actor the strategy restarts with a crashed one."""
        self._on_cell_thread(self._restart, healthy)

    def _restart(self, healthy: bool) -> None:
        self._enter()
        try:
            previous = self.cell
            if healthy and not self.crashed:
                try:
                    previous.routine.on_stop()
                except Exception:
                    self._log.exception("on_stop of {} failed during a restart", self.routine_id)
            cell = self._new_cell()
            if self.cell_routes is not None:
                cell.set_routes(self.cell_routes)
            cell.take_over(previous)
            self.cell = cell
            self.crashed = False
            try:
                cell.started()
            except BaseException as exc:
                self.crash(exc, None)
                return
            pending, self.pending = self.pending, []
            if self.loop_thread is not None:
                self._pump()  # what waited for room before the crash goes first
            self._take(pending)
            self._drain()
        finally:
            self._flush()

    def stop(self, reason: str) -> None:
        """End: data still queued ends its job (cancelled), waiting wires are dead letters;
        tasks of async logic still running are cancelled and awaited first."""
        if self.loop_thread is None:
            self._stop(reason)
            self._confirm_reports()
            return
        self._on_cell_thread(self._cancel_tasks)
        if not self._quiet.wait(STOP_TASKS_SECONDS):
            self._log.warning("tasks of {} did not end when cancelled", self.routine_id)
        self._on_cell_thread(self._stop, reason)
        self.loop_thread.stop()
        self._confirm_reports()

    def _confirm_reports(self) -> None:
        """Wait until every report sent has reached the ledger: the driver kills the actor
        once ``stop`` returns, and then closes the ledger, which must hold them by then (the
        dead letters of a stop are reported by the stop itself)."""
        unconfirmed, self.unconfirmed = self.unconfirmed, []
        if unconfirmed:
            ray = import_ray()
            _, late = ray.wait(
                unconfirmed, num_returns=len(unconfirmed), timeout=STOP_REPORTS_SECONDS
            )
            if late:
                self._log.warning("{} report(s) of {} may be lost", len(late), self.routine_id)

    def _cancel_tasks(self) -> None:
        self._quiet.clear()
        if self.cell.occupied == 0:
            self._quiet.set()
        else:
            self.cell.cancel_tasks()

    def _stop(self, reason: str) -> None:
        self._enter()
        try:
            for wire in self.pending:
                self.core.dead_letter(wire.header.job_id, self.routine_id, wire.slot, reason)
            self.pending = []
            for message in self.waiting:
                if isinstance(message, Envelope):
                    self.core.dead_letter(message.job_id, self.routine_id, message.slot, reason)
            self.waiting.clear()
            self.local.clear()
            if self.crashed:
                self.cell.cancel_queued(reason)
            else:
                try:
                    self.cell.stopped()
                except Exception:
                    self._log.exception("on_stop of {} failed", self.routine_id)
            self.core.timers.stop()
        finally:
            self._flush()

    def metrics(self) -> dict[str, Any]:
        return self._on_cell_thread(self.cell.metrics)

    def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        node_id: str = import_ray().get_runtime_context().get_node_id()
        return node_id

    def process(self) -> dict[str, Any]:
        """This actor's process id and Ray node (on the ``control`` group: answered beside a
        running call)."""
        return {"pid": os.getpid(), "node": self.node()}

    # -- what records tell their host -----------------------------------------------------
    def report(self, entry: tuple[Any, ...]) -> None:
        """Send ``entry`` to the driver with this call's reports; from another thread (a
        timer's), with the reports of the call it wakes the actor for."""
        if threading.get_ident() == self._thread:
            self.reports.append(entry)
        else:
            self.late_reports.append(entry)
            if self._me is not None:
                self._me.wake.remote()

    def touched(self, record: RemoteRecord) -> None:
        self._written[id(record)] = record

    def parked(self, record: RemoteRecord) -> None:
        weight = record.weight
        self.reports.append(
            ("park", record.job_id, record.envelope_id, weight.numerator, weight.denominator,
             self._me)
        )  # fmt: skip

    def settled(
        self, record: RemoteRecord, children: list[tuple[Envelope, Fraction]], returned: Fraction
    ) -> None:
        """The cell is done with a message: send its children with their shares of its
        weight; report the share that comes back, with what was written to the job."""
        header = record.job.header
        for index, (child, share) in enumerate(children):
            actors = self.targets[child.target]
            try:
                wire = pack(
                    f"{record.envelope_id}.{index}", share, child.slot, child.payload,
                    child.data or {}, header, child.depth, self.routine_id,
                    self._event_of.pop(id(child), None), record.replay,
                )  # fmt: skip
            except SerializationError as exc:
                record.fail(
                    SerializationError(
                        f"routine {self.routine_id!r} -> {child.target}.{child.slot}: {exc}"
                    ),
                    self.routine_id,
                )
                continue
            actor = actors[next(self._turn) % len(actors)]
            key = id(actor)
            if key not in self.outgoing:
                self.outgoing[key] = (actor, [])
            self.outgoing[key][1].append(wire)
        self._report_record(record, record.envelope_id, returned)

    def _report_record(self, record: RemoteRecord, report_id: str, weight: Fraction) -> None:
        merges, trace, errors, failure, steps = record.take_report()
        self._written.pop(id(record), None)
        end = None
        if record.job.ended and record.job.status is not JobStatus.RUNNING:
            end = (record.job.status.value, record.error, failure[1] if failure else "")
        self.reports.append(
            ("done", record.job_id, report_id, weight.numerator, weight.denominator, merges,
             trace, errors, end, steps)
        )  # fmt: skip

    def _send(self, envelope: Envelope) -> None:
        record = envelope.rec
        assert isinstance(record, RemoteRecord)
        record.send(envelope)

    def _sender(self, event: str) -> Callable[[Envelope], None]:
        """How the cell sends on ``event``: with a fault plan, the wire names the event."""
        if self.faults is None:
            return self._send
        event_of, send = self._event_of, self._send

        def send_on_event(envelope: Envelope) -> None:
            event_of[id(envelope)] = event
            send(envelope)

        return send_on_event

    # -- around every call ---------------------------------------------------------------
    def _enter(self) -> None:
        self._thread = threading.get_ident()
        self._opened_in_call = []
        if self._me is None:
            self._me = import_ray().get_runtime_context().current_actor
        CURRENT_ACTIVATION.set(self.cell)

    def _flush(self) -> None:
        """Reports first (the driver learns of writes before anything downstream can end the
        job), then one call per downstream actor."""
        for record in list(self._written.values()):  # written to, not settled yet
            if record.merges or record.trace_out or record.errors_out or record.job.ended:
                record.partials += 1
                self._report_record(record, f"{record.envelope_id}~{record.partials}", Fraction(0))
        self._written.clear()
        while self.late_reports:
            self.reports.append(self.late_reports.popleft())
        if self.faults is not None:
            entries = self.faults.take_log()
            if entries:
                self.reports.append(("faults", entries))
        sent: list[Any] = []
        if self.reports:
            reports, self.reports = self.reports, []
            reported = self.ledger.report.remote(reports)
            sent.append(reported)
            self._unconfirmed(reported)
        if self.outgoing:
            outgoing, self.outgoing = self.outgoing, {}
            for actor, wires in outgoing.values():
                sent.append(actor.deliver.remote(wires))
        if self._kill_after_call:
            self._die(sent)

    def _unconfirmed(self, reported: Any) -> None:
        """Keep the ref of a report call until it is known to have arrived."""
        unconfirmed = self.unconfirmed
        unconfirmed.append(reported)
        if len(unconfirmed) >= UNCONFIRMED_REPORTS:
            _, self.unconfirmed = import_ray().wait(
                unconfirmed, num_returns=len(unconfirmed), timeout=0
            )

    def _die(self, sent: list[Any]) -> None:
        """End this process (a ``crash`` fault), as a crashing process would, once what this
        call sent has arrived: Ray starts a new one and delivers the unfinished call again,
        and the new process learns from the ledger what this one handled of it."""
        assert self.faults is not None
        ray = import_ray()
        kept = {"seen": self._opened_in_call, "faults": self.faults.snapshot()}
        try:
            ray.get(self.ledger.keep.remote(self._key, kept), timeout=KILL_WAIT_SECONDS)
            ray.wait(sent, num_returns=len(sent), timeout=KILL_WAIT_SECONDS)
        except Exception:
            self._log.exception("a crash fault could not hand over; the process ends anyway")
        self._log.warning("a crash fault ends the process of routine actor {}", self.routine_id)
        os._exit(CRASH_EXIT_CODE)
