"""What a routine actor does with each message (internal).

A cell is the per-actor half of a routine: its slot queues, its bound activation policy, the
logic call and the emits. It does not know how messages reach it (a pykka actor thread today,
a deterministic scheduler or a Ray actor elsewhere): the host calls :meth:`RoutineCell.handle`.

The hot path (immediate policy) per message: skip finished jobs, mark the job running, call the
logic with the message's job as the current job, route each emit to the connected mailboxes
(counting the new messages on the job first), then count this message as handled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from actorflow._envelope import Envelope, Tick, seal, unseal
from actorflow.activation_policies import QueuedItem, Release, _Immediate
from actorflow.job import CURRENT_ACTIVATION, JobContext, JobRecord, JobStatus
from actorflow.worker import WorkerState

if TYPE_CHECKING:
    from actorflow._worker import WorkerCore
    from actorflow.routine import Routine

__all__ = ["Flush", "RoutineCell"]

Send = Callable[[Any], None]


class Flush:
    """Release everything queued and treat later arrivals as immediate (shutdown drain)."""

    __slots__ = ()
    reply_to = None

    @property
    def message(self) -> Flush:
        return self


FLUSH = Flush()


class RoutineCell:
    """One actor's worth of a routine inside one worker."""

    def __init__(
        self, core: WorkerCore, routine_id: str, routine: Routine, send_self: Send
    ) -> None:
        self.core = core
        self.routine_id = routine_id
        self.routine = routine
        logic = routine.get_logic()
        assert logic is not None  # checked by Flow.validate
        self.logic = logic
        self.state = WorkerState(core, routine_id)
        self.events = frozenset(routine._events)
        self.slot_names = tuple(routine._slots)
        self.single_slot = len(self.slot_names) == 1
        self.immediate = isinstance(routine.activation_policy, _Immediate)
        self.policy = routine.activation_policy.bind()
        self.queues: dict[str, deque[QueuedItem]] = {name: deque() for name in self.slot_names}
        self.max_queue = {name: spec.max_queue_length for name, spec in routine._slots.items()}
        self.routes: dict[str, list[tuple[str, str, Send]]] = {}
        self.send_self = send_self
        self.current_job: JobContext | None = None
        self.draining = False
        self._timer_at: float | None = None
        self._clock = core.clock
        self._strict = core.strict
        self._log = logger.bind(worker=core.worker_id, routine=routine_id)

    # -- lifecycle (on the actor's thread) ---------------------------------------------
    def started(self) -> None:
        CURRENT_ACTIVATION.set(self)
        self.routine.on_start()

    def stopped(self) -> None:
        self.cancel_queued("routine stopped")
        self.routine.on_stop()

    # -- messages ----------------------------------------------------------------------
    def handle(self, envelope: Any) -> None:
        if type(envelope) is not Envelope:
            self._control(envelope)
            return
        job = envelope.job
        payload = envelope.payload
        if envelope.blob is not None:
            payload, job = unseal(envelope)
            job = self.core.reattach(job)
        rec: JobRecord = job._rec
        if rec.finished:
            self.core.dead_letter(rec.job_id, self.routine_id, envelope.slot, f"job {rec.status}")
            return
        if rec.status is JobStatus.PENDING:
            rec.mark_running()
        if self.immediate or self.draining:
            if self.single_slot:
                slot_data = {envelope.slot: [payload]}
            else:
                slot_data = {name: [] for name in self.slot_names}
                slot_data[envelope.slot] = [payload]
            self._run(slot_data, None, job, (rec,))
            return
        now = self._clock.monotonic()
        self.queues[envelope.slot].append(QueuedItem(payload, job, now))
        self._apply(self.policy.on_message(self.queues, envelope.slot, now), now)

    def _control(self, message: Any) -> None:
        if type(message) is Tick:
            if self._timer_at == message.deadline:
                self._timer_at = None
            now = self._clock.monotonic()
            self._apply(self.policy.on_timer(self.queues, now), now)
        elif type(message) is Flush:
            self.draining = True
            counts = {name: len(q) for name, q in self.queues.items() if q}
            if counts:
                self._release(Release(counts, {"reason": "flush"}), self._clock.monotonic())

    def _apply(self, release: Release | None, now: float) -> None:
        if release is not None:
            self._release(release, now)
        deadline = self.policy.next_deadline(self.queues, now)
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._timer_at = deadline
            send_self = self.send_self
            self.core.timers.call_at(deadline, lambda: send_self(Tick(deadline)))

    def _release(self, release: Release, now: float) -> None:
        slot_data: dict[str, list[Any]] = {name: [] for name in self.slot_names}
        records: list[JobRecord] = []
        newest: QueuedItem | None = None
        for name, count in release.counts.items():
            queue = self.queues[name]
            taken = slot_data[name]
            for _ in range(count):
                item = queue.popleft()
                rec = item.job._rec
                if rec.finished:
                    self.core.dead_letter(rec.job_id, self.routine_id, name, f"job {rec.status}")
                    continue
                taken.append(item.data)
                records.append(rec)
                if newest is None or item.arrived_at >= newest.arrived_at:
                    newest = item
        if newest is None:
            return
        self.policy.released(now)
        self._run(slot_data, release.message, newest.job, records)

    # -- running the logic -------------------------------------------------------------
    def _run(
        self,
        slot_data: dict[str, list[Any]],
        message: Any,
        job: JobContext,
        records: tuple[JobRecord, ...] | list[JobRecord],
    ) -> None:
        self.current_job = job
        try:
            self.logic(slot_data, message, self.state)
        except Exception as exc:
            self.current_job = None
            self._failed(exc, records)
            return
        self.current_job = None
        for rec in records:
            rec.message_done()

    def _failed(self, exc: Exception, records: tuple[JobRecord, ...] | list[JobRecord]) -> None:
        for rec in records:
            if rec.fail(exc, self.routine_id):
                self._log.bind(job=rec.job_id).opt(exception=exc).info(
                    "job {} failed in routine {}", rec.job_id, self.routine_id
                )

    def emit_for(self, routine: Routine, event: str, data: dict[str, Any]) -> None:
        """``Routine.emit`` lands here: route ``data`` to every connected slot."""
        if routine is not self.routine:
            raise RuntimeError(
                f"{routine!r}.emit({event!r}) called from the logic of routine "
                f"{self.routine_id!r}: a routine can only emit its own events"
            )
        job = self.current_job
        if job is None:
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
            return
        job._rec.add_inflight(len(targets))
        if self._strict:
            where = f"routine {self.routine_id!r} event {event!r}"
            for target, slot, send in targets:
                send(seal(target, slot, data, job._child(), where))
            return
        for target, slot, send in targets:
            send(Envelope(target, slot, data, job._child()))

    # -- shutdown ----------------------------------------------------------------------
    def cancel_queued(self, reason: str) -> None:
        """End the jobs of data still waiting in the slot queues (cancelled)."""
        for name, queue in self.queues.items():
            while queue:
                rec = queue.popleft().job._rec
                self.core.dead_letter(rec.job_id, self.routine_id, name, reason)
                rec.finish(JobStatus.CANCELLED, f"cancelled: {reason}")
