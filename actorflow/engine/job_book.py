"""The job book: every job of a runtime, from its post to its end (internal).

It keeps the records (the unfinished ones always, the finished ones up to the retention),
counts finished jobs by worker and status (exactly, whatever the retention), holds the dead
letters, and lets a thread wait until no job is unfinished. Workers and backends of every kind
account for jobs through it; none of them needs the runtime.

A job's end is on the per-job path: :meth:`JobBook.ended` takes no lock for a completed job
(``next`` on an ``itertools.count`` and dict insertions and pops are atomic), and only a
thread waiting for idleness is woken.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actorflow.engine.dead_letters import DeadLetters
from actorflow.job import JobRecord, JobStatus

__all__ = ["JobBook"]

_COMPLETED = JobStatus.COMPLETED


def _count_of(counter: itertools.count[int]) -> int:
    """How many times ``next`` was called on ``itertools.count()`` (its repr is "count(N)";
    reading it does not advance it)."""
    return int(repr(counter)[6:-1])


class JobBook:
    """Every job of one runtime, and its dead letters."""

    def __init__(self, retention: int, dead_letter_history: int) -> None:
        self.retention = retention
        self.jobs: dict[str, JobRecord] = {}  # unfinished and retained finished, oldest first
        # Unfinished jobs. Inserting and popping are atomic dict operations, so neither a post
        # nor a finishing job takes a lock; only someone waiting for idleness uses _idle.
        self.active: dict[str, JobRecord] = {}
        self.dead_letters = DeadLetters(dead_letter_history)
        self._finished: deque[str] = deque()
        self._idle = threading.Condition(threading.Lock())
        self._idle_waiters = 0
        self._count_lock = threading.Lock()
        self._ended_counts: dict[tuple[str, Any], int] = {}  # failed and cancelled
        self._completed: dict[str, itertools.count[int]] = {}  # by worker
        # told when a job ends otherwise than completed (a backend forgets its messages)
        self.on_early_end: Callable[[JobRecord], None] | None = None

    # -- the life of a job ---------------------------------------------------------------
    def add(self, record: JobRecord) -> None:
        """A posted job (before its first message is sent)."""
        job_id = record.job_id
        self.jobs[job_id] = record
        self.active[job_id] = record

    def ended(self, record: JobRecord) -> None:
        """``record``'s job ended (its ``on_finish``): count it, keep or forget it."""
        status = record.final
        if status is _COMPLETED:
            # next() on an itertools.count is atomic under the GIL: no lock per completed job
            counter = self._completed.get(record.worker_id)
            if counter is None:
                with self._count_lock:
                    counter = self._completed.setdefault(record.worker_id, itertools.count())
            next(counter)
        else:
            if self.on_early_end is not None:
                self.on_early_end(record)
            key = (record.worker_id, status)  # a StrEnum: equal to, and hashed as, its value
            counts = self._ended_counts
            with self._count_lock:
                counts[key] = counts.get(key, 0) + 1
        finished = self._finished
        finished.append(record.job_id)
        if len(finished) > self.retention:
            jobs = self.jobs
            while len(finished) > self.retention:
                try:
                    jobs.pop(finished.popleft(), None)
                except IndexError:
                    break
        self.active.pop(record.job_id, None)
        if self._idle_waiters and not self.active:
            with self._idle:
                self._idle.notify_all()

    # -- reading -------------------------------------------------------------------------
    def record(self, job_id: str) -> JobRecord | None:
        """The record of an unfinished or retained job, else None."""
        return self.active.get(job_id) or self.jobs.get(job_id)

    def ended_unknown(self, job_id: str) -> bool:
        """True if ``job_id`` is no unfinished job: it ended (and may be forgotten)."""
        return job_id not in self.active

    def unfinished(self, worker_id: str | None = None) -> list[JobRecord]:
        """Unfinished jobs (of one worker)."""
        records = list(self.active.values())
        if worker_id is None:
            return records
        return [record for record in records if record.worker_id == worker_id]

    def counts(self) -> dict[tuple[str, Any], int]:
        """Finished jobs by (worker id, status), exact."""
        with self._count_lock:
            result = dict(self._ended_counts)
            for worker_id, counter in self._completed.items():
                result[(worker_id, _COMPLETED)] = _count_of(counter)
        return result

    def dead_letter(
        self,
        job_id: str | None,
        worker_id: str | None,
        routine_id: str | None,
        slot: str | None,
        reason: str,
    ) -> None:
        """Record a message that was not run."""
        self.dead_letters.record(job_id, worker_id, routine_id, slot, reason)

    # -- waiting -------------------------------------------------------------------------
    def wait_idle(
        self, timeout: float | None = None, deadline: Callable[[], float | None] | None = None
    ) -> bool:
        """Block until no job is unfinished; False if ``timeout`` passed first. With
        ``deadline`` (a function giving a monotonic time or None), wait until then, reading
        it again whenever :meth:`wake` is called."""
        with self._idle:
            self._idle_waiters += 1
            try:
                if deadline is None:
                    return self._idle.wait_for(lambda: not self.active, timeout)
                while self.active:
                    until = deadline()
                    if until is None:
                        self._idle.wait()
                        continue
                    remaining = until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._idle.wait(remaining)
                return not self.active
            finally:
                self._idle_waiters -= 1

    def wake(self) -> None:
        """Wake the threads in :meth:`wait_idle` (a deadline they read changed)."""
        with self._idle:
            self._idle.notify_all()
