"""A job's record inside a Ray routine actor (internal).

The routine cell accounts for a job by counting: a handled message is *done*, a message it
emits is *added* in flight (see ``JobRecord``). Between processes counts cannot be used, since
reports from different actors reach the driver in any order; Ray jobs are accounted for by
*weight* instead. A posted message carries weight 1. A :class:`RemoteRecord` is the record of
one delivered message (its weight) as the cell sees it: the cell's counting calls are turned
into shares of that weight: when what the cell did with the message is settled (every unit it
counted is either a child message or done), each child gets ``weight / units`` and the done
units' share goes back to the driver. A job is complete when all its weight has come back.

What the logic wrote to the job (data, trace, errors) and how the job ended here (failed,
cancelled) are collected in the record and reported to the driver by the host.
"""

from __future__ import annotations

import threading
import traceback as _traceback
from collections.abc import Callable
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Protocol

from actorflow._clock import Clock, iso_timestamp
from actorflow.backends.ray._wire import JobHeader
from actorflow.engine.envelope import Envelope
from actorflow.job import JobRecord, JobStatus

__all__ = ["RemoteJob", "RemoteRecord", "new_remote_record"]


class RecordHost(Protocol):
    """What a remote record tells the routine actor that hosts it."""

    def touched(self, record: RemoteRecord) -> None: ...
    def settled(
        self, record: RemoteRecord, children: list[tuple[Envelope, Fraction]], returned: Fraction
    ) -> None: ...
    def parked(self, record: RemoteRecord) -> None: ...


class RemoteJob:
    """What one routine actor knows of a job: whether it ended (here, or the driver said so).

    ``lock`` is the host's lock for its jobs: the driver's word that a job ended can arrive on
    another thread than the one the cell runs on."""

    __slots__ = ("ended", "header", "last", "listeners", "lock", "stalled", "status")

    def __init__(self, header: JobHeader, lock: threading.Lock) -> None:
        self.header = header
        self.lock = lock
        self.ended = False
        self.status = JobStatus.RUNNING
        self.stalled = False  # the driver saw nothing else of it in flight (a join check)
        self.last: RemoteRecord | None = None  # a record of it, for the cell's join checks
        self.listeners: list[Callable[[], None]] | None = None  # told once it ends

    def end(self, status: JobStatus) -> None:
        """The job ended with ``status``: mark it, then tell its listeners (once)."""
        with self.lock:
            self.ended = True
            self.status = status
            listeners, self.listeners = self.listeners, None
        for listener in listeners or ():
            listener()

    def listen(self, listener: Callable[[], None]) -> bool:
        """Call ``listener`` once the job ends; False (and no call) if it already has."""
        with self.lock:
            if self.ended:
                return False
            if self.listeners is None:
                self.listeners = []
            self.listeners.append(listener)
            return True


class RemoteRecord(JobRecord):
    """The record of one delivered message of a job, inside a Ray routine actor."""

    __slots__ = (
        "calls",
        "children",
        "done",
        "envelope_id",
        "errors_out",
        "failure",
        "host",
        "job",
        "merges",
        "partials",
        "replay",
        "trace_out",
        "units",
        "weight",
    )

    envelope_id: str
    weight: Fraction  # this message's weight, until it is settled
    units: int  # what the cell counts in flight for it (1, plus the messages it added)
    children: list[Envelope]  # sent, waiting for their share of the weight
    done: int  # units the cell counted done
    job: RemoteJob
    host: RecordHost
    merges: list[tuple[Any, Any, int]]
    trace_out: list[dict[str, Any]]
    errors_out: list[dict[str, Any]]
    failure: tuple[str, str] | None  # (error, traceback) when the job failed here
    partials: int  # reports sent for it before it settled
    calls: int  # WorkerState calls made for it (their ordinal makes an idempotent call id)
    replay: bool  # a message sent again after a process died: so are the messages it causes

    @property
    def finished(self) -> bool:
        return self.job.ended

    @finished.setter
    def finished(self, value: bool) -> None:
        self.job.ended = value

    @property
    def status(self) -> JobStatus:
        return self.job.status

    # -- accounting: counts turned into weight --------------------------------------------
    def add_inflight(self, count: int) -> None:
        self.units += count

    def message_done(self, count: int = 1) -> None:
        self.done += count
        self._settle()

    def send(self, envelope: Envelope) -> None:
        """A message the cell sent for this job (its weight is given once settled)."""
        self.children.append(envelope)
        self._settle()

    def _settle(self) -> None:
        units = self.units
        if units <= 0 or len(self.children) + self.done != units:
            return
        share = self.weight / units
        children = [(child, share) for child in self.children]
        returned = share * self.done
        self.units = self.done = 0
        self.children = []
        self.weight = Fraction(0)
        self.host.settled(self, children, returned)

    # -- how the job ends here --------------------------------------------------------------
    def finish(self, status: JobStatus, error: str | None = None) -> bool:
        job = self.job
        if job.ended:
            return False
        if error is not None:
            self.error = error
        job.end(status)
        self.host.touched(self)
        return True

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the job ends here or the driver says it ended (the task of
        async logic running for it is then cancelled); at once if it already has."""
        if not self.job.listen(callback):
            callback()

    def fail(
        self, exc: BaseException, routine_id: str | None, action: str = "failed", suffix: str = ""
    ) -> bool:
        if self.job.ended:
            return False
        message = f"{type(exc).__name__}: {exc}{suffix}"
        trace = "".join(_traceback.format_exception(exc))
        self.add_trace(routine_id, action, {"error": message, "traceback": trace})
        self.failure = (message, trace)
        return self.finish(JobStatus.FAILED, message)

    def record_error(self, routine_id: str | None, exc: BaseException, handled_as: str) -> None:
        entry = {
            "routine_id": routine_id,
            "error": f"{type(exc).__name__}: {exc}",
            "handled_as": handled_as,
        }
        self.errors_out.append(entry)
        self.add_trace(routine_id, handled_as, entry)

    # -- data and trace ------------------------------------------------------------------
    def merge(self, key: Any, value: Any, depth: int) -> None:
        self.merges.append((key, value, depth))
        self.host.touched(self)

    def add_trace(self, routine_id: str | None, action: str, details: Any = None) -> None:
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
        self.trace_out.extend(entries)
        self.host.touched(self)

    # -- joins: the driver sees the whole job and decides -----------------------------------
    def park(self, watcher: Callable[[JobRecord], None]) -> bool | None:
        if self.job.ended:
            return None
        self.host.parked(self)
        return False

    def unpark(self, count: int = 1) -> None:
        """Nothing to do: the weight coming back tells the driver."""

    @property
    def stalled(self) -> bool:
        return not self.job.ended and self.job.stalled

    def take_report(
        self,
    ) -> tuple[list[Any], list[Any], list[Any], tuple[str, str] | None, list[Any]]:
        """What was written since the last report: (merges, trace, errors, failure, and the
        handling steps with their start as epoch seconds)."""
        out = (self.merges, self.trace_out, self.errors_out, self.failure, self.wall_steps())
        self.merges, self.trace_out, self.errors_out, self.failure = [], [], [], None
        self.steps = []
        return out


def new_remote_record(
    host: RecordHost, job: RemoteJob, envelope_id: str, weight: Fraction, clock: Clock
) -> RemoteRecord:
    """The record of one delivered message of ``job``, carrying ``weight``."""
    header = job.header
    record = RemoteRecord()
    record.job_id = header.job_id
    record.flow_id = header.flow_id
    record.worker_id = header.worker_id
    record.metadata = MappingProxyType(header.metadata)
    record.clock = clock
    record.created_at = header.created_at
    record.completed_at = None
    record.started = True
    record.error = None
    record.errors = None
    record.data = {}
    record.envelope_id = envelope_id
    record.weight = weight
    record.units = 1
    record.children = []
    record.done = 0
    record.job = job
    record.host = host
    record.merges = []
    record.trace_out = []
    record.steps = []
    record.errors_out = []
    record.failure = None
    record.partials = 0
    record.calls = 0
    record.replay = False
    job.last = record
    return record
