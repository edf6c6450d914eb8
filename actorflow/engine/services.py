"""What every worker of a runtime shares (internal): the job book, the clock and timers, the
runtime's settings for state and messages, and the middleware around envelopes (a fault plan's
injector, probes, tracing). The runtime makes one; workers and backends of every kind get it,
so none of them needs the runtime itself."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from actorflow._clock import Clock
from actorflow.engine.job_book import JobBook
from actorflow.errors import JobTimeoutError
from actorflow.job import JobRecord
from actorflow.state_limits import StateLimits

__all__ = ["WorkerServices"]


@dataclass
class WorkerServices:
    """The shared parts of a runtime, as its workers see them."""

    book: JobBook
    clock: Clock
    timers: Any  # TimerService, or VirtualTimers in deterministic mode
    strict: bool
    started_at: float  # the clock's monotonic time when the runtime started
    dispatcher: Any = None  # how actors run (None: threads); see actorflow.engine.dispatch
    state_store: Any = None
    state_serializer: Any = None
    state_limits: StateLimits | None = None
    lease_owner: str = ""
    lease_seconds: float = 15.0
    injector: Any = None  # a fault plan's injector
    recorder: Any = None  # a Recorder (Runtime(record=...)), or None
    tracing: Any = None
    probes: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    @property
    def now(self) -> float:
        """Seconds since the runtime started (virtual time in deterministic mode)."""
        return self.clock.monotonic() - self.started_at

    def job_record(self, job_id: str) -> JobRecord | None:
        """The record of a job of this runtime (None once it is no longer retained)."""
        return self.book.record(job_id)

    def message_lost(self, job_id: str, seconds: float) -> None:
        """A fault lost a message of the job: unless it ended or has a timeout, it fails
        after ``seconds`` (its accounting waits for a message that never comes)."""
        record = self.book.record(job_id)
        if (
            record is not None
            and not record.finished
            and not getattr(record, "timeout_armed", False)  # set when a timeout is armed
        ):
            self.arm_timeout(record, seconds)

    def arm_timeout(self, record: JobRecord, seconds: float) -> None:
        """Fail ``record``'s job with ``JobTimeoutError`` if it has not ended in ``seconds``."""
        record.timeout_armed = True
        ref = weakref.ref(record)

        def expire() -> None:
            rec = ref()
            if rec is not None and not rec.finished:
                rec.fail(
                    JobTimeoutError(f"job {rec.job_id!r} timed out after {seconds:g} s"),
                    None,
                    "timed out",
                )

        self.timers.call_at(self.clock.monotonic() + seconds, expire)
