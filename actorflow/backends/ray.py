"""The Ray backend: the same flows, with every routine as a Ray actor.

``Runtime(backend="ray", ray_address=None | "auto" | "ray://host:port")``. With no address a
local Ray is started (``address="local"``, no dashboard) and stopped at shutdown; with one, the
runtime joins that cluster and leaves it running.

How a job moves:

* each routine runs as a Ray actor (``concurrency=k``: k actors, fed round robin); the worker's
  supervisor is a Ray actor that alone owns the WorkerState; routines reach it by messages;
* envelopes go from routine actor to routine actor directly, batched: one Ray call per
  downstream actor per handled batch, not one per message;
* the JobContext travels in the envelope, so ``get_current_job()`` works in the actor process;
  what a routine writes (data, trace, errors) comes back to the driver in its report;
* job accounting is by *weight*: a posted message carries weight 1; a routine that emits n
  messages gives each 1/(n+1) of its weight and reports the last share itself, together with
  its writes. A job is complete when all its weight has come back, in whatever order reports
  arrive, and never before the writes of every routine that ran for it;
* routine actors are started with Ray's restart and retry options: an actor process that dies
  (``ray.kill``, ``os._exit``) is restarted and the calls it had not finished are delivered
  again; envelopes carry ids, so a message handled twice is counted once.

The supervisor's state can be durable: ``state_store=`` is then a zero-argument function that
creates the store (SQLite or Redis) in the supervisor's own process; each change is written
through before it is acknowledged, and a supervisor whose process died reads it back when Ray
restarts it. The start rules and the worker's lease are those of the thread backend (the
supervisor runs the same code, and renews the lease on a timer thread of its own process).

Activation policies run inside the routine's actor, with its own timers (batch timeouts,
intervals) and a flush before shutdown, as on threads.

Differences from the thread backend (each refused with a clear error where it applies): no
fault plans, deterministic mode or state limits, and back-pressure applies at ``post`` only
through Ray's own queues.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import cloudpickle

from actorflow._envelope import Envelope
from actorflow._worker import post_targets
from actorflow.activation_policies import (
    QueuedItem,
    Release,
    _Immediate,
    incomplete_join_error,
    take_released,
)
from actorflow.errors import (
    ActorflowError,
    ConfigurationError,
    RuntimeClosedError,
    StateFunctionError,
)
from actorflow.flow import Flow, StateGrant
from actorflow.job import CURRENT_ACTIVATION, JobContext, JobRecord, JobStatus
from actorflow.worker import WorkerState

if TYPE_CHECKING:
    from actorflow.runtime import Runtime

__all__ = ["RayBackend", "RayWorker", "import_ray"]

INSTALL_HINT = "the Ray backend needs Ray: pip install 'actorflow[ray]'"


def import_ray() -> Any:
    """Import Ray, or raise an error that says how to install it."""
    try:
        import ray  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigurationError(INSTALL_HINT) from exc
    return ray


# -- wire format ------------------------------------------------------------------------
# An envelope on the wire: (envelope id, weight numerator, weight denominator, slot,
# payload bytes, job view bytes, attempt). Ids are "<job id>:<path>", so a retried or
# duplicated delivery has the id of the original.


class RoutineActor:
    def __init__(
        self, flow_blob: bytes, routine_id: str, worker_id: str, supervisor: Any, ledger: Any,
        grants: dict[tuple[str, str], StateGrant],
    ) -> None:  # fmt: skip
        flow: Flow = cloudpickle.loads(flow_blob)
        self.routine = flow._routines[routine_id]
        self.routine_id = routine_id
        self.worker_id = worker_id
        self.logic = self.routine.get_logic()
        self.strategy = flow.error_strategy_for(routine_id)
        self.ledger = ledger
        self.state = WorkerState(
            _RemoteStateCore(  # type: ignore[arg-type]
                worker_id, flow.flow_id, supervisor, frozenset(flow._routines), grants
            ),
            routine_id,
        )
        self.supervisor = supervisor
        self.routes: dict[str, list[tuple[str, str, list[Any]]]] | None = None
        self.turn = itertools.count()
        self.seen: set[str] = set()
        self.seen_order: deque[str] = deque()
        self.forgotten: set[str] = set()
        self.current_job: JobContext | None = None
        self.outbox: list[tuple[str, Any]] | None = None
        self.direct_events: frozenset[str] = frozenset()  # every emit is pickled: emit_for
        self.silent_events: frozenset[str] = frozenset()
        self.probes: dict[Any, Any] = {}
        self.counters = {"handled": 0, "failed": 0, "retried": 0, "incomplete_joins": 0}
        self.immediate = isinstance(self.routine.activation_policy, _Immediate)
        self.policy = self.routine.activation_policy.bind()
        self.queues: dict[str, deque[QueuedItem]] = {name: deque() for name in self.routine._slots}
        self.draining = False
        self.timer_at: float | None = None
        CURRENT_ACTIVATION.set(self)
        self.routine.on_start()

    def connect(self, routes: dict[str, list[tuple[str, str, list[Any]]]]) -> None:
        self.routes = routes

    def forget(self, job_ids: list[str]) -> None:
        """These jobs ended early: skip their later messages; data of theirs waiting in a
        join leaves it (a dead letter, its weight back to the driver)."""
        self.forgotten.update(job_ids)
        if not self.policy.parks:
            return
        ended = set(job_ids)
        reports: list[tuple[Any, ...]] = []
        for name, waiting in self.queues.items():
            kept: deque[QueuedItem] = deque()
            for item in waiting:
                job, envelope_id, weight = item.job
                if item.key in ended:
                    dead = [(self.routine_id, name, "job ended")]
                    reports.append(_report(job._rec, envelope_id, weight, None, dead))
                else:
                    kept.append(item)
            self.queues[name] = kept
        self._send(reports, {})

    def join_check(self, job_id: str) -> None:
        """The driver saw nothing of the job in flight but data parked in joins."""
        CURRENT_ACTIVATION.set(self)
        reports: list[tuple[Any, ...]] = []
        outgoing: dict[Any, list[tuple[Any, ...]]] = {}
        release = self.policy.on_stalled(self.queues, job_id)
        if release is not None:
            self._apply(release, time.monotonic(), reports, outgoing)
        self._send(reports, outgoing)

    def metrics(self) -> dict[str, int]:
        queued = sum(len(queue) for queue in self.queues.values())
        return {**self.counters, "queued": queued}

    def stop(self) -> None:
        self.routine.on_stop()

    def emit_for(self, routine: Any, event: str, data: dict[str, Any]) -> None:
        if routine is not self.routine or self.outbox is None:
            raise RuntimeError(f"emit({event!r}) outside the logic of {self.routine_id!r}")
        if event not in self.routine._events:
            raise ValueError(
                f"routine {self.routine_id!r} emitted undeclared event {event!r} "
                f"(declared: {sorted(self.routine._events) or 'none'})"
            )
        self.outbox.append((event, cloudpickle.dumps(data)))

    def _remember(self, envelope_id: str) -> bool:
        if envelope_id in self.seen:
            return False
        self.seen.add(envelope_id)
        self.seen_order.append(envelope_id)
        if len(self.seen_order) > 100_000:
            self.seen.discard(self.seen_order.popleft())
        return True

    def deliver(self, batch: list[tuple[Any, ...]]) -> None:
        CURRENT_ACTIVATION.set(self)
        if self.routes is None:  # a restarted actor: the ledger keeps every worker's wiring
            self.routes = import_ray().get(
                self.ledger.routes_of.remote(self.worker_id, self.routine_id)
            )
        reports: list[tuple[Any, ...]] = []
        outgoing: dict[Any, list[tuple[Any, ...]]] = {}
        for wire in batch:
            self._handle(wire, reports, outgoing)
        self._send(reports, outgoing)

    def _send(
        self, reports: list[tuple[Any, ...]], outgoing: dict[Any, list[tuple[Any, ...]]]
    ) -> None:
        if reports:  # writes reach the driver before anything downstream can finish
            self.ledger.report.remote(reports)
        for handle, envelopes in outgoing.items():
            handle.deliver.remote(envelopes)

    # -- activation policies other than immediate ------------------------------------
    def _apply(
        self, release: Release | None, now: float, reports: list[tuple[Any, ...]],
        outgoing: dict[Any, list[tuple[Any, ...]]],
        again: Callable[[Any, float], Release | None] | None = None,
    ) -> None:  # fmt: skip
        if (
            release is not None
            and self._release(release, now, reports, outgoing)
            and again is not None
        ):
            while (release := again(self.queues, now)) is not None:
                if not self._release(release, now, reports, outgoing):
                    break
        deadline = self.policy.next_deadline(self.queues, now)
        if deadline is not None and (self.timer_at is None or deadline < self.timer_at):
            self.timer_at = deadline
            me = import_ray().get_runtime_context().current_actor
            threading.Timer(max(0.0, deadline - now), lambda: me.tick.remote(deadline)).start()

    def tick(self, deadline: float) -> None:
        """A policy deadline passed (batch timeout, end of an interval)."""
        CURRENT_ACTIVATION.set(self)
        if self.timer_at == deadline:
            self.timer_at = None
        reports: list[tuple[Any, ...]] = []
        outgoing: dict[Any, list[tuple[Any, ...]]] = {}
        now = time.monotonic()
        on_timer = self.policy.on_timer
        self._apply(on_timer(self.queues, now), now, reports, outgoing, on_timer)
        self._send(reports, outgoing)

    def flush(self) -> None:
        """Release what the policy lets go at shutdown; later data runs at once unless the
        policy keeps waiting (a job's join)."""
        CURRENT_ACTIVATION.set(self)
        policy = self.policy
        self.draining = policy.drains
        reports: list[tuple[Any, ...]] = []
        outgoing: dict[Any, list[tuple[Any, ...]]] = {}
        now = time.monotonic()
        release = policy.on_flush(self.queues)
        while release is not None and self._release(release, now, reports, outgoing):
            release = policy.on_flush(self.queues)
        self._send(reports, outgoing)

    def _release(
        self, release: Release, now: float, reports: list[tuple[Any, ...]],
        outgoing: dict[Any, list[tuple[Any, ...]]],
    ) -> bool:  # fmt: skip
        taken = take_released(self.queues, release)
        if not any(taken.values()):
            return False
        if release.fail:
            self.counters["incomplete_joins"] += 1
            timeout = getattr(self.policy.spec, "timeout", None)
            for name, taken_items in taken.items():
                for item in taken_items:
                    job, envelope_id, weight = item.job
                    record = job._rec
                    dead = [(self.routine_id, name, "join incomplete")]
                    error = incomplete_join_error(
                        self.routine_id, record.job_id, name, release.message, timeout
                    )
                    failure = (f"{type(error).__name__}: {error}", "")
                    reports.append(_report(record, envelope_id, weight, failure, dead))
            return True
        slot_data: dict[str, list[Any]] = {name: [] for name in self.queues}
        items: list[QueuedItem] = []
        for name, taken_items in taken.items():
            for item in taken_items:
                job, envelope_id, weight = item.job
                if job._rec.job_id in self.forgotten:
                    dead = [(self.routine_id, name, "job ended")]
                    reports.append(_report(job._rec, envelope_id, weight, None, dead))
                    continue
                slot_data[name].append(item.data)
                items.append(item)
        if not items:
            return True
        message = release.message
        if release.picks is not None and message.get("reason") in _INCOMPLETE:
            self.counters["incomplete_joins"] += 1
        self.policy.released(now)
        self._run_batch(slot_data, message, items, 1, reports, outgoing)
        return True

    def rerun(self, blob: bytes, attempt: int) -> None:
        """Run a batch again (error strategy RETRY), after its backoff."""
        CURRENT_ACTIVATION.set(self)
        slot_data, message, items = cloudpickle.loads(blob)
        items = [item for item in items if item.job[0]._rec.job_id not in self.forgotten]
        reports: list[tuple[Any, ...]] = []
        outgoing: dict[Any, list[tuple[Any, ...]]] = {}
        if items:
            self._run_batch(slot_data, message, items, attempt, reports, outgoing)
        self._send(reports, outgoing)

    def _run_batch(
        self, slot_data: dict[str, list[Any]], message: Any, items: list[QueuedItem],
        attempt: int, reports: list[tuple[Any, ...]], outgoing: dict[Any, list[tuple[Any, ...]]],
    ) -> None:  # fmt: skip
        newest = max(items, key=lambda item: item.arrived_at)
        job, envelope_id, weight = newest.job
        if self.policy.parks:  # one job: the view joins what each branch carried
            job = JobContext._joined([item.job[0] for item in items])
        self.outbox = []
        self.current_job = job
        try:
            self.logic(slot_data, message, self.state)  # type: ignore[misc]
        except Exception as exc:
            self.current_job = None
            self.outbox = None
            self.counters["failed"] += 1
            self._batch_failed(exc, slot_data, message, items, attempt, reports)
            return
        self.current_job = None
        outbox, self.outbox = self.outbox, None
        self.counters["handled"] += 1
        share = self._children(job, envelope_id, weight, outbox, outgoing)
        reports.append(_report(job._rec, envelope_id, share, None, []))
        for item in items:
            if item is not newest:  # handled as part of the batch: its weight comes back
                item_job, item_id, item_weight = item.job
                reports.append(_report(item_job._rec, item_id, item_weight, None, []))

    def _batch_failed(
        self, exc: Exception, slot_data: dict[str, list[Any]], message: Any,
        items: list[QueuedItem], attempt: int, reports: list[tuple[Any, ...]],
    ) -> None:  # fmt: skip
        strategy = self.strategy
        text = f"{type(exc).__name__}: {exc}"
        if strategy.kind == "retry" and isinstance(exc, strategy.retry_on):
            if attempt <= strategy.max_retries:
                self.counters["retried"] += 1
                delay = strategy.retry_delay(attempt)
                for item in items:
                    record = item.job[0]._rec
                    details = {"attempt": attempt, "error": text, "delay": delay}
                    record.add_trace(self.routine_id, "retry", details)
                    reports.append(
                        _report(record, f"{item.job[1]}#{attempt}", Fraction(0), None, [])
                    )
                blob = cloudpickle.dumps((slot_data, message, items))
                me = import_ray().get_runtime_context().current_actor
                threading.Timer(delay, lambda: me.rerun.remote(blob, attempt + 1)).start()
                return
            text = f"{text} (after {attempt} tries)"
        for item in items:
            item_job, item_id, item_weight = item.job
            record = item_job._rec
            if strategy.kind in ("continue", "skip"):
                record.record_error(self.routine_id, exc, strategy.kind)
                reports.append(_report(record, item_id, item_weight, None, []))
            else:
                tb = "".join(traceback.format_exception(exc))
                reports.append(_report(record, item_id, item_weight, (text, tb), []))

    def _children(
        self, job: JobContext, envelope_id: str, weight: Fraction, outbox: list[tuple[str, Any]],
        outgoing: dict[Any, list[tuple[Any, ...]]],
    ) -> Fraction:  # fmt: skip
        """Queue what the logic emitted; returns the share of weight the sender keeps."""
        targets = [
            (data, slot_, handles)
            for event, data in outbox
            for _target, slot_, handles in (self.routes or {}).get(event, ())
        ]
        share = weight / (len(targets) + 1)
        child_blob = cloudpickle.dumps(job._child()) if targets else b""
        for index, (data, slot_, handles) in enumerate(targets):
            handle = handles[next(self.turn) % len(handles)]
            child = (f"{envelope_id}.{index}", share.numerator, share.denominator, slot_, data,
                     child_blob, 1)  # fmt: skip
            outgoing.setdefault(handle, []).append(child)
        return share

    def _handle(
        self, wire: tuple[Any, ...], reports: list[tuple[Any, ...]],
        outgoing: dict[Any, list[tuple[Any, ...]]],
    ) -> None:  # fmt: skip
        envelope_id, num, den, slot, payload_blob, view_blob, attempt = wire
        if attempt == 1 and not self._remember(envelope_id):
            return  # delivered again after a restart: already handled
        weight = Fraction(num, den)
        job: JobContext = cloudpickle.loads(view_blob)
        record = job._rec
        if record.job_id in self.forgotten:  # the job ended: a dead letter, not a run
            dead = [(self.routine_id, slot, "job ended")]
            reports.append(_report(record, envelope_id, weight, None, dead))
            return
        payload = cloudpickle.loads(payload_blob)
        if not self.immediate and not self.draining:
            now = time.monotonic()
            policy = self.policy
            try:
                key = policy.key_of(payload, record.job_id)
            except Exception as exc:  # a join's key function failed: the data's job fails
                failure = (f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
                reports.append(_report(record, envelope_id, weight, failure, []))
                return
            self.queues[slot].append(QueuedItem(payload, (job, envelope_id, weight), now, key))
            if policy.parks:  # the driver learns that this weight waits in the join
                me = import_ray().get_runtime_context().current_actor
                reports.append(_park(record.job_id, envelope_id, weight, me))
            self._apply(policy.on_message(self.queues, slot, now), now, reports, outgoing)
            return
        self.outbox = []
        self.current_job = job
        try:
            self.logic({slot: [payload]}, None, self.state)  # type: ignore[misc]
        except Exception as exc:
            self.current_job = None
            self.outbox = None
            self.counters["failed"] += 1
            self._on_error(exc, wire, record, envelope_id, weight, reports)
            return
        self.current_job = None
        outbox, self.outbox = self.outbox, None
        self.counters["handled"] += 1
        share = self._children(job, envelope_id, weight, outbox, outgoing)
        reports.append(_report(record, envelope_id, share, None, []))

    def _on_error(
        self, exc: Exception, wire: tuple[Any, ...], record: JobRecord, envelope_id: str,
        weight: Fraction, reports: list[tuple[Any, ...]],
    ) -> None:  # fmt: skip
        strategy = self.strategy
        attempt = wire[6]
        message = f"{type(exc).__name__}: {exc}"
        if strategy.kind == "retry" and isinstance(exc, strategy.retry_on):
            if attempt <= strategy.max_retries:
                self.counters["retried"] += 1
                delay = strategy.retry_delay(attempt)
                record.add_trace(
                    self.routine_id,
                    "retry",
                    {"attempt": attempt, "error": message, "delay": delay},
                )
                again = (*wire[:6], attempt + 1)
                me = import_ray().get_runtime_context().current_actor
                # this try's trace goes back now, with no weight, under its own id
                reports.append(_report(record, f"{envelope_id}#{attempt}", Fraction(0), None, []))
                threading.Timer(delay, lambda: me.deliver.remote([again])).start()
                return
            message = f"{message} (after {attempt} tries)"
        elif strategy.kind in ("continue", "skip"):
            record.record_error(self.routine_id, exc, strategy.kind)
            dead = [(self.routine_id, wire[3], "skipped")] if strategy.kind == "skip" else []
            reports.append(_report(record, envelope_id, weight, None, dead))
            return
        failure = (message, "".join(traceback.format_exception(exc)))
        reports.append(_report(record, envelope_id, weight, failure, []))


class Supervisor:
    """Owns one worker's state (a SupervisorCore in its own process).

    With a store factory, the store is made in this process; :meth:`open` takes the worker's
    lease and applies the start rules of the thread backend (the same code), and every change
    is written through before it is acknowledged. A restarted supervisor (its process died)
    takes the lease again as the same runtime and reads the state back from the store.
    """

    def __init__(
        self,
        worker_id: str,
        serializer: Any,
        store_factory: bytes | None,
        lease_owner: str,
        lease_seconds: float,
    ) -> None:
        from actorflow._lease import WorkerStore  # noqa: PLC0415
        from actorflow._supervisor import SupervisorCore  # noqa: PLC0415

        stored = None
        if store_factory is not None:
            store = cloudpickle.loads(store_factory)()
            stored = WorkerStore(store, worker_id, lease_owner, lease_seconds)
        self.core = SupervisorCore(worker_id, store=stored, serializer=serializer)
        self.timers: Any = None
        if import_ray().get_runtime_context().was_current_actor_reconstructed:
            self.open(restore=True, discard=False, take_over=False)

    def open(self, restore: bool, discard: bool, take_over: bool) -> None:
        """Take the lease and restore, discard or refuse (``SupervisorCore.open_store``)."""
        from actorflow._clock import SystemClock  # noqa: PLC0415
        from actorflow._timers import TimerService  # noqa: PLC0415

        self.timers = TimerService(SystemClock(), name="actorflow-lease")
        self.core.open_store(
            restore=restore,
            discard=discard,
            take_over=take_over,
            call_at=self.timers.call_at,
            monotonic=time.monotonic,
        )

    def close(self) -> None:
        """Release the worker's lease and stop renewing it (the worker stops)."""
        if self.timers is not None:
            self.timers.stop()
        self.core.close_store()

    def call(self, op: str, key: Any, arg_blob: bytes, extra: Any) -> Any:
        """Apply one state call; its result, or raise its error (to the caller's process).

        ``SupervisorCore.handle`` lets nothing escape, so whatever a function given to
        ``modify_routine_state`` raises, this actor lives on: a ``BaseException`` that is not
        an ``Exception`` comes back as ``StateFunctionError``, with the original as its cause
        when the original can be pickled.
        """
        from actorflow._reply import Reply  # noqa: PLC0415
        from actorflow._supervisor import StateCall  # noqa: PLC0415

        reply = Reply()
        self.core.handle(StateCall(op, key, cloudpickle.loads(arg_blob), extra, reply))
        try:
            return reply.get(0)
        except StateFunctionError as exc:
            try:
                cloudpickle.dumps(exc.__cause__)
            except Exception:  # the original cannot cross to the caller: its text does
                raise StateFunctionError(*exc.args) from None
            raise


class Ledger:
    """Collects routine reports until the driver drains them (an asyncio actor)."""

    def __init__(self) -> None:
        import asyncio  # noqa: PLC0415

        self.items: list[tuple[Any, ...]] = []
        self.routes: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()
        self.closed = False

    async def wire(self, worker_id: str, routes: dict[str, Any]) -> None:
        """Keep a worker's routes, for routine actors that restart."""
        self.routes[worker_id] = routes

    async def routes_of(self, worker_id: str, routine_id: str) -> Any:
        return self.routes.get(worker_id, {}).get(routine_id, {})

    async def report(self, reports: list[tuple[Any, ...]]) -> None:
        self.items.extend(reports)
        self.ready.set()

    async def drain(self) -> list[tuple[Any, ...]] | None:
        await self.ready.wait()
        self.ready.clear()
        if self.closed and not self.items:
            return None
        items, self.items = self.items, []
        return items

    async def close(self) -> None:
        self.closed = True
        self.ready.set()


def _remote_classes(ray: Any) -> tuple[Any, Any, Any]:
    """The actor classes as Ray actors (restartable routines and supervisor; one ledger)."""
    return (
        ray.remote(max_restarts=-1, max_task_retries=-1)(RoutineActor),
        ray.remote(max_restarts=-1, max_task_retries=-1)(Supervisor),
        ray.remote(Ledger),
    )


_INCOMPLETE = frozenset({"incomplete", "timeout", "flush"})
_DONE = "done"
_PARK = "park"


def _report(
    record: JobRecord, envelope_id: str, weight: Fraction, failure: tuple[str, str] | None,
    extra: list[Any],
) -> tuple[Any, ...]:  # fmt: skip
    """What one handled message sends back: weight, writes, trace, errors, failure, and
    dead letters as (routine, slot, reason)."""
    depths = record._depths or {}
    merges = [(key, value, depths.get(key, 0)) for key, value in record.data.items()]
    return (
        _DONE, record.job_id, envelope_id, weight.numerator, weight.denominator, merges,
        list(record.trace), list(record.errors or ()), failure, extra,
    )  # fmt: skip


def _park(job_id: str, envelope_id: str, weight: Fraction, actor: Any) -> tuple[Any, ...]:
    """A message's weight waits in ``actor``'s join (its return comes later, as a report)."""
    return (_PARK, job_id, envelope_id, weight.numerator, weight.denominator, actor)


class _RemoteStateCore:
    """What a WorkerState handle needs, inside a routine actor: calls go to the supervisor."""

    def __init__(
        self, worker_id: str, flow_id: str, supervisor: Any, routine_ids: frozenset[str],
        grants: dict[tuple[str, str], StateGrant],
    ) -> None:  # fmt: skip
        self.worker_id = worker_id
        self.flow_id = flow_id
        self.supervisor = supervisor
        self.routine_ids = routine_ids
        self.grants = grants
        self.status = "running"

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        ray = import_ray()
        return ray.get(self.supervisor.call.remote(op, key, cloudpickle.dumps(arg), extra))


class _RaySender:
    """``post`` puts envelopes here; the backend's sender thread batches them to the actor."""

    def __init__(self, backend: RayBackend, worker: RayWorker, routine_id: str) -> None:
        self.backend = backend
        self.worker = worker
        self.routine_id = routine_id

    def qsize(self) -> int:
        return 0

    def put(self, envelope: Envelope) -> None:
        self.backend.outbound.put((self.worker, self.routine_id, envelope))


class RayWorker:
    """A worker whose routines and supervisor are Ray actors (what the runtime sees)."""

    def __init__(self, backend: RayBackend, runtime: Runtime, flow: Flow, worker_id: str) -> None:
        flow.validate()
        self.backend = backend
        self.runtime = runtime
        self.flow = flow
        self.flow_id = flow.flow_id
        self.worker_id = worker_id
        self.status = "starting"
        self.failure: str | None = None
        self.overflow = "block"
        self.restart_count = 0
        self.routine_ids = frozenset(flow._routines)
        self.order = list(flow._routines)
        self.grants: dict[tuple[str, str], StateGrant] = dict(flow._grants)
        self.max_queue = flow.slot_limits()
        self.slots = {rid: frozenset(limits) for rid, limits in self.max_queue.items()}
        self.mailboxes = {rid: _RaySender(backend, self, rid) for rid in flow._routines}
        self.post_targets = post_targets(self.mailboxes, self.max_queue)
        self.actors: dict[str, list[Any]] = {}
        self.supervisor: Any = None
        self.handle = WorkerState(self)  # type: ignore[arg-type]
        self._turn = itertools.count()
        self._flow_ref: Any = None
        self.limits: Any = None

    def start(self, restore: bool = False, discard: bool = False, take_over: bool = False) -> None:
        factory = self.runtime.state_store
        if factory is not None and not callable(factory):
            raise ConfigurationError(
                "on the Ray backend, state_store= takes a zero-argument function that creates "
                "the store in the supervisor's process, e.g. functools.partial(create_store, "
                "'sqlite', path='state.sqlite3')"
            )
        if restore and factory is None:
            raise ConfigurationError("restore=True needs a worker_id and a state_store")
        if self.runtime.state_limits is not None or self.limits is not None:
            raise ConfigurationError("state_limits= is not available on the Ray backend yet")
        ray = self.backend.ray
        routine_cls, supervisor_cls, _ = self.backend.classes
        self.supervisor = supervisor_cls.remote(
            self.worker_id,
            self.runtime.state_serializer.name,
            None if factory is None else cloudpickle.dumps(factory),
            self.runtime.lease_owner,
            self.runtime.lease_seconds,
        )
        try:
            ray.get(self.supervisor.open.remote(restore, discard, take_over))
        except Exception as exc:
            ray.kill(self.supervisor, no_restart=True)
            self.supervisor = None
            cause = getattr(exc, "cause", None)  # a RayTaskError: the supervisor's own error
            if isinstance(cause, ActorflowError):
                raise cause from None
            raise
        # kept referenced for the worker's life, so a restarted actor can rebuild itself
        self._flow_ref = blob = ray.put(cloudpickle.dumps(self.flow))
        for routine_id in self.order:
            routine = self.flow._routines[routine_id]
            self.actors[routine_id] = [
                routine_cls.remote(
                    blob,
                    routine_id,
                    self.worker_id,
                    self.supervisor,
                    self.backend.ledger,
                    self.grants,
                )
                for _ in range(routine.concurrency)
            ]
        calls = []
        routes_by_source: dict[str, dict[str, list[tuple[str, str, list[Any]]]]] = {}
        for (source, event), targets in self.flow.routes().items():
            routes_by_source.setdefault(source, {})[event] = [
                (target, slot, self.actors[target]) for target, slot in targets
            ]
        calls.append(self.backend.ledger.wire.remote(self.worker_id, routes_by_source))
        for routine_id, actors in self.actors.items():
            for actor in actors:
                calls.append(actor.connect.remote(routes_by_source.get(routine_id, {})))
        ray.get(calls)  # every actor is up and wired before the first post
        self.status = "running"

    def pick(self, routine_id: str) -> Any:
        actors = self.actors[routine_id]
        return actors[next(self._turn) % len(actors)]

    def all_actors(self) -> list[Any]:
        return [actor for actors in self.actors.values() for actor in actors]

    def flush(self) -> None:
        """Ask every queueing routine actor to release what it holds (before a shutdown)."""
        for routine_id, actors in self.actors.items():
            if not isinstance(self.flow._routines[routine_id].activation_policy, _Immediate):
                for actor in actors:
                    actor.flush.remote()

    def make_room(self, routine_id: str, limit: int, timeout: float) -> None:
        """Ray queues calls itself; post never finds a full mailbox here."""

    def stop(self) -> None:
        if self.status in ("stopped", "stopping"):
            return
        self.status = "stopping"
        ray = self.backend.ray
        for routine_id in reversed(self.order):
            actors = self.actors.get(routine_id, [])
            with contextlib.suppress(Exception):  # an actor that cannot stop is killed anyway
                ray.get([actor.stop.remote() for actor in actors], timeout=30)
            for actor in actors:
                ray.kill(actor, no_restart=True)
        if self.supervisor is not None:
            with contextlib.suppress(Exception):  # the lease then ends on its own
                ray.get(self.supervisor.close.remote(), timeout=30)
            ray.kill(self.supervisor, no_restart=True)
        self.status = "stopped"

    def state_call(self, op: str, key: Any, arg: Any = None, extra: Any = None) -> Any:
        if self.status in ("stopped", "failed"):
            raise RuntimeClosedError(
                f"worker {self.worker_id!r} is {self.status}; its state can no longer be used"
            )
        ray = self.backend.ray
        return ray.get(self.supervisor.call.remote(op, key, cloudpickle.dumps(arg), extra))

    def routine_metrics(self, bounds: tuple[float, ...]) -> dict[str, Any]:
        ray = self.backend.ray
        result: dict[str, Any] = {}
        for routine_id, actors in self.actors.items():
            totals = {"handled": 0, "failed": 0, "retried": 0, "queued": 0, "incomplete_joins": 0}
            for counters in ray.get([actor.metrics.remote() for actor in actors]):
                for name in totals:
                    totals[name] += counters[name]
            result[routine_id] = {**totals, "mailbox_depth": 0, "handling_seconds": None}
        return result

    def dead_letter(
        self, job_id: str | None, routine_id: str, slot: str | None, reason: str
    ) -> None:
        self.runtime._dead_letters.record(job_id, self.worker_id, routine_id, slot, reason)


class RayBackend:
    """Connects a runtime to Ray: starts or joins Ray, carries posts out and reports back."""

    def __init__(self, runtime: Runtime, address: str | None) -> None:
        ray = import_ray()
        self.ray = ray
        self.runtime = runtime
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
                ray.init(address=address, log_to_driver=False)
        self.classes = _remote_classes(ray)
        self.ledger = self.classes[2].remote()
        self.outbound: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.weights: dict[str, tuple[Fraction, set[str]]] = {}
        # job id -> envelope id -> (weight, actor): weight waiting in a join of that actor
        self.parked: dict[str, dict[str, tuple[Fraction, Any]]] = {}
        self._lock = threading.Lock()
        self._sender = threading.Thread(
            target=self._send_loop, name="actorflow-ray-sender", daemon=True
        )
        self._pump = threading.Thread(
            target=self._pump_loop, name="actorflow-ray-pump", daemon=True
        )
        self._sender.start()
        self._pump.start()

    def new_worker(self, flow: Flow, worker_id: str) -> RayWorker:
        return RayWorker(self, self.runtime, flow, worker_id)

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
            grouped: dict[Any, list[tuple[Any, ...]]] = {}
            forgets: dict[Any, list[str]] = {}
            for entry in batch:
                if entry is None:
                    stop = True
                    continue
                kind = entry[0]
                if kind == "forget":
                    for actor in entry[1]:
                        forgets.setdefault(actor, []).append(entry[2])
                    continue
                worker, routine_id, envelope = entry
                wire = self._wire(envelope)
                grouped.setdefault(worker.pick(routine_id), []).append(wire)
            for actor, wires in grouped.items():
                actor.deliver.remote(wires)
            for actor, job_ids in forgets.items():
                actor.forget.remote(job_ids)
            if stop:
                return

    def _wire(self, envelope: Envelope) -> tuple[Any, ...]:
        if envelope.blob is not None:
            payload_blob, view_blob = envelope.payload, envelope.blob
            job_id = cloudpickle.loads(view_blob)._rec.job_id
        else:
            payload_blob = cloudpickle.dumps(envelope.payload)
            view_blob = cloudpickle.dumps(envelope.job)
            job_id = envelope.rec.job_id  # type: ignore[union-attr]
        return (f"{job_id}:0", 1, 1, envelope.slot, payload_blob, view_blob, 1)

    def forget(self, worker: RayWorker, job_id: str) -> None:
        """A job ended early (failed, cancelled, timed out): its later messages are skipped."""
        self.outbound.put(("forget", worker.all_actors(), job_id))

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
                if report[0] == _PARK:
                    self._parked(report)
                else:
                    self._apply(report)
                touched.add(report[1])
            self._check_stalls(touched)

    def _parked(self, report: tuple[Any, ...]) -> None:
        _, job_id, envelope_id, num, den, actor = report
        record = self.runtime._jobs.get(job_id)
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
            record = self.runtime._jobs.get(job_id)
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
        _, job_id, envelope_id, num, den, merges, trace, errors, failure, dead = report
        parked = self.parked.get(job_id)
        if parked is not None:
            parked.pop(envelope_id, None)
        record = self.runtime._jobs.get(job_id)
        if record is None:
            return
        for routine_id, slot, reason in dead:
            self.runtime._dead_letters.record(job_id, record.worker_id, routine_id, slot, reason)
        total, seen = self.weights.setdefault(job_id, (Fraction(0), set()))
        if envelope_id in seen:
            return  # delivered again after a restart: counted once
        seen.add(envelope_id)
        if record.status is JobStatus.PENDING:
            record.mark_running()
        for key, value, depth in merges:
            record.merge(key, value, depth)
        record.extend_trace(trace)
        for entry in errors:
            if record.errors is None:
                record.errors = []
            record.errors.append(entry)
        total += Fraction(num, den)
        self.weights[job_id] = (total, seen)
        if failure is not None:
            message, tb = failure
            record.add_trace(None, "failed", {"error": message, "traceback": tb})
            record.finish(JobStatus.FAILED, message)
        elif total == 1:
            record.finish(JobStatus.COMPLETED)
        if record.finished:
            self.weights.pop(job_id, None)
            self.parked.pop(job_id, None)

    def close(self) -> None:
        self.outbound.put(None)
        self._sender.join()
        with contextlib.suppress(Exception):
            self.ray.get(self.ledger.close.remote(), timeout=30)
        self._pump.join(timeout=30)
        with contextlib.suppress(Exception):
            self.ray.kill(self.ledger)
        if self.owns_ray:
            self.ray.shutdown()


Callback = Callable[[], None]
