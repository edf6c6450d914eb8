"""The seed documents' import path: ``from actorflow.core import get_current_job`` etc."""

from actorflow.flow import Flow
from actorflow.job import JobContext, JobStatus, get_current_job
from actorflow.routine import Routine
from actorflow.runtime import Runtime
from actorflow.worker import WorkerState

__all__ = [
    "Flow",
    "JobContext",
    "JobStatus",
    "Routine",
    "Runtime",
    "WorkerState",
    "get_current_job",
]
