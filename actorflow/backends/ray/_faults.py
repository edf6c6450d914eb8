"""A fault plan inside a Ray routine actor (internal).

On Ray each routine actor applies the runtime's :class:`~actorflow.faults.FaultPlan` to the
messages it receives, before its routine cell sees them, and to its own activations: the same
:class:`~actorflow.faults.FaultInjector` the thread backend uses, with what it needs taken from
the actor. A message rule's ``ordinal`` counts the messages the actor received, and each actor
draws its own seeded sequence (the plan's seed, the worker, the routine and the actor's index
name it). What the injector logs, and the jobs whose message it lost, go to the driver with
the actor's reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from actorflow._clock import Clock
from actorflow.faults import FaultedWorker, FaultInjector, FaultPlan
from actorflow.job import JobContext, JobRecord, record_of

__all__ = ["ActorFaultServices", "ActorInjector", "actor_injector"]


class ActorFaultServices:
    """What an injector needs, in a routine actor's process.

    ``epoch`` is the wall-clock time the runtime started (``now`` is measured from it, so a
    partition's window means the same on every node); ``report`` sends one report to the
    driver from any thread.
    """

    def __init__(
        self, epoch: float, clock: Clock, timers: Any, report: Callable[[tuple[Any, ...]], None]
    ) -> None:
        self.epoch = epoch
        self.clock = clock
        self.timers = timers
        self._report = report

    @property
    def now(self) -> float:
        return time.time() - self.epoch

    def job_record(self, job_id: str) -> JobRecord | None:
        """The actor keeps no job records: a wire carries what the injector matches on."""
        return None

    def message_lost(self, job_id: str, seconds: float) -> None:
        """The driver gives the job a timeout (it keeps the job's record)."""
        self._report(("lost", job_id, seconds))


class ActorInjector(FaultInjector):
    """A routine actor's injector: a replay (a message sent again after a process died, to
    recover what it took) is recovery, not work, so no logic fault counts or hits it (the
    host lets no message rule see it either)."""

    def before_logic(self, worker: FaultedWorker, routine_id: str, job: JobContext | None) -> None:
        if job is not None and getattr(record_of(job), "replay", False):
            return
        super().before_logic(worker, routine_id, job)


def actor_injector(
    plan_blob: bytes, services: ActorFaultServices, worker_id: str, routine_id: str, index: int
) -> ActorInjector:
    """The injector of one routine actor, with random draws of its own."""
    plan: FaultPlan = cloudpickle.loads(plan_blob)
    return ActorInjector(plan, services, place=f"{worker_id}/{routine_id}/{index}")
