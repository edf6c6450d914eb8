"""A running worker: its supervisor, its routine actors and their mailboxes (internal)."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import cloudpickle
from loguru import logger

from actorflow._lease import WorkerStore
from actorflow.engine.actor_host import STOP, WAKE, ActorHost, start_host
from actorflow.engine.admission import Admission
from actorflow.engine.dispatch import Dispatcher, Mailbox, ThreadDispatcher
from actorflow.engine.envelope import Envelope
from actorflow.engine.loop_host import LoopThread
from actorflow.engine.metrics import routine_report
from actorflow.engine.reply import LoopReply, Reply
from actorflow.engine.routine_cell import FLUSH, RoutineCell
from actorflow.engine.services import WorkerServices
from actorflow.engine.state_owner import BUSY, StateCall, SupervisorCore
from actorflow.errors import QueueFullError, RuntimeClosedError, WorkerFailedError
from actorflow.flow import Flow, StateGrant
from actorflow.job import JobContext, JobRecord, JobStatus, record_of, with_record
from actorflow.state_limits import StateLimits
from actorflow.supervision import RestartIntensity
from actorflow.worker import WorkerState

__all__ = ["WorkerCore", "post_targets"]

STATE_CALL_TIMEOUT = 60.0
Send = Callable[[Any], None]


def post_targets(
    mailboxes: dict[str, Any], limits: dict[str, dict[str, int]]
) -> dict[str, dict[str, tuple[Any, int]]]:
    """``routine_id -> slot -> (mailbox, max_queue_length)`` for ``Runtime.post``: a post
    looks up its target once (two str lookups cost less than hashing a tuple key)."""
    return {
        routine_id: {slot: (mailboxes[routine_id], limit) for slot, limit in slots.items()}
        for routine_id, slots in limits.items()
    }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _ChildCrashed:
    __slots__ = ("exc", "host", "records")

    def __init__(self, host: ActorHost, exc: BaseException, records: list[JobRecord]) -> None:
        self.host = host
        self.exc = exc
        self.records = records


class _RestartChild:
    __slots__ = ("host",)

    def __init__(self, host: ActorHost) -> None:
        self.host = host


class WorkerCore:
    """One running instance of a flow."""

    def __init__(
        self,
        services: WorkerServices,
        flow: Flow,
        worker_id: str,
        limits: StateLimits | None = None,
    ) -> None:
        flow.validate()
        self.services = services
        self.dispatcher: Dispatcher = services.dispatcher or ThreadDispatcher()
        # a state call is applied on the caller's thread when the supervisor is idle; on an
        # inline dispatcher (the deterministic runtime) it is always a message, in order
        self.lends_turn = not self.dispatcher.inline
        self.book = services.book
        self.flow = flow
        self.flow_id = flow.flow_id
        self.worker_id = worker_id
        self.clock = clock = services.clock
        self.timers = services.timers
        self.strict = services.strict
        self.status = "starting"
        self.failure: str | None = None
        self.supervision = flow.supervision
        routines = flow.routines
        self.routines = routines
        self.routine_ids = frozenset(routines)
        self.order = list(routines)
        self.grants: dict[tuple[str, str], StateGrant] = {
            (grant.reader, grant.owner): grant for grant in flow.state_grants
        }
        self.max_queue = flow.slot_limits()
        self.slots = {rid: frozenset(limits) for rid, limits in self.max_queue.items()}
        self._loop_thread: LoopThread | None = None  # for async routines, made when needed
        self._loop_lock = threading.Lock()
        self.mailboxes: dict[str, Mailbox] = {
            rid: self.dispatcher.mailbox(self, rid) for rid in routines
        }
        self.post_targets = post_targets(self.mailboxes, self.max_queue)
        self.bounds = {rid: (self.mailboxes[rid].qsize, self.max_queue[rid]) for rid in routines}
        # what a post watches besides its target's bound (a deterministic run has no actor
        # thread to wait for): see actorflow.engine.admission
        self.admission = Admission(
            flow.routes(),
            self.max_queue,
            {rid: mailbox.qsize for rid, mailbox in self.mailboxes.items()},
            watch=not self.dispatcher.inline,
        )
        self.admit_tick = self.admission.tick
        self.injector = services.injector
        self.recorder = services.recorder
        self.probes = services.probes
        self.tracing = services.tracing
        self._routes: dict[str, dict[str, list[tuple[str, str, Send]]]] = {}
        for (source, event), targets in flow.routes().items():
            self._routes.setdefault(source, {})[event] = [
                (target, slot, self._send_function(source, event, target, slot))
                for target, slot in targets
            ]
        self.overflow = "block"
        self.posters_waiting = 0
        self._room = threading.Condition(threading.Lock())
        self._room_futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.hosts: dict[str, list[Any]] = {}
        self._hosts_lock = threading.RLock()
        self._inline_lock = threading.RLock()
        self.intensity = RestartIntensity(flow.supervision, self.order)
        self.restart_count = 0
        self._supervisor_mailbox = self.dispatcher.mailbox(self, None)
        self._supervisor: ActorHost | None = None
        self._log = logger.bind(worker=worker_id, flow=flow.flow_id)
        state_store = services.state_store
        stored = (
            None
            if state_store is None
            else WorkerStore(state_store, worker_id, services.lease_owner, services.lease_seconds)
        )
        self.supervisor_core = SupervisorCore(
            worker_id,
            limits or services.state_limits,
            stored,
            clock.monotonic,
            services.state_serializer or "json",
        )
        self.supervisor_core.control_handler = self._on_control
        self.handle = WorkerState(self)  # the full-access handle (handles are immutable)

    def _send_function(self, source: str, event: str, target: str, slot: str) -> Send:
        put = self.mailboxes[target].put
        if self.injector is None:
            return put
        wrapped: Send = self.injector.wrap(self, source, event, target, slot, put)
        return wrapped

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this worker's async routines run on: the deterministic scheduler's,
        or this worker's own loop thread (started now if it was not)."""
        if self.dispatcher.inline:
            loop: asyncio.AbstractEventLoop = self.dispatcher.event_loop()  # type: ignore[attr-defined]
            return loop
        with self._loop_lock:
            if self._loop_thread is None:
                self._loop_thread = LoopThread(f"actorflow-loop-{self.worker_id}")
            loop_thread = self._loop_thread
        return loop_thread.loop

    # -- life cycle --------------------------------------------------------------------
    def _new_cell(self, routine_id: str, previous: RoutineCell | None = None) -> RoutineCell:
        cell = RoutineCell(
            self, routine_id, self.routines[routine_id], self.mailboxes[routine_id].put
        )
        cell.set_routes(self._routes.get(routine_id, {}))
        if previous is not None:
            cell.take_over(previous)
        return cell

    def _start_actor(self, routine_id: str, previous: RoutineCell | None = None) -> Any:
        cell = self._new_cell(routine_id, previous)
        name = f"{self.worker_id}-{routine_id}"
        return self.dispatcher.start(self.mailboxes[routine_id], cell, name)

    def start(self, restore: bool = False, discard: bool = False, take_over: bool = False) -> None:
        """Start the supervisor (taking the worker's lease and restoring its durable state),
        then every routine actor in order."""
        self.supervisor_core.open_store(
            restore=restore,
            discard=discard,
            take_over=take_over,
            # a deterministic runtime has no timer thread: its virtual timers would keep it busy
            call_at=None if self.dispatcher.inline else self.timers.call_at,
            monotonic=self.clock.monotonic,
        )
        try:
            if not self.dispatcher.inline:
                self._supervisor = start_host(
                    self._supervisor_mailbox,  # type: ignore[arg-type]
                    self.supervisor_core,
                    f"{self.worker_id}-supervisor",
                )
            with self._hosts_lock:
                for routine_id in self.order:
                    routine = self.routines[routine_id]
                    # an async routine is one actor whatever its concurrency (tasks in flight)
                    actors = 1 if routine.is_async else routine.concurrency
                    self.hosts[routine_id] = [self._start_actor(routine_id) for _ in range(actors)]
                self.status = "running"
        except BaseException:
            self.supervisor_core.close_store()  # a worker that never ran owns nothing
            raise
        self._log.debug("worker {} started", self.worker_id)

    def flush(self) -> None:
        """Ask every queueing routine to release what it holds (used before shutdown)."""
        with self._hosts_lock:
            for routine_id, hosts in self.hosts.items():
                if hosts and not hosts[0].cell.immediate:
                    self.mailboxes[routine_id].put(FLUSH)

    def stop(self, timeout: float | None = None) -> None:
        """Stop routine actors in reverse start order, then the supervisor; join every thread
        (``timeout`` is for backends that can abandon an actor; threads are always joined).

        Messages still in a mailbox afterwards (for a failed worker, or sent after the stop)
        are recorded as dead letters.
        """
        with self._hosts_lock:
            if self.status in ("stopped", "stopping"):
                return
            failed = self.status == "failed"
            self.status = "stopping"
        for routine_id in reversed(self.order):

            def group(routine_id: str = routine_id) -> list[Any]:
                with self._hosts_lock:
                    return list(self.hosts.get(routine_id, ()))

            self.dispatcher.stop_hosts(self.mailboxes[routine_id], group)
        with self._loop_lock:
            loop_thread = self._loop_thread
            if loop_thread is None:  # none may start from now on
                loop_thread = self._loop_thread = LoopThread(f"actorflow-loop-{self.worker_id}")
        loop_thread.stop()
        if self._supervisor is not None:
            self._supervisor_mailbox.put(STOP)
            if self._supervisor.thread is not None:
                self._supervisor.thread.join()
        with self.supervisor_core.turn:  # no state call runs while the lease is released
            self.supervisor_core.close_store()
        reason = "worker failed" if failed else "worker stopped"
        for routine_id, mailbox in self.mailboxes.items():
            while True:
                try:
                    message = mailbox.get_nowait()
                except queue.Empty:
                    break
                if type(message) is Envelope:
                    self.dead_letter(message.job_id, routine_id, message.slot, reason)
        self.status = "failed" if failed else "stopped"
        self._log.debug("worker {} {}", self.worker_id, self.status)

    def placement(self, routine_id: str) -> list[str]:
        """No Ray node: every actor of this worker is a thread of this process."""
        return []

    def processes(self) -> dict[str, Any]:
        """Every actor of this worker is a thread of this process."""
        here = {"pid": os.getpid(), "node": None}
        return {
            "state_owner": here,
            "routines": {
                routine_id: [dict(here) for _ in self.hosts.get(routine_id, ())]
                for routine_id in self.order
            },
        }

    def routine_metrics(self) -> dict[str, Any]:
        """Counters of each routine, summed over its actors (see ``Runtime.metrics``)."""
        with self._hosts_lock:
            groups = {rid: list(hosts) for rid, hosts in self.hosts.items()}
        return {
            routine_id: routine_report(
                [host.cell.metrics() for host in groups.get(routine_id, ())],
                self.mailboxes[routine_id].qsize(),
            )
            for routine_id in self.order
        }

    # -- supervision -------------------------------------------------------------------
    def child_crashed(self, host: ActorHost, exc: BaseException, records: list[JobRecord]) -> None:
        """Called on a crashed actor's thread: the supervisor decides what happens."""
        self.to_supervisor(_ChildCrashed(host, exc, records))

    def to_supervisor(self, message: Any) -> None:
        """Deliver a message to the supervisor (inline when the dispatcher runs everything)."""
        if self.dispatcher.inline:
            with self._inline_lock:
                self.supervisor_core.handle(message)
        else:
            self._supervisor_mailbox.put(message)

    def _on_control(self, message: Any) -> None:
        """Supervisor-thread handler of crash reports and delayed restarts."""
        if type(message) is _ChildCrashed:
            self._handle_crash(message.host, message.exc)
            routine_id = message.host.cell.routine_id  # type: ignore[attr-defined]
            for record in message.records:  # after the restarts are under way
                record.fail(message.exc, routine_id, "actor crashed", " (routine actor crashed)")
        elif type(message) is _RestartChild:
            self.replace_host(message.host)

    def _handle_crash(self, host: ActorHost, exc: BaseException) -> None:
        routine_id: str = host.cell.routine_id  # type: ignore[attr-defined]
        with self._hosts_lock:
            if self.status != "running":
                return
            now = self.clock.monotonic()
            error = f"{type(exc).__name__}: {exc}"
            decision = self.intensity.crashed(self.worker_id, routine_id, error, now)
            if decision.failure is not None:
                self._fail(decision.failure)
                return
            self.restart_count = self.intensity.count
            # under one_for_all and rest_for_one the crashed routine's other actors restart too
            strategy = self.supervision.strategy
            others = [] if strategy == "one_for_one" else [routine_id, *decision.siblings]
            for other_id in others:
                for other in self.hosts.get(other_id, ()):
                    if other is not host and not other.actor_stopped.is_set():
                        other.restart_requested = True
                        self.mailboxes[other_id].put(WAKE)
            delay = decision.delay
        self._log.info(
            "restarting routine {} of worker {} ({})",
            routine_id,
            self.worker_id,
            self.supervision.strategy,
        )
        if delay > 0:
            send = self.to_supervisor
            self.timers.call_at(now + delay, lambda: send(_RestartChild(host)))
        else:
            self.replace_host(host)

    def replace_host(self, host: ActorHost) -> None:
        """Start a successor for ``host`` on the same mailbox, with its queued data."""
        routine_id: str = host.cell.routine_id  # type: ignore[attr-defined]
        with self._hosts_lock:
            if self.status not in ("running", "stopping"):
                return
            group = self.hosts[routine_id]
            if host not in group:
                return
            successor = self._start_actor(routine_id, host.cell)  # type: ignore[arg-type]
            group[group.index(host)] = successor

    def _fail(self, reason: str) -> None:
        """Past the restart intensity: fail the worker and every unfinished job of it."""
        self.status = "failed"
        self.failure = reason
        self._log.error(reason)
        error = WorkerFailedError(reason)
        for record in self.book.unfinished(self.worker_id):
            record.fail(error, None, "worker failed")
        for routine_id, hosts in self.hosts.items():
            for host in hosts:
                if self.dispatcher.inline:
                    host.stop_now()
                else:
                    self.mailboxes[routine_id].put(STOP)

    # -- back-pressure -----------------------------------------------------------------
    def make_room(self, routine_id: str, limit: int, timeout: float) -> None:
        """The routine's mailbox holds ``limit`` messages: apply the overflow policy."""
        mailbox = self.mailboxes[routine_id]
        policy = self.overflow
        if policy == "block":
            with self._room:
                self.posters_waiting += 1
                try:
                    if self._room.wait_for(lambda: mailbox.qsize() < limit, timeout):
                        return
                finally:
                    self.posters_waiting -= 1
        elif policy == "drop_oldest":
            self.drop_oldest(routine_id, limit)
            return
        raise self._queue_full(routine_id, limit, policy, timeout)

    def backlog(self) -> tuple[str, int] | None:
        """``(routine, half)`` when the messages waiting in this worker may put at least
        ``half`` of ``routine``'s bound into its mailbox, else None (``Runtime.post`` asks on
        the posts ``admit_tick`` marks; see :mod:`actorflow.engine.admission`)."""
        return self.admission.backlog()

    def admit(self, routine_id: str, half: int, timeout: float) -> None:
        """A post found the worker backlogged (:meth:`backlog`): apply the overflow policy
        before the post enters the worker. ``block`` waits until the waiting messages may put
        fewer than ``half`` into ``routine_id``'s mailbox, ``raise`` refuses the post at once
        (either raises ``QueueFullError``, and nothing is posted); ``drop_oldest`` lets the
        post in (a full mailbox drops its oldest message when a routine emits into it)."""
        policy = self.overflow
        if policy == "drop_oldest":
            return
        if policy == "block":
            with self._room:
                self.posters_waiting += 1
                try:
                    reaching = self.admission.reaching
                    if self._room.wait_for(lambda: reaching(routine_id) < half, timeout):
                        return
                finally:
                    self.posters_waiting -= 1
        raise self._queue_full(routine_id, half, policy, timeout, backlog=True)

    def drop_oldest(self, routine_id: str, limit: int) -> None:
        mailbox = self.mailboxes[routine_id]
        keep: list[Any] = []
        while mailbox.qsize() >= limit:
            try:
                message = mailbox.get_nowait()
            except queue.Empty:
                break
            if type(message) is not Envelope:
                keep.append(message)  # control messages are never dropped
                continue
            job_id = message.job_id
            record = None if job_id is None else self.book.record(job_id)
            if record is not None:
                record.fail(
                    QueueFullError(
                        f"dropped: routine {routine_id!r} had {limit} messages waiting "
                        "(overflow policy 'drop_oldest')"
                    ),
                    routine_id,
                    "dropped",
                )
            self.dead_letter(job_id, routine_id, message.slot, "dropped (mailbox full)")
        for message in keep:
            mailbox.put(message)

    async def wait_for_room(
        self, routine_id: str, limit: int, timeout: float, backlog: bool = False
    ) -> None:
        """``make_room`` for ``overflow="block"`` as an await: wait (without blocking the
        caller's event loop) until the routine's mailbox holds fewer than ``limit`` messages;
        ``QueueFullError`` after ``timeout`` seconds. With ``backlog``, until the messages
        waiting in the worker may put fewer than ``limit`` into its mailbox (:meth:`admit`)."""
        size: Callable[[], int] = (
            (lambda: self.admission.reaching(routine_id))
            if backlog
            else self.mailboxes[routine_id].qsize
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self._room:
            self.posters_waiting += 1
        try:
            while size() >= limit:
                future: asyncio.Future[None] = loop.create_future()
                waiter = (loop, future)
                with self._room:
                    self._room_futures.append(waiter)
                try:
                    if size() < limit:  # room was made before we listened
                        return
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise self._queue_full(routine_id, limit, "block", timeout, backlog)
                    try:
                        await asyncio.wait_for(future, remaining)
                    except TimeoutError:
                        if size() < limit:
                            return
                        full = self._queue_full(routine_id, limit, "block", timeout, backlog)
                        raise full from None
                finally:
                    with self._room:
                        if waiter in self._room_futures:
                            self._room_futures.remove(waiter)
        finally:
            with self._room:
                self.posters_waiting -= 1

    def _queue_full(
        self, routine_id: str, limit: int, policy: str, timeout: float, backlog: bool = False
    ) -> Exception:
        waited = f", waited {timeout:g} s" if policy == "block" else ""
        if backlog:
            return QueueFullError(
                f"the messages waiting in worker {self.worker_id!r} may put "
                f"{self.admission.reaching(routine_id)} into the mailbox of routine "
                f"{routine_id!r} (at least half its max_queue_length="
                f"{min(self.max_queue[routine_id].values())}: the other half is kept for the "
                f"jobs already posted; overflow policy {policy!r}{waited})"
            )
        return QueueFullError(
            f"routine {routine_id!r} of worker {self.worker_id!r} already has "
            f"{self.mailboxes[routine_id].qsize()} messages waiting (max_queue_length={limit}; "
            f"overflow policy {policy!r}{waited})"
        )

    def room_made(self) -> None:
        """A routine took a message out of its mailbox while a poster waits for room."""
        with self._room:
            self._room.notify_all()
            futures, self._room_futures = self._room_futures, []
        for loop, future in futures:
            with suppress(RuntimeError):  # that loop has closed: nobody waits there any more
                loop.call_soon_threadsafe(_resolve, future)

    # -- messages ----------------------------------------------------------------------
    def sender(self, routine_id: str) -> Callable[[Any], None]:
        return self.mailboxes[routine_id].put

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """Send a state request to the supervisor and wait for its answer."""
        if self.status in ("stopped", "failed"):
            raise RuntimeClosedError(
                f"worker {self.worker_id!r} is {self.status}; its state can no longer be used"
            )
        if self.lends_turn:  # an idle supervisor lends its turn: no hand-off
            result = self.supervisor_core.apply_now(op, key, arg, extra)
            if result is not BUSY:
                return result
        reply = Reply()
        self.to_supervisor(StateCall(op, key, arg, extra, reply))
        try:
            return reply.get(STATE_CALL_TIMEOUT)
        except TimeoutError:
            raise RuntimeClosedError(
                f"the supervisor of worker {self.worker_id!r} did not answer within "
                f"{STATE_CALL_TIMEOUT} s"
            ) from None

    async def state_call_async(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        """:meth:`state_call` as an await: the caller's event loop runs on while the
        supervisor answers."""
        if self.status in ("stopped", "failed"):
            raise RuntimeClosedError(
                f"worker {self.worker_id!r} is {self.status}; its state can no longer be used"
            )
        if self.dispatcher.inline:  # the supervisor answers on this thread, at once
            return self.state_call(op, key, arg, extra)
        result = self.supervisor_core.apply_now(op, key, arg, extra)
        if result is not BUSY:
            return result
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.to_supervisor(StateCall(op, key, arg, extra, LoopReply(loop, future)))  # type: ignore[arg-type]
        try:
            return await asyncio.wait_for(future, STATE_CALL_TIMEOUT)
        except TimeoutError:
            raise RuntimeClosedError(
                f"the supervisor of worker {self.worker_id!r} did not answer within "
                f"{STATE_CALL_TIMEOUT} s"
            ) from None

    # -- hooks for cells ---------------------------------------------------------------
    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.book.dead_letter(job_id, self.worker_id, routine_id, slot, reason)

    def open_sealed(self, envelope: Envelope) -> tuple[Any, JobContext]:
        """Unpickle a strict-mode envelope and link its job view back to the job's record.

        Every unfinished job is among the runtime's active jobs from before its first message
        is sent until it ends, so a job found neither there nor among the retained finished
        jobs has ended and been forgotten (``job_retention``). Its view then gets a copy of
        the record marked ended, ``cancelled`` since how it ended is no longer known: the
        message becomes a dead letter, never a run. (The Ray backend unpickles its views in
        the routine's process and skips ended jobs by their ids; it does not come here.)
        """
        payload = cloudpickle.loads(envelope.payload)
        job: JobContext = cloudpickle.loads(envelope.blob)
        record = self.book.record(job.job_id)
        if record is not None:
            return payload, with_record(job, record)
        record_of(job).finish(JobStatus.CANCELLED, "ended; no longer retained")
        return payload, job
