"""Metrics: what the engine counts, and ``Runtime.metrics()`` built from those counts.

The one home of the runtime's counters:

* :class:`HandlingCounters`, one per routine actor (the routine cell updates it on every run of
  the logic): runs that returned and that raised, retries, joins released incomplete, and a
  histogram of handling times in :data:`BUCKET_BOUNDS`;
* :func:`routine_report`, the counters of a routine's actors summed (what a backend worker
  returns for each routine, whichever process the actors live in);
* :func:`runtime_report`, the whole runtime's report: jobs by status, workers, routines, dead
  letters and timer errors (the shape ``Runtime.metrics()`` documents).

Job accounting itself (which job is active, how each ended) is the job book's; this module only
reads its counts. The Prometheus exposition of the report is in :mod:`actorflow.web`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "BUCKET_BOUNDS",
    "FIRST_BOUND",
    "HandlingCounters",
    "WorkerCounts",
    "routine_report",
    "runtime_report",
]

BUCKET_BOUNDS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
"""Upper bounds (seconds) of the handling-time histogram buckets; one more bucket is +Inf."""
FIRST_BOUND = BUCKET_BOUNDS[0]
"""The first bucket's bound: most runs fall under it, so the hot path tests it before bisecting."""
_STATUSES = ("completed", "failed", "cancelled")


class HandlingCounters:
    """One routine actor's counters. A restarted actor takes its predecessor's object, so the
    counts of a routine survive a crash."""

    __slots__ = ("buckets", "failed", "incomplete", "retried", "seconds_sum")

    def __init__(self) -> None:
        self.failed = 0  # runs of the logic that raised
        self.retried = 0  # retries scheduled (RETRY)
        self.incomplete = 0  # joins released incomplete (stalled, timed out, flushed)
        self.seconds_sum = 0.0
        self.buckets = [0] * (len(BUCKET_BOUNDS) + 1)  # every run, returned or raised

    def observe(self, elapsed: float) -> None:
        """Count one run of the logic that took ``elapsed`` seconds."""
        self.seconds_sum += elapsed
        if elapsed < FIRST_BOUND:
            self.buckets[0] += 1
        else:
            self.buckets[bisect_left(BUCKET_BOUNDS, elapsed)] += 1

    @property
    def handled(self) -> int:
        """Runs whose logic returned (every run is timed into one bucket)."""
        return sum(self.buckets) - self.failed

    def snapshot(self, queued: int) -> dict[str, Any]:
        """These counters as plain data (``queued``: data points waiting in the slots), the
        form that crosses from a Ray actor to the driver and that :func:`routine_report` sums."""
        return {
            "handled": self.handled,
            "failed": self.failed,
            "retried": self.retried,
            "queued": queued,
            "incomplete_joins": self.incomplete,
            "seconds_sum": self.seconds_sum,
            "buckets": list(self.buckets),
        }


def routine_report(snapshots: Iterable[Mapping[str, Any]], mailbox_depth: int) -> dict[str, Any]:
    """One routine's metrics: the :meth:`HandlingCounters.snapshot` of its actors, summed, with
    its mailbox depth and the handling-time histogram keyed by bucket bound."""
    labels = [str(bound) for bound in BUCKET_BOUNDS] + ["+Inf"]
    totals = {"handled": 0, "failed": 0, "retried": 0, "queued": 0, "incomplete_joins": 0}
    seconds = 0.0
    buckets = [0] * len(labels)
    for snapshot in snapshots:
        for name in totals:
            totals[name] += snapshot[name]
        seconds += snapshot["seconds_sum"]
        buckets = [a + b for a, b in zip(buckets, snapshot["buckets"], strict=True)]
    return {
        **totals,
        "mailbox_depth": mailbox_depth,
        "handling_seconds": {
            "count": totals["handled"] + totals["failed"],
            "sum": seconds,
            "buckets": dict(zip(labels, buckets, strict=True)),
        },
    }


class WorkerCounts(Protocol):
    """What :func:`runtime_report` reads of a worker (a backend worker has all of it)."""

    @property
    def worker_id(self) -> str: ...

    @property
    def flow_id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def restart_count(self) -> int: ...

    def routine_metrics(self) -> dict[str, Any]: ...


def runtime_report(
    workers: Iterable[WorkerCounts],
    *,
    active_jobs: int,
    active_by_worker: Mapping[str, int],
    finished: Mapping[tuple[str, str], int],
    dead_letters_total: int,
    dead_letters_by_reason: Mapping[str, int],
    timer_callback_errors: int,
) -> dict[str, Any]:
    """The runtime's report (see ``Runtime.metrics()``). ``finished`` counts finished jobs by
    ``(worker_id, status)``; ``active_by_worker`` the unfinished jobs of each worker."""
    totals = dict.fromkeys(_STATUSES, 0)
    worker_reports: dict[str, Any] = {}
    routines: dict[str, Any] = {}
    for worker in workers:
        worker_id = worker.worker_id
        counts = {status: finished.get((worker_id, status), 0) for status in _STATUSES}
        for status, count in counts.items():
            totals[status] += count
        worker_reports[worker_id] = {
            "flow_id": worker.flow_id,
            "status": worker.status,
            "restarts": worker.restart_count,
            "jobs": {"active": active_by_worker.get(worker_id, 0), **counts},
        }
        routines[worker_id] = worker.routine_metrics()
    return {
        "jobs": {"active": active_jobs, **totals},
        "workers": worker_reports,
        "routines": routines,
        "dead_letters": {"total": dead_letters_total, "by_reason": dict(dead_letters_by_reason)},
        "timers": {"callback_errors": timer_callback_errors},
    }
