"""The driver's side of the Ray backend (internal): the workers the runtime sees, the thread
that carries posts out to routine actors, and the thread that applies their reports to the
jobs' records (weight, writes, dead letters, joins waiting, crashes and the supervision
decisions they call for)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import cloudpickle
from loguru import logger

from actorflow._clock import SystemClock
from actorflow.activation_policies import ImmediatePolicy
from actorflow.backends.ray._host import RoutineHost, call_state, task_error_cause
from actorflow.backends.ray._import import import_ray
from actorflow.backends.ray._ledger import Ledger
from actorflow.backends.ray._state import StateActor
from actorflow.backends.ray._wire import JobHeader, Wire, pack
from actorflow.engine.envelope import Envelope
from actorflow.engine.metrics import routine_report
from actorflow.engine.services import WorkerServices
from actorflow.engine.timers import TimerService
from actorflow.engine.worker_core import post_targets
from actorflow.errors import (
    ActorflowError,
    ClusterJoinError,
    ConfigurationError,
    JobTimeoutError,
    QueueFullError,
    RuntimeClosedError,
    SerializationError,
    WorkerFailedError,
)
from actorflow.flow import Flow, StateGrant
from actorflow.job import JobRecord, JobStatus, view_parts
from actorflow.state_limits import StateLimits
from actorflow.supervision import RestartIntensity
from actorflow.worker import WorkerState

__all__ = ["RayBackend", "RayWorker"]

CONTROL_CALLS_KEPT = 64  # per routine actor, before those that ran are forgotten
CONTROL_GROUP = "control"  # a routine actor's second thread: jobs ended while it is busy
REMEMBERED_ENDED_JOBS = 10_000  # ended jobs whose applied report ids are kept
LOST_AFTER_RESTART_SECONDS = 30.0  # see RayBackend._actor_restarted
REPLAY_AFTER_SECONDS = 2.0  # see RayBackend._actor_restarted
STOP_SECONDS = 10.0  # how long stopping a worker waits for its actors before killing them


def _remote_classes(ray: Any) -> tuple[Any, Any, Any]:
    """The actor classes as Ray actors: routine hosts and state actors restart with their
    process (Ray delivers the unfinished calls again); one ledger. The ledger and the state
    actors need no CPU of their own, so they fit on a driver's node that has none to offer."""
    return (
        ray.remote(max_restarts=-1, max_task_retries=-1, concurrency_groups={CONTROL_GROUP: 1})(
            RoutineHost
        ),
        ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)(StateActor),
        ray.remote(num_cpus=0)(Ledger),
    )


def _join(ray: Any, address: str) -> None:
    """Join the Ray cluster at ``address``; a refusal says what to check."""
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as exc:
        raise ClusterJoinError(
            f"cannot join the Ray cluster at {address!r}: {exc}. Check the address (ray status "
            "on the head node prints it); if the cluster uses token authentication "
            "(RAY_AUTH_MODE=token), this process needs the cluster's token: RAY_AUTH_MODE=token "
            "and RAY_AUTH_TOKEN=<token>, or the token in RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
        ) from exc


def _driver_node(ray: Any) -> Any:
    """A scheduling strategy that keeps an actor on the driver's node (and only there)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

    return NodeAffinitySchedulingStrategy(
        node_id=ray.get_runtime_context().get_node_id(), soft=False
    )


class _RaySender:
    """``post`` puts envelopes here; the backend's sender thread batches them to the actor.

    Ray queues actor calls without a bound and cannot say how many wait, so the mailbox a
    post sees is counted here: the jobs posted to the routine whose first message its actors
    have not finished handling (``posted``, oldest first), less one per actor of the routine
    (the message each may be running). Messages other routines emit to it are not counted:
    a run's own emits are bounded by the routine cell as on every backend."""

    def __init__(self, backend: RayBackend, worker: RayWorker, routine_id: str) -> None:
        self.backend = backend
        self.worker = worker
        self.routine_id = routine_id
        self.posted: dict[str, str] = {}  # job id -> slot, in post order (under worker.room)

    def qsize(self) -> int:
        return max(0, len(self.posted) - len(self.worker.actors.get(self.routine_id, ())))

    def put(self, envelope: Envelope) -> None:
        job_id = envelope.job_id
        if job_id is not None:
            with self.worker.room:
                self.posted[job_id] = envelope.slot
            self.backend.first_hops[job_id] = self
        self.backend.outbound.put((self.worker, self.routine_id, envelope))

    def taken(self, job_id: str) -> None:
        """The job's first message was handled (or dropped): room for one more."""
        with self.worker.room:
            if self.posted.pop(job_id, None) is not None:
                self.worker.room.notify_all()

    def waiting(self) -> list[tuple[str, str]]:
        """``(job id, slot)`` of the posts whose message waits in the queue, oldest first (a
        guess: the oldest ones, one per actor, are taken to be running)."""
        with self.worker.room:
            return list(self.posted.items())[len(self.worker.actors.get(self.routine_id, ())) :]


class RayWorker:
    """A worker whose routines and state owner are Ray actors (what the runtime sees)."""

    def __init__(self, backend: RayBackend, flow: Flow, worker_id: str) -> None:
        flow.validate()
        self.backend = backend
        self.services = backend.services
        self.flow = flow
        self.flow_id = flow.flow_id
        self.worker_id = worker_id
        self.status = "starting"
        self.failure: str | None = None
        self.overflow = "block"
        # the runtime does not look at a Ray worker's backlog: its actors queue their own
        # messages (the driver applies the overflow policy to posts, see make_room)
        self.admit_tick: Iterator[bool] = itertools.repeat(False)
        self.restart_count = 0
        routines = flow.routines
        self.routine_ids = frozenset(routines)
        self.order = list(routines)
        self.grants: dict[tuple[str, str], StateGrant] = {
            (grant.reader, grant.owner): grant for grant in flow.state_grants
        }
        self.max_queue = flow.slot_limits()
        self.slots = {rid: frozenset(limits) for rid, limits in self.max_queue.items()}
        self.room = threading.Condition(threading.Lock())  # posters waiting for room
        self.mailboxes = {rid: _RaySender(backend, self, rid) for rid in routines}
        self.post_targets = post_targets(self.mailboxes, self.max_queue)
        self.actors: dict[str, list[Any]] = {}
        self.nodes: dict[str, list[str]] = {}  # routine id -> the Ray node of each of its actors
        self.supervisor: Any = None
        self.handle = WorkerState(self)
        self.intensity = RestartIntensity(flow.supervision, self.order)
        self._turn = itertools.count()
        self._calls = itertools.count(1)
        self._uid = os.urandom(6).hex()
        self._flow_ref: Any = None
        self.limits: StateLimits | None = None
        self._log = logger.bind(worker=worker_id, flow=flow.flow_id)

    def start(self, restore: bool = False, discard: bool = False, take_over: bool = False) -> None:
        services = self.services
        factory = services.state_store
        if factory is not None and not callable(factory):
            raise ConfigurationError(
                "on the Ray backend, state_store= takes a zero-argument function that creates "
                "the store in the supervisor's process, e.g. functools.partial(create_store, "
                "'sqlite', path='state.sqlite3')"
            )
        if restore and factory is None:
            raise ConfigurationError("restore=True needs a worker_id and a state_store")
        ray = self.backend.ray
        routine_cls, state_cls, _ = self.backend.classes
        self.supervisor = state_cls.options(scheduling_strategy=self.backend.home).remote(
            self.worker_id,
            services.state_serializer.name,
            None if factory is None else cloudpickle.dumps(factory),
            services.lease_owner,
            services.lease_seconds,
            self.limits or services.state_limits,
        )
        try:
            ray.get(self.supervisor.open.remote(restore, discard, take_over))
        except Exception as exc:
            ray.kill(self.supervisor, no_restart=True)
            self.supervisor = None
            cause = task_error_cause(exc)  # the state actor's own error, not Ray's wrapper
            if isinstance(cause, ActorflowError):
                raise cause from None
            raise
        # kept referenced for the worker's life, so a restarted actor can rebuild itself
        self._flow_ref = blob = ray.put(cloudpickle.dumps(self.flow))
        injector = services.injector
        faults = None if injector is None else cloudpickle.dumps(injector.plan)
        epoch = time.time() - services.now  # when the runtime started, on the wall clock
        for routine_id in self.order:
            routine = self.flow.get_routine(routine_id)
            self.actors[routine_id] = [
                routine_cls.options(scheduling_strategy="SPREAD").remote(
                    blob,
                    routine_id,
                    self.worker_id,
                    index,
                    self.supervisor,
                    self.backend.ledger,
                    self.grants,
                    self.overflow,
                    faults,
                    epoch,
                    services.recorder is not None,
                )
                # an async routine: one actor, its concurrency is tasks on that actor's loop
                for index in range(1 if routine.is_async else routine.concurrency)
            ]
        routes_by_source: dict[str, dict[str, list[tuple[str, str, list[Any]]]]] = {}
        for (source, event), targets in self.flow.routes().items():
            routes_by_source.setdefault(source, {})[event] = [
                (target, slot, self.actors[target]) for target, slot in targets
            ]
        ray.get(self.backend.ledger.wire.remote(self.worker_id, routes_by_source))
        connected = {
            routine_id: [
                actor.connect.remote(routes_by_source.get(routine_id, {})) for actor in actors
            ]
            for routine_id, actors in self.actors.items()
        }
        # every actor is up and wired before the first post; each says where it runs
        try:
            self.nodes = {routine_id: ray.get(calls) for routine_id, calls in connected.items()}
        except Exception as exc:
            for actor in [self.supervisor, *self.all_actors()]:
                ray.kill(actor, no_restart=True)
            self.supervisor = None
            self.actors = {}
            ray.get(self.backend.ledger.unwire.remote(self.worker_id))
            cause = task_error_cause(exc)  # the actor's own error, not Ray's wrapper
            if isinstance(cause, ActorflowError):
                raise cause from None
            raise
        self.status = "running"

    def placement(self, routine_id: str) -> list[str]:
        """The ids of the Ray nodes ``routine_id``'s actors run on (as each last said)."""
        return list(self.nodes.get(routine_id, ()))

    def processes(self) -> dict[str, Any]:
        """Ask the state owner and each routine actor for its process id and node."""
        ray = self.backend.ray
        owner = None if self.supervisor is None else self.supervisor.process.remote()
        calls = {
            routine_id: [
                actor.process.options(concurrency_group=CONTROL_GROUP).remote()
                for actor in self.actors.get(routine_id, [])
            ]
            for routine_id in self.order
        }
        return {
            "state_owner": None if owner is None else ray.get(owner, timeout=30),
            "routines": {
                routine_id: ray.get(refs, timeout=30) for routine_id, refs in calls.items()
            },
        }

    def moved(self, routine_id: str, index: int, node_id: str) -> None:
        """Ray restarted an actor of the routine, on ``node_id``."""
        nodes = self.nodes.get(routine_id)
        if nodes is not None and index < len(nodes):
            nodes[index] = node_id

    def pick(self, routine_id: str) -> Any:
        actors = self.actors[routine_id]
        return actors[next(self._turn) % len(actors)]

    def all_actors(self) -> list[Any]:
        return [actor for actors in self.actors.values() for actor in actors]

    def flush(self) -> None:
        """Ask every queueing routine actor to release what it holds (before a shutdown)."""
        self.backend.send_queued(STOP_SECONDS)
        for routine_id, actors in self.actors.items():
            if not isinstance(self.flow.get_routine(routine_id).activation_policy, ImmediatePolicy):
                for actor in actors:
                    actor.flush.remote()

    def make_room(self, routine_id: str, limit: int, timeout: float) -> None:
        """The routine has ``limit`` posted messages waiting: apply the overflow policy."""
        mailbox = self.mailboxes[routine_id]
        policy = self.overflow
        if policy == "block":
            with self.room:
                if self.room.wait_for(lambda: mailbox.qsize() < limit, timeout):
                    return
        elif policy == "drop_oldest":
            self._drop_oldest(mailbox, limit)
            return
        raise QueueFullError(
            f"routine {routine_id!r} of worker {self.worker_id!r} already has "
            f"{mailbox.qsize()} messages waiting (max_queue_length={limit}; overflow policy "
            f"{policy!r}{f', waited {timeout:g} s' if policy == 'block' else ''})"
        )

    async def wait_for_room(
        self, routine_id: str, limit: int, timeout: float, backlog: bool = False
    ) -> None:
        """``make_room`` for ``overflow="block"`` as an await: the wait runs on a thread of its
        own, so the caller's event loop runs on (``backlog`` never comes: see :meth:`backlog`)."""
        await asyncio.to_thread(self.make_room, routine_id, limit, timeout)

    def backlog(self) -> tuple[str, int] | None:
        """None: the driver sees only the posts a routine has not taken yet (``make_room``)."""
        return None

    def admit(self, routine_id: str, half: int, timeout: float) -> None:
        """Nothing to do (``backlog`` finds none)."""

    def _drop_oldest(self, mailbox: _RaySender, limit: int) -> None:
        """Fail the jobs of the oldest waiting posts until there is room. Their messages stay
        in Ray's queue: the actor learns the job ended (``mark_ended``, beside a running
        call) and skips them without a second dead letter."""
        routine_id = mailbox.routine_id
        for job_id, slot in mailbox.waiting():
            if mailbox.qsize() < limit:
                return
            record = self.backend.record(job_id)
            if record is not None and record.fail(
                QueueFullError(
                    f"dropped: routine {routine_id!r} had {limit} messages waiting "
                    "(overflow policy 'drop_oldest')"
                ),
                routine_id,
                "dropped",
            ):
                self.backend.dropped.add((job_id, routine_id))
                self.dead_letter(job_id, routine_id, slot, "dropped (mailbox full)")
            mailbox.taken(job_id)

    # -- supervision (on the driver's report thread) -----------------------------------------
    def crashed(self, routine_id: str, index: int, job_ids: list[str], error: str, tb: str) -> None:
        """A routine actor crashed: restart per the worker's supervision, or fail the worker;
        then fail the job(s) it was working for. An ``on_start`` that raises may report
        while the worker is still starting: that crash is supervised too."""
        if self.status in ("starting", "running"):
            decision = self.intensity.crashed(self.worker_id, routine_id, error, time.monotonic())
            if decision.failure is not None:
                self._fail(decision.failure)
            else:
                self.restart_count = self.intensity.count
                self._log.info(
                    "restarting routine {} of worker {} ({})",
                    routine_id,
                    self.worker_id,
                    self.flow.supervision.strategy,
                )
                crashed = self.actors[routine_id][index]
                others = [] if self.flow.supervision.strategy == "one_for_one" else [routine_id]
                for other_id in [*others, *decision.siblings]:
                    for actor in self.actors[other_id]:
                        if actor is not crashed:
                            actor.restart.remote(True)
                if decision.delay > 0:
                    self.backend.timers.call_at(
                        time.monotonic() + decision.delay, lambda: crashed.restart.remote(False)
                    )
                else:
                    crashed.restart.remote(False)
        for job_id in job_ids:
            record = self.backend.record(job_id)
            if record is not None and not record.finished:
                record.add_trace(routine_id, "actor crashed", {"error": error, "traceback": tb})
                record.finish(JobStatus.FAILED, f"{error} (routine actor crashed)")

    def _fail(self, reason: str) -> None:
        """Past the restart intensity: fail the worker and every unfinished job of it."""
        self.status = "failed"
        self.failure = reason
        self._log.error(reason)
        error = WorkerFailedError(reason)
        for record in self.backend.active_records(self.worker_id):
            record.fail(error, None, "worker failed")
        for actor in self.all_actors():
            actor.stop.remote("worker failed")

    # -- stopping ----------------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> None:
        """Stop the routine actors in reverse start order, then the state owner; actors that
        have not stopped after ``timeout`` seconds in all (at most :data:`STOP_SECONDS`) are
        killed."""
        if self.status in ("stopped", "stopping"):
            return
        failed = self.status == "failed"
        self.status = "stopping"
        ray = self.backend.ray
        budget = STOP_SECONDS if timeout is None else min(timeout, STOP_SECONDS)
        deadline = time.monotonic() + budget
        reason = "worker failed" if failed else "worker stopped"
        self.backend.send_queued(budget)
        for routine_id in reversed(self.order):
            actors = self.actors.get(routine_id, [])
            calls = [actor.stop.remote(reason) for actor in actors]
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(Exception):  # an actor that cannot stop is killed anyway
                ray.wait(calls, num_returns=len(calls), timeout=remaining)
            self.backend.settle_control(actors, max(0.0, deadline - time.monotonic()))
            for actor in actors:
                ray.kill(actor, no_restart=True)
        if self.supervisor is not None:
            remaining = max(0.1, deadline - time.monotonic())
            with contextlib.suppress(Exception):  # the lease then ends on its own
                ray.get(self.supervisor.close.remote(), timeout=remaining)
            ray.kill(self.supervisor, no_restart=True)
        with contextlib.suppress(Exception):  # a closed ledger has nothing left to forget
            ray.get(self.backend.ledger.unwire.remote(self.worker_id), timeout=budget)
        self.status = "failed" if failed else "stopped"

    # -- state and counters --------------------------------------------------------------
    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        if self.status in ("stopped", "failed"):
            raise RuntimeClosedError(
                f"worker {self.worker_id!r} is {self.status}; its state can no longer be used"
            )
        op_id = f"driver-{self._uid}:{next(self._calls)}"
        return call_state(self.supervisor, op, key, arg, extra, op_id)

    def routine_metrics(self) -> dict[str, Any]:
        ray = self.backend.ray
        result: dict[str, Any] = {}
        for routine_id in self.order:
            actors = self.actors.get(routine_id, [])
            try:
                cells = ray.get([actor.metrics.remote() for actor in actors], timeout=30)
            except Exception:  # stopped actors: no counters left to read
                cells = []
            result[routine_id] = {**routine_report(cells, 0), "nodes": self.placement(routine_id)}
        return result

    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.backend.dead_letter(job_id, self.worker_id, routine_id, slot, reason)


class RayBackend:
    """Connects a runtime to Ray: starts or joins Ray, carries posts out and reports back."""

    name = "ray"
    supports_probes = False  # a probe would watch emits in the routine actors' processes

    def __init__(self, services: WorkerServices, address: str | None) -> None:
        ray = import_ray()
        self.ray = ray
        self.services = services
        self.book = services.book
        self.owns_ray = False
        if not ray.is_initialized():
            if address is None:
                # workers import routine classes by module, as this process does
                path = os.pathsep.join(p for p in sys.path if p)
                ray.init(
                    address="local",
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
                self.owns_ray = True
            else:
                _join(ray, address)
        self.classes = _remote_classes(ray)
        # The ledger and every worker's state owner live on the driver's node: losing another
        # node must not lose an acknowledged state change (a state owner restarted elsewhere
        # would start empty) nor the reports in flight. Routine actors go where Ray puts them.
        self.home = _driver_node(ray)
        self.ledger = self.classes[2].options(scheduling_strategy=self.home).remote()
        self.timers = TimerService(SystemClock(), name="actorflow-ray-restarts")
        self.outbound: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.weights: dict[str, tuple[Fraction, set[str]]] = {}
        # job id -> the mailbox its first message was posted to, until that one is handled
        self.first_hops: dict[str, _RaySender] = {}
        # (job id, routine id) of posts dropped for room: the actor's own dead letter for the
        # message, when it reaches it, is the same letter again
        self.dropped: set[tuple[str, str]] = set()
        # job id -> envelope id -> (weight, actor): weight waiting in a join of that actor
        self.parked: dict[str, dict[str, tuple[Fraction, Any]]] = {}
        self.ended_reports: OrderedDict[str, set[str]] = OrderedDict()  # see _ended_reports
        # job id -> (worker, routine id, its first wire), while the job runs: sent again as a
        # replay when a routine actor's process died (see _actor_restarted)
        self.first_wires: dict[str, tuple[RayWorker, str, Wire]] = {}
        # job id -> when its last report came, for the jobs watched since an actor restarted
        self.watched: dict[str, float] = {}
        self._workers: dict[str, RayWorker] = {}
        # id of a routine actor -> its control calls (mark_ended) not yet known to have run;
        # a stopping worker waits for them before it kills the actor (settle_control)
        self._control_calls: dict[int, list[Any]] = {}
        self._control_lock = threading.Lock()
        self.book.on_early_end = self._ended_early
        self._sender = threading.Thread(
            target=self._send_loop, name="actorflow-ray-sender", daemon=True
        )
        self._pump = threading.Thread(
            target=self._pump_loop, name="actorflow-ray-pump", daemon=True
        )
        self._sender.start()
        self._pump.start()

    def new_worker(
        self, flow: Flow, worker_id: str, state_limits: StateLimits | None, overflow: str
    ) -> RayWorker:
        """A worker whose routines will be Ray actors (started by ``worker.start``)."""
        worker = RayWorker(self, flow, worker_id)
        worker.limits = state_limits
        worker.overflow = overflow
        self._workers[worker_id] = worker
        return worker

    # -- the runtime's books ---------------------------------------------------------------
    def record(self, job_id: str) -> JobRecord | None:
        return self.book.record(job_id)

    def active_records(self, worker_id: str) -> list[JobRecord]:
        return self.book.unfinished(worker_id)

    def dead_letter(
        self, job_id: str | None, worker_id: str, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.book.dead_letter(job_id, worker_id, routine_id, slot, reason)

    def _ended_early(self, record: JobRecord) -> None:
        self.first_wires.pop(record.job_id, None)
        worker = self._workers.get(record.worker_id)
        if worker is not None:
            self.forget(worker, record.job_id, record.status.value)

    def settle_end(self, record: JobRecord, timeout: float) -> None:
        """Tell each routine actor of the job's worker that the job ended, and wait (at most
        ``timeout`` seconds) until each has taken it in: a message of the job already on its
        way to an actor, and an emit of a logic still running for it, become dead letters
        instead of running (the queued ``forget`` only orders the end behind earlier posts)."""
        worker = self._workers.get(record.worker_id)
        if worker is None:
            return
        ended = [(record.job_id, record.status.value)]
        calls = [
            actor.mark_ended.options(concurrency_group=CONTROL_GROUP).remote(ended)
            for actor in worker.all_actors()
        ]
        try:
            self.ray.get(calls, timeout=timeout)
        except Exception as exc:  # an actor restarting or gone: it learns from forget
            logger.warning(f"job {record.job_id!r}: an actor did not confirm its end: {exc}")

    # -- driver -> actors ----------------------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            item = self.outbound.get()
            batch = [item]
            while True:
                try:
                    batch.append(self.outbound.get_nowait())
                except queue.Empty:
                    break
            stop = False
            grouped: dict[int, tuple[Any, list[Wire]]] = {}
            forgets: dict[int, tuple[Any, list[tuple[str, str]]]] = {}
            sent: list[threading.Event] = []
            for entry in batch:
                if entry is None:
                    stop = True
                    continue
                if isinstance(entry, threading.Event):
                    sent.append(entry)
                    continue
                if entry[0] == "forget":
                    _, actors, job_id, status = entry
                    for actor in actors:
                        forgets.setdefault(id(actor), (actor, []))[1].append((job_id, status))
                    continue
                if entry[0] == "replay":
                    _, worker, routine_id, wire = entry
                    actor = worker.pick(routine_id)
                    grouped.setdefault(id(actor), (actor, []))[1].append(wire)
                    continue
                worker, routine_id, envelope = entry
                wire = self._wire(envelope)
                if wire is not None:
                    self._keep_first(worker, routine_id, wire)
                    actor = worker.pick(routine_id)
                    grouped.setdefault(id(actor), (actor, []))[1].append(wire)
            # the ends first: a job ended before anything later in this batch was posted, and a
            # message of an ended job that arrives after its end is skipped all the same
            for actor, ended in forgets.values():
                self._keep_control(
                    actor, actor.mark_ended.options(concurrency_group=CONTROL_GROUP).remote(ended)
                )
                actor.forget.remote(ended)
            for actor, wires in grouped.values():
                actor.deliver.remote(wires)
            for event in sent:
                event.set()
            if stop:
                return

    def _keep_control(self, actor: Any, call: Any) -> None:
        """Keep ``call``, a control call sent to ``actor`` (on the actor's control thread, in
        no order with its other calls), until it is known to have run."""
        with self._control_lock:
            calls = self._control_calls.setdefault(id(actor), [])
            calls.append(call)
            if len(calls) % CONTROL_CALLS_KEPT == 0:  # now and then, forget those that ran
                _, calls[:] = self.ray.wait(calls, num_returns=len(calls), timeout=0)

    def settle_control(self, actors: list[Any], timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until the control calls sent to ``actors`` have
        run. An actor killed while one of them waits or runs would leave Ray retrying the
        call, and Ray's raylet would print the failure on the driver's output."""
        with self._control_lock:
            calls = [call for actor in actors for call in self._control_calls.pop(id(actor), [])]
        if calls:
            with contextlib.suppress(Exception):  # an actor that cannot answer is killed anyway
                self.ray.wait(calls, num_returns=len(calls), timeout=timeout)

    def send_queued(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until what was queued for the routine actors
        has been sent: a call made after this reaches each actor after them (Ray runs one
        caller's calls to an actor in order), so a stop cannot overtake a post or a forget."""
        if threading.current_thread() is self._sender:
            return
        sent = threading.Event()
        self.outbound.put(sent)
        sent.wait(timeout)

    def _wire(self, envelope: Envelope) -> Wire | None:
        """The first message of a job, for its routine actor (None if it cannot cross)."""
        if envelope.blob is not None:  # strict mode sealed it at the post
            payload = cloudpickle.loads(envelope.payload)
            record, data, depth = view_parts(cloudpickle.loads(envelope.blob))
        else:
            payload, depth = envelope.payload, envelope.depth
            record, data = envelope.rec, dict(envelope.data or {})  # type: ignore[assignment]
        header = JobHeader(
            record.job_id, record.flow_id, record.worker_id, dict(record.metadata),
            record.created_at,
        )  # fmt: skip
        try:
            return pack(
                f"{record.job_id}:0", Fraction(1), envelope.slot, payload, data, header, depth
            )
        except SerializationError as exc:
            live = self.record(record.job_id)
            if live is not None:
                live.fail(exc, None)
            return None

    def _keep_first(self, worker: RayWorker, routine_id: str, wire: Wire) -> None:
        """Keep a job's first message while the job runs, to replay it."""
        job_id = wire.header.job_id
        self.first_wires[job_id] = (worker, routine_id, wire)
        record = self.record(job_id)
        if record is None or record.finished:  # it ended before it was sent
            self.first_wires.pop(job_id, None)

    def _replay(self, worker_id: str, job_ids: list[str]) -> None:
        """Send the first message of each job still unfinished again, as a replay: every
        routine actor handles a replay even if it saw the message, and the messages a replay
        causes are replays too, with the ids of the first time. So what a dead process took
        with it is made again, and what was not lost is counted once: the driver takes a
        report of an id once, and a state operation of an id is applied once."""
        replays = []
        for job_id in job_ids:
            record = self.record(job_id)
            kept = self.first_wires.get(job_id)
            if record is None or record.finished or kept is None:
                continue
            worker, routine_id, wire = kept
            replays.append(("replay", worker, routine_id, wire._replace(replay=True)))
        if replays:
            logger.warning(
                f"worker {worker_id!r}: replaying {len(replays)} unfinished job(s) after a routine "
                "actor's process died"
            )
        for replay in replays:
            self.outbound.put(replay)

    def forget(self, worker: RayWorker, job_id: str, status: str) -> None:
        """A job ended early (failed, cancelled, timed out): its later messages are skipped,
        and its data waiting in joins leaves them. A stopping worker's actors are not told:
        what they still hold becomes dead letters as they stop, and a call sent now could
        reach an actor as it is killed."""
        if worker.status in ("stopping", "stopped"):
            return
        self.outbound.put(("forget", worker.all_actors(), job_id, status))

    # -- actors -> driver ----------------------------------------------------------------
    def _pump_loop(self) -> None:
        ray = self.ray
        while True:
            try:
                reports = ray.get(self.ledger.drain.remote())
            except Exception:  # Ray is going away
                return
            if reports is None:
                return
            touched: set[str] = set()
            for report in reports:
                try:
                    self._dispatch(report, touched)
                except Exception:  # one bad report must not stop every later one
                    logger.exception("applying a report from a Ray routine actor failed")
            self._check_stalls(touched)

    def _dispatch(self, report: tuple[Any, ...], touched: set[str]) -> None:
        kind = report[0]
        if kind == "done":
            self._apply(report)
            touched.add(report[1])
        elif kind == "park":
            self._parked(report)
            touched.add(report[1])
        elif kind == "dead":
            _, job_id, routine_id, slot, reason = report
            if self.dropped and (job_id, routine_id) in self.dropped:
                self.dropped.discard((job_id, routine_id))
                return
            record = self.record(job_id) if job_id is not None else None
            worker_id = "" if record is None else record.worker_id
            self.dead_letter(job_id, worker_id, routine_id, slot, reason)
        elif kind == "faults":
            injector = self.services.injector
            if injector is not None:
                injector.extend_log(report[1])
        elif kind == "recorded":
            recorder = self.services.recorder
            if recorder is not None:
                recorder.add(report[1], report[2])
        elif kind == "lost":
            _, job_id, seconds = report
            self.services.message_lost(job_id, seconds)
        elif kind == "restarted":
            _, worker_id, routine_id, index, node_id = report
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.moved(routine_id, index, node_id)
            self._actor_restarted(worker_id, routine_id, index)
        elif kind == "crash":
            _, worker_id, routine_id, index, job_ids, error, tb = report
            worker = self._workers.get(worker_id)
            if worker is not None:
                worker.crashed(routine_id, index, job_ids, error, tb)

    def _actor_restarted(self, worker_id: str, routine_id: str, index: int) -> None:
        """A routine actor's process died and Ray started another (its node was lost, it was
        killed, a crash fault ended it). Ray delivers its unfinished call again, but what the
        dead process held (a batch's data, a join's, a retry waiting for its backoff, what it
        had sent on and not delivered yet) went with it. Each job of the worker unfinished now
        is replayed a moment later (:meth:`_replay`), and watched: one that then makes no
        progress (no report from any routine) for the fault plan's ``lost_message_timeout``,
        else ``LOST_AFTER_RESTART_SECONDS``, fails; nothing could recover it."""
        injector = self.services.injector
        seconds = (
            LOST_AFTER_RESTART_SECONDS if injector is None else injector.plan.lost_message_timeout
        )
        logger.warning(
            f"routine actor {routine_id}[{index}] of worker {worker_id!r} was restarted by Ray; "
            f"its unfinished jobs are replayed, and fail if they make no progress for {seconds:g} s"
        )
        now = time.monotonic()
        job_ids = [record.job_id for record in self.book.unfinished(worker_id)]
        for job_id in job_ids:
            self.watched[job_id] = now
        self.timers.call_at(now + REPLAY_AFTER_SECONDS, lambda: self._replay(worker_id, job_ids))
        self.timers.call_at(now + seconds, lambda: self._check_progress(job_ids, seconds))

    def _check_progress(self, job_ids: list[str], seconds: float) -> None:
        """Fail each watched job that had no report for ``seconds``; look again later at the
        others still unfinished."""
        now = time.monotonic()
        again: list[str] = []
        due = now + seconds
        for job_id in job_ids:
            last = self.watched.get(job_id)
            record = self.record(job_id)
            if last is None or record is None or record.finished:
                self.watched.pop(job_id, None)
                continue
            if now - last < seconds:
                again.append(job_id)
                due = min(due, last + seconds)
                continue
            self.watched.pop(job_id, None)
            record.fail(
                JobTimeoutError(
                    f"job {job_id!r} made no progress for {seconds:g} s after a routine "
                    "actor's process died (a message of it was lost with the process)"
                ),
                None,
                "timed out",
            )
        if again:
            self.timers.call_at(due, lambda: self._check_progress(again, seconds))

    def _first_hop_done(self, job_id: str, report_id: str) -> None:
        """A routine actor finished the message a post sent (id ``<job id>:0``)."""
        if report_id.endswith(":0") and report_id == f"{job_id}:0":
            mailbox = self.first_hops.pop(job_id, None)
            if mailbox is not None:
                mailbox.taken(job_id)

    def _parked(self, report: tuple[Any, ...]) -> None:
        _, job_id, envelope_id, num, den, actor = report
        self._first_hop_done(job_id, envelope_id)
        record = self.record(job_id)
        if record is None or record.finished:
            return
        seen = self.weights.get(job_id)
        if seen is not None and envelope_id in seen[1]:
            return  # already released and reported
        self.parked.setdefault(job_id, {})[envelope_id] = (Fraction(num, den), actor)

    def _check_stalls(self, job_ids: set[str]) -> None:
        """A job whose returned weight and parked weight make the whole has nothing else in
        flight: the joins holding its data cannot complete; ask them to let it go."""
        for job_id in job_ids:
            parked = self.parked.get(job_id)
            if not parked:
                continue
            record = self.record(job_id)
            if record is None or record.finished:
                self.parked.pop(job_id, None)
                continue
            returned = self.weights.get(job_id, (Fraction(0), set()))[0]
            if returned + sum(weight for weight, _ in parked.values()) != 1:
                continue
            actors = {id(actor): actor for _, actor in parked.values()}
            for actor in actors.values():
                actor.join_check.remote(job_id)

    def _apply(self, report: tuple[Any, ...]) -> None:
        _, job_id, report_id, num, den, merges, trace, errors, end, steps = report
        self._first_hop_done(job_id, report_id)
        parked = self.parked.get(job_id)
        if parked is not None:
            parked.pop(report_id, None)
        record = self.record(job_id)
        if record is None:
            return
        if self.watched and job_id in self.watched:
            self.watched[job_id] = time.monotonic()  # it makes progress
        if record.finished:
            # a branch still running when the job ended (a cancelled task's handler, say):
            # what it wrote lands as it does on threads; the job's end stays as it was
            applied = self._ended_reports(job_id)
            if report_id not in applied:  # a copy delivered again is applied once
                applied.add(report_id)
                for key, value, depth in merges:
                    record.merge(key, value, depth)
                record.extend_trace(trace)
            return
        total, seen = self.weights.setdefault(job_id, (Fraction(0), set()))
        if report_id in seen:
            return  # delivered again after a restart: counted once
        seen.add(report_id)
        if record.status is JobStatus.PENDING:
            record.mark_running()
        for key, value, depth in merges:
            record.merge(key, value, depth)
        record.extend_trace(trace)
        record.extend_steps(steps)
        for entry in errors:
            if record.errors is None:
                record.errors = []
            record.errors.append(entry)
        total += Fraction(num, den)
        self.weights[job_id] = (total, seen)
        if end is not None:
            status, error, _tb = end
            record.finish(JobStatus(status), error)
        elif total == 1:
            record.finish(JobStatus.COMPLETED)
        if record.finished:
            self._ended_reports(job_id)
            self.parked.pop(job_id, None)
            self.first_wires.pop(job_id, None)

    def _ended_reports(self, job_id: str) -> set[str]:
        """The ids of the reports applied for an ended job (its accounting is done: only the
        writes of a late report still land, once)."""
        applied = self.ended_reports.get(job_id)
        if applied is None:
            entry = self.weights.pop(job_id, None)
            applied = self.ended_reports[job_id] = set() if entry is None else entry[1]
            if len(self.ended_reports) > REMEMBERED_ENDED_JOBS:
                self.ended_reports.popitem(last=False)
        return applied

    def timer_callback_errors(self) -> int:
        """Callbacks of the replay and progress timers that raised (logged; the timers go
        on)."""
        return self.timers.callback_errors

    def close(self) -> None:
        self.outbound.put(None)
        self._sender.join()
        with contextlib.suppress(Exception):
            self.ray.get(self.ledger.close.remote(), timeout=30)
        self._pump.join(timeout=30)
        with contextlib.suppress(Exception):
            self.ray.kill(self.ledger)
        self.timers.stop()
        if self.owns_ray:
            self.ray.shutdown()
